// Package loadgen is the open-loop HTTP load generator of the rolling-restart
// proofs: test/e2e drives it through HAProxy, test/kube through a Kubernetes
// Service. Requests go out on a fixed schedule whatever the latency of
// earlier ones, so a stalled backend shows up as failures and latency rather
// than as a lower request rate, and every scheduled request gets exactly one
// outcome.
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kind is one of the request shapes in the mix.
type Kind uint8

// The request shapes.
const (
	Root Kind = iota // GET /
	Echo             // POST /echo with a body
	Slow             // GET /slow?d=..., in flight across SIGTERM
)

// Result is the outcome of one request. Zero-valued slots mean "never sent",
// which the summary reports.
type Result struct {
	Kind    Kind
	Sent    bool
	Status  int
	Fail    string        // "" when the request succeeded; else a failure kind
	Latency time.Duration // from the scheduled send time (open loop: queueing counts)
	DoneAt  time.Time     // when the outcome was known
	Pod     string        // the instance a GET / answer named ("" for other kinds)
	// H2Retried: over HTTP/2, Go's Transport sent the request again on
	// another stream and the retry succeeded (see Load.do); not a failure.
	H2Retried bool
	// Fresh: sent on a connection of its own (Config.FreshEvery).
	Fresh bool
}

// Failure kinds. A request fails when it gets no response (transport error,
// classified), a non-200 status, a wrong body, or when Go's Transport retried
// it behind the harness's back.
const (
	FailRefused  = "refused"
	FailReset    = "reset"
	FailEOF      = "eof"
	FailTimeout  = "timeout"
	FailH2Stream = "h2_stream_error"
	FailOther    = "other"
	FailBadBody  = "bad_body"
	FailRetried  = "client_retry"
	FailNotSent  = "not_sent"
	FailStatus5x = "http_5xx"
	FailStatusXX = "http_other"
)

// FailKinds lists every failure kind, in report order.
var FailKinds = []string{FailRefused, FailReset, FailEOF, FailTimeout, FailH2Stream, FailOther, FailStatus5x, FailStatusXX, FailBadBody, FailRetried, FailNotSent}

// Config describes one open-loop run.
type Config struct {
	URL       string        // frontend base URL, without a trailing slash
	Rate      int           // requests per second, fixed (open loop)
	Total     int           // requests in all
	Conns     int           // keep-alive connection pool size (HTTP/1.1), or HTTP/2 connections
	H2        bool          // HTTP/2 with prior knowledge (h2c), multiplexed
	Timeout   time.Duration // per request
	SlowMax   time.Duration // /slow durations spread over [SlowMax/10, SlowMax]
	SlowEvery int           // one request in SlowEvery is /slow
	EchoEvery int           // one in EchoEvery is POST /echo
	// FreshEvery, if positive, sends one request in FreshEvery (HTTP/1.1
	// only) on a new connection of its own, closed after the response: a
	// client that connects anew every time. Through a Service each such
	// connection is routed anew, so these requests meet a routing change as
	// soon as it happens; pooled connections meet it only when the pool
	// next dials, which a pool with idle connections rarely needs to do.
	FreshEvery int
	Debug      bool // print bad bodies and the worst latency of each second to standard error
}

// Load is one open-loop run. Create it with New, start it with Run.
type Load struct {
	cfg      Config
	clients  []*http.Client // request i uses clients[i%len(clients)]
	fresh    *http.Client   // no keep-alive: Config.FreshEvery
	results  []Result
	start    time.Time
	launched atomic.Int64
	done     atomic.Int64
	inflight atomic.Int64
	finished chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	body     []byte
	frames   *H2Frames
}

// New returns a load for cfg; nothing is sent before Run.
func New(cfg Config) *Load {
	dialer := &net.Dialer{Timeout: time.Second}
	tr := &http.Transport{
		// A fixed pool of keep-alive connections, like a real client
		// population behind one load balancer.
		MaxIdleConns:        cfg.Conns,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxConnsPerHost:     cfg.Conns,
		IdleConnTimeout:     60 * time.Second,
		DialContext:         dialer.DialContext,
		ForceAttemptHTTP2:   false,
	}
	clients := []*http.Client{{Transport: tr, Timeout: cfg.Timeout}}
	fresh := &http.Client{Timeout: cfg.Timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       dialer.DialContext,
	}}
	frames := &H2Frames{}
	if cfg.H2 {
		// One Transport per connection: Go's HTTP/2 Transport multiplexes
		// every request to a host on one connection (it opens another only
		// when the peer's stream limit is reached), so cfg.Conns transports
		// give cfg.Conns multiplexed connections.
		clients = nil
		for range cfg.Conns {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			h2 := &http.Transport{
				Protocols:       &p,
				IdleConnTimeout: 60 * time.Second,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := dialer.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return &sniffConn{Conn: c, f: frames}, nil
				},
			}
			clients = append(clients, &http.Client{Transport: h2, Timeout: cfg.Timeout})
		}
	}
	return &Load{
		cfg:      cfg,
		clients:  clients,
		fresh:    fresh,
		frames:   frames,
		results:  make([]Result, cfg.Total),
		finished: make(chan struct{}),
		stopped:  make(chan struct{}),
		body:     bytes.Repeat([]byte("kubeskel-"), 113), // ~1 KiB
	}
}

// Run launches the requests on schedule and returns when every launched one
// has an outcome: after the last, when ctx is done (the rest are "not_sent"),
// or after Stop (the rest are dropped from the results). It closes Finished
// on return.
func (l *Load) Run(ctx context.Context) {
	defer close(l.finished)
	l.start = time.Now()
	interval := time.Second / time.Duration(l.cfg.Rate)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	next := 0
	for next < l.cfg.Total {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-l.stopped:
			wg.Wait()
			l.results = l.results[:next]
			return
		case <-tick.C:
		}
		// Launch everything due by now; a late tick launches a burst, which
		// keeps the average rate exact.
		due := min(int(time.Since(l.start)/interval)+1, l.cfg.Total)
		for ; next < due; next++ {
			wg.Add(1)
			l.launched.Add(1)
			go func(i int, at time.Time) {
				defer wg.Done()
				l.inflight.Add(1)
				l.results[i] = l.do(i, at)
				l.inflight.Add(-1)
				l.done.Add(1)
			}(next, l.start.Add(time.Duration(next)*interval))
		}
	}
	wg.Wait()
}

// Stop ends the schedule early: Run launches nothing more, waits for the
// requests in flight and keeps only the results of those launched. Safe to
// call more than once.
func (l *Load) Stop() { l.stopOnce.Do(func() { close(l.stopped) }) }

// Finished is closed when Run has returned.
func (l *Load) Finished() <-chan struct{} { return l.finished }

// Started is when Run began the schedule (zero before).
func (l *Load) Started() time.Time { return l.start }

// Done is the number of requests with an outcome so far.
func (l *Load) Done() int64 { return l.done.Load() }

// InFlight is the number of requests sent and not yet answered.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// Frames are the HTTP/2 frames received that can make Go's Transport retry
// (zero unless Config.H2).
func (l *Load) Frames() *H2Frames { return l.frames }

// Remaining is the scheduled time left until the last request is launched.
func (l *Load) Remaining() time.Duration {
	end := l.start.Add(time.Duration(l.cfg.Total) * (time.Second / time.Duration(l.cfg.Rate)))
	return time.Until(end)
}

func (l *Load) do(i int, scheduled time.Time) Result {
	r := Result{Kind: Root, Sent: true}
	var req *http.Request
	var err error
	switch {
	case i%l.cfg.SlowEvery == 0:
		r.Kind = Slow
		// Deterministic spread of durations so some request is always in
		// flight when a SIGTERM arrives.
		d := l.cfg.SlowMax/10 + time.Duration(i/l.cfg.SlowEvery%10)*l.cfg.SlowMax/10
		req, err = http.NewRequestWithContext(context.Background(), http.MethodGet, l.cfg.URL+"/slow?d="+d.String(), nil)
	case i%l.cfg.EchoEvery == 1:
		r.Kind = Echo
		req, err = http.NewRequestWithContext(context.Background(), http.MethodPost, l.cfg.URL+"/echo", bytes.NewReader(l.body))
		// NewRequest sets GetBody for a bytes.Reader, which lets the Transport
		// replay the POST on a reused connection that failed before anything
		// was written. Clear it: a POST must never be retried silently.
		// Over HTTP/2 keep it: Go's HTTP/2 Transport replays a request only
		// when the peer said it was not processed (see H2Retried).
		if err == nil && !l.cfg.H2 {
			req.GetBody = nil
		}
	default:
		req, err = http.NewRequestWithContext(context.Background(), http.MethodGet, l.cfg.URL+"/", nil)
	}
	if err != nil {
		panic(err) // a bug in the harness, not an outcome
	}
	// Go's Transport transparently retries idempotent requests (GET) once on
	// a reused connection that the peer closed (errServerClosedIdle and
	// similar; see net/http.(*persistConn).shouldRetryRequest). Such a retry
	// would hide exactly the failure the proofs look for, so count the
	// connections each request obtained: more than one means a retry.
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), trace))

	client := l.clients[i%len(l.clients)]
	if n := l.cfg.FreshEvery; n > 0 && !l.cfg.H2 && i%n == n-1 {
		client, r.Fresh = l.fresh, true
	}
	resp, err := client.Do(req)
	if err != nil {
		r.DoneAt = time.Now()
		r.Latency = r.DoneAt.Sub(scheduled)
		r.Fail = classify(err)
		return r
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.DoneAt = time.Now()
	r.Latency = r.DoneAt.Sub(scheduled)
	r.Status = resp.StatusCode
	if r.Kind == Root && err == nil {
		// "kubeskel <version> on <pod>\n": which instance served it.
		if _, host, ok := strings.Cut(string(got), " on "); ok {
			r.Pod = strings.TrimSpace(host)
		}
	}
	switch {
	case err != nil:
		r.Fail = classify(err)
	case resp.StatusCode >= 500:
		r.Fail = FailStatus5x
	case resp.StatusCode != http.StatusOK:
		r.Fail = FailStatusXX
	case r.Kind == Echo && !bytes.Equal(got, l.body):
		r.Fail = FailBadBody
		if l.cfg.Debug {
			fmt.Fprintf(os.Stderr, "bad body %d %q\n", len(got), got[:min(len(got), 80)])
		}
	case conns.Load() > 1 && l.cfg.H2:
		// The one loosening of the HTTP/2 models. net/http's HTTP/2 server
		// sends a single GOAWAY (not the two RFC 9113 §6.8 suggests), so a
		// stream HAProxy opens on that connection while the GOAWAY is on
		// its way is not processed; HAProxy (retries 0) answers the client
		// with RST_STREAM REFUSED_STREAM. Go's HTTP/2 Transport retries a
		// request on its own only when the peer said it was not processed
		// (REFUSED_STREAM, a GOAWAY below its stream id), when the
		// connection could not be used before the request was sent, or on
		// a PROTOCOL_ERROR from the peer (http2canRetryError). The frame
		// counts (H2Frames) show which: test/e2e fails on any RST_STREAM
		// other than REFUSED_STREAM. Such a request never reached a
		// handler; it is counted and reported, not failed.
		r.H2Retried = true
	case conns.Load() > 1:
		r.Fail = FailRetried
	}
	return r
}

// classify maps a client error to a failure kind.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return FailRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return FailReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FailEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return FailTimeout
	case strings.Contains(err.Error(), "server closed idle connection"):
		return FailEOF
	case strings.Contains(err.Error(), "stream error"):
		return FailH2Stream // RST_STREAM from HAProxy (http2.StreamError)
	}
	return FailOther
}

// LastServed returns, per instance, when the last successful GET / that it
// answered completed. Call it after Finished.
func (l *Load) LastServed() map[string]time.Time {
	last := map[string]time.Time{}
	for _, r := range l.results {
		if r.Pod != "" && r.Fail == "" && r.DoneAt.After(last[r.Pod]) {
			last[r.Pod] = r.DoneAt
		}
	}
	return last
}

// Summary aggregates the results.
type Summary struct {
	Requests int
	H2Retry  int // HTTP/2 requests Go's client retried after the peer refused the stream (not failures)
	// Fresh and FreshFailed count the requests sent on connections of
	// their own (Config.FreshEvery), and those of them that failed.
	Fresh, FreshFailed int
	Failures           map[string]int
	ByStatus           map[int]int
	P50, P99           time.Duration // requests other than /slow
	SlowP99            time.Duration
	Max                time.Duration
}

// Summarize aggregates the results. Call it after Finished.
func (l *Load) Summarize() Summary {
	s := Summary{Requests: len(l.results), Failures: map[string]int{}, ByStatus: map[int]int{}}
	var fast, slow []time.Duration
	for _, r := range l.results {
		if !r.Sent {
			s.Failures[FailNotSent]++
			continue
		}
		if r.H2Retried {
			s.H2Retry++
		}
		if r.Fresh {
			s.Fresh++
			if r.Fail != "" {
				s.FreshFailed++
			}
		}
		if r.Fail != "" {
			s.Failures[r.Fail]++
			if r.Status != 0 {
				s.ByStatus[r.Status]++
			}
		}
		if r.Kind == Slow {
			slow = append(slow, r.Latency)
		} else {
			fast = append(fast, r.Latency)
		}
		s.Max = max(s.Max, r.Latency)
	}
	if l.cfg.Debug {
		// Per-second worst latency of fast requests, to see when tails happen.
		interval := time.Second / time.Duration(l.cfg.Rate)
		for sec := 0; sec*l.cfg.Rate < len(l.results); sec++ {
			var worst time.Duration
			for i := sec * l.cfg.Rate; i < min(len(l.results), (sec+1)*l.cfg.Rate); i++ {
				if l.results[i].Kind != Slow {
					worst = max(worst, l.results[i].Latency)
				}
			}
			fmt.Fprintf(os.Stderr, "t=%v worst=%v\n", time.Duration(sec*l.cfg.Rate)*interval, worst)
		}
	}
	s.P50, s.P99 = Percentile(fast, 50), Percentile(fast, 99)
	s.SlowP99 = Percentile(slow, 99)
	return s
}

// Failed is the number of failed requests.
func (s Summary) Failed() int {
	n := 0
	for _, v := range s.Failures {
		n += v
	}
	return n
}

// FailureLine is the failures by kind on one line, for reports.
func (s Summary) FailureLine() string {
	var b strings.Builder
	for _, k := range FailKinds {
		fmt.Fprintf(&b, "%s=%d ", k, s.Failures[k])
	}
	if len(s.ByStatus) > 0 {
		fmt.Fprintf(&b, "statuses=%v", s.ByStatus)
	}
	return strings.TrimSpace(b.String())
}

// Percentile is the p-th percentile of d (sorting d in place); 0 when empty.
func Percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)-1)*p/100]
}
