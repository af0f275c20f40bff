//go:build e2e

package e2e

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

// reqKind is one of the request shapes in the mix.
type reqKind uint8

const (
	kindRoot reqKind = iota // GET /
	kindEcho                // POST /echo with a body
	kindSlow                // GET /slow?d=..., in flight across SIGTERM
)

// result is the outcome of one request. Every scheduled request gets exactly
// one; zero-valued slots mean "never sent", which the summary reports.
type result struct {
	kind    reqKind
	sent    bool
	status  int
	fail    string        // "" when the request succeeded; else a failure kind
	latency time.Duration // from the scheduled send time (open loop: queueing counts)
	// h2Retried: over HTTP/2, Go's Transport sent the request again on
	// another stream and the retry succeeded (see load.do); not a failure.
	h2Retried bool
}

// Failure kinds. A request fails when it gets no response (transport error,
// classified), a non-200 status, a wrong body, or when Go's Transport retried
// it behind our back.
const (
	failRefused  = "refused"
	failReset    = "reset"
	failEOF      = "eof"
	failTimeout  = "timeout"
	failH2Stream = "h2_stream_error"
	failOther    = "other"
	failBadBody  = "bad_body"
	failRetried  = "client_retry"
	failNotSent  = "not_sent"
	failStatus5x = "http_5xx"
	failStatusXX = "http_other"
)

var failKinds = []string{failRefused, failReset, failEOF, failTimeout, failH2Stream, failOther, failStatus5x, failStatusXX, failBadBody, failRetried, failNotSent}

// loadConfig describes one open-loop run.
type loadConfig struct {
	URL      string        // frontend base URL
	Rate     int           // requests per second, fixed (open loop)
	Total    int           // requests in all
	Conns    int           // keep-alive connection pool size (HTTP/1.1), or HTTP/2 connections
	H2       bool          // HTTP/2 with prior knowledge (h2c), multiplexed
	Timeout  time.Duration // per request
	SlowMax  time.Duration // /slow durations spread over [SlowMax/10, SlowMax]
	SlowEvry int           // one request in SlowEvry is /slow
	EchoEvry int           // one in EchoEvry is POST /echo
}

// load is an open-loop generator: requests are launched on a fixed schedule
// whatever the latency of earlier ones, so a stalled backend shows up as
// failures and latency rather than as a lower request rate.
type load struct {
	cfg      loadConfig
	clients  []*http.Client // request i uses clients[i%len(clients)]
	results  []result
	start    time.Time
	launched atomic.Int64
	done     atomic.Int64
	inflight atomic.Int64
	finished chan struct{}
	body     []byte
	frames   *h2Frames // with H2: what HAProxy sent that can cause a retry
}

func newLoad(cfg loadConfig) *load {
	tr := &http.Transport{
		// A fixed pool of keep-alive connections, like a real client
		// population behind one LB.
		MaxIdleConns:        cfg.Conns,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxConnsPerHost:     cfg.Conns,
		IdleConnTimeout:     60 * time.Second,
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		ForceAttemptHTTP2:   false,
	}
	clients := []*http.Client{{Transport: tr, Timeout: cfg.Timeout}}
	frames := &h2Frames{}
	if cfg.H2 {
		// One Transport per connection: Go's HTTP/2 Transport multiplexes
		// every request to a host on one connection (it opens another only
		// when the peer's stream limit is reached), so cfg.Conns transports
		// give cfg.Conns multiplexed connections.
		clients = nil
		for range cfg.Conns {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			d := &net.Dialer{Timeout: time.Second}
			h2 := &http.Transport{
				Protocols:       &p,
				IdleConnTimeout: 60 * time.Second,
				DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
					c, err := d.DialContext(ctx, network, addr)
					if err != nil {
						return nil, err
					}
					return &sniffConn{Conn: c, f: frames}, nil
				},
			}
			clients = append(clients, &http.Client{Transport: h2, Timeout: cfg.Timeout})
		}
	}
	body := bytes.Repeat([]byte("kubeskel-"), 113) // ~1 KiB
	return &load{
		cfg:      cfg,
		clients:  clients,
		frames:   frames,
		results:  make([]result, cfg.Total),
		finished: make(chan struct{}),
		body:     body,
	}
}

// run launches all requests on schedule and returns when every one has an
// outcome or ctx is done (then the rest are "not_sent").
func (l *load) run(ctx context.Context) {
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

// remaining is the scheduled time left until the last request is launched.
func (l *load) remaining() time.Duration {
	end := l.start.Add(time.Duration(l.cfg.Total) * (time.Second / time.Duration(l.cfg.Rate)))
	return time.Until(end)
}

func (l *load) do(i int, scheduled time.Time) result {
	r := result{kind: kindRoot, sent: true}
	var req *http.Request
	var err error
	switch {
	case i%l.cfg.SlowEvry == 0:
		r.kind = kindSlow
		// Deterministic spread of durations so some request is always in
		// flight when a SIGTERM arrives.
		d := l.cfg.SlowMax/10 + time.Duration(i/l.cfg.SlowEvry%10)*l.cfg.SlowMax/10
		req, err = http.NewRequestWithContext(context.Background(), http.MethodGet, l.cfg.URL+"/slow?d="+d.String(), nil)
	case i%l.cfg.EchoEvry == 1:
		r.kind = kindEcho
		req, err = http.NewRequestWithContext(context.Background(), http.MethodPost, l.cfg.URL+"/echo", bytes.NewReader(l.body))
		// NewRequest sets GetBody for a bytes.Reader, which lets the Transport
		// replay the POST on a reused connection that failed before anything
		// was written. Clear it: a POST must never be retried silently.
		// Over HTTP/2 keep it: Go's HTTP/2 Transport replays a request only
		// when the peer said it was not processed (see h2Retried).
		if !l.cfg.H2 {
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
	// would hide exactly the failure this test looks for, so count the
	// connections each request obtained: more than one means a retry.
	var conns atomic.Int32
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }}
	req = req.WithContext(httptrace.WithClientTrace(context.Background(), trace))

	resp, err := l.clients[i%len(l.clients)].Do(req)
	if err != nil {
		r.latency = time.Since(scheduled)
		r.fail = classify(err)
		return r
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.latency = time.Since(scheduled)
	r.status = resp.StatusCode
	switch {
	case err != nil:
		r.fail = classify(err)
	case resp.StatusCode >= 500:
		r.fail = failStatus5x
	case resp.StatusCode != http.StatusOK:
		r.fail = failStatusXX
	case r.kind == kindEcho && !bytes.Equal(got, l.body):
		r.fail = failBadBody
		if os.Getenv("E2E_DEBUG") != "" {
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
		// counts (h2Frames) show which: TestRollingRestart fails on any
		// RST_STREAM other than REFUSED_STREAM. Such a request never
		// reached a handler; it is counted and reported, not failed.
		r.h2Retried = true
	case conns.Load() > 1:
		r.fail = failRetried
	}
	return r
}

// classify maps a client error to a failure kind.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return failRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return failReset
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return failEOF
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &ne) && ne.Timeout():
		return failTimeout
	case strings.Contains(err.Error(), "server closed idle connection"):
		return failEOF
	case strings.Contains(err.Error(), "stream error"):
		return failH2Stream // RST_STREAM from HAProxy (http2.StreamError)
	}
	return failOther
}

// summary aggregates results.
type summary struct {
	requests int
	h2Retry  int // HTTP/2 GETs Go's client retried after the peer refused the stream (not failures)
	failures map[string]int
	byStatus map[int]int
	p50, p99 time.Duration // non-slow requests
	slowP99  time.Duration
	max      time.Duration
}

func (l *load) summarize() summary {
	s := summary{requests: len(l.results), failures: map[string]int{}, byStatus: map[int]int{}}
	var fast, slow []time.Duration
	for _, r := range l.results {
		if !r.sent {
			s.failures[failNotSent]++
			continue
		}
		if r.h2Retried {
			s.h2Retry++
		}
		if r.fail != "" {
			s.failures[r.fail]++
			if r.status != 0 {
				s.byStatus[r.status]++
			}
		}
		if r.kind == kindSlow {
			slow = append(slow, r.latency)
		} else {
			fast = append(fast, r.latency)
		}
		s.max = max(s.max, r.latency)
	}
	if os.Getenv("E2E_DEBUG") != "" {
		// Per-second worst latency of fast requests, to see when tails happen.
		interval := time.Second / time.Duration(l.cfg.Rate)
		for sec := 0; sec*l.cfg.Rate < len(l.results); sec++ {
			var worst time.Duration
			for i := sec * l.cfg.Rate; i < min(len(l.results), (sec+1)*l.cfg.Rate); i++ {
				if l.results[i].kind != kindSlow {
					worst = max(worst, l.results[i].latency)
				}
			}
			fmt.Fprintf(os.Stderr, "t=%v worst=%v\n", time.Duration(sec*l.cfg.Rate)*interval, worst)
		}
	}
	s.p50, s.p99 = percentile(fast, 50), percentile(fast, 99)
	s.slowP99 = percentile(slow, 99)
	return s
}

func (s summary) failed() int {
	n := 0
	for _, v := range s.failures {
		n += v
	}
	return n
}

func (s summary) failureLine() string {
	var b strings.Builder
	for _, k := range failKinds {
		fmt.Fprintf(&b, "%s=%d ", k, s.failures[k])
	}
	if len(s.byStatus) > 0 {
		fmt.Fprintf(&b, "statuses=%v", s.byStatus)
	}
	return strings.TrimSpace(b.String())
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[(len(d)-1)*p/100]
}
