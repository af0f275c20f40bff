//go:build kube

package kube

// The open-loop load generator of test/e2e (load_test.go), copied: that one
// lives in another package's test files. Two changes: stop() ends the
// schedule early (the requests never launched are not counted), and the
// debug output is gone.

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
	doneAt  time.Time     // when the outcome was known
	pod     string        // the pod a GET / answer named ("" for other kinds)
}

// Failure kinds. A request fails when it gets no response (transport error,
// classified), a non-200 status, a wrong body, or when Go's Transport retried
// it behind our back.
const (
	failRefused  = "refused"
	failReset    = "reset"
	failEOF      = "eof"
	failTimeout  = "timeout"
	failOther    = "other"
	failBadBody  = "bad_body"
	failRetried  = "client_retry"
	failNotSent  = "not_sent"
	failStatus5x = "http_5xx"
	failStatusXX = "http_other"
)

var failKinds = []string{failRefused, failReset, failEOF, failTimeout, failOther, failStatus5x, failStatusXX, failBadBody, failRetried, failNotSent}

// loadConfig describes one open-loop run.
type loadConfig struct {
	URL      string        // frontend base URL
	Rate     int           // requests per second, fixed (open loop)
	Total    int           // requests in all
	Conns    int           // keep-alive connection pool size
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
	client   *http.Client
	results  []result
	start    time.Time
	launched atomic.Int64
	done     atomic.Int64
	inflight atomic.Int64
	finished chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
	body     []byte
}

// stop ends the schedule: run launches nothing more, waits for the requests
// in flight and truncates the results to those launched.
func (l *load) stop() { l.stopOnce.Do(func() { close(l.stopped) }) }

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
	body := bytes.Repeat([]byte("kubeskel-"), 113) // ~1 KiB
	return &load{
		cfg:      cfg,
		client:   &http.Client{Transport: tr, Timeout: cfg.Timeout},
		results:  make([]result, cfg.Total),
		finished: make(chan struct{}),
		stopped:  make(chan struct{}),
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
		req.GetBody = nil
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

	resp, err := l.client.Do(req)
	if err != nil {
		r.doneAt = time.Now()
		r.latency = r.doneAt.Sub(scheduled)
		r.fail = classify(err)
		return r
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r.doneAt = time.Now()
	r.latency = r.doneAt.Sub(scheduled)
	r.status = resp.StatusCode
	if r.kind == kindRoot && err == nil {
		// "kubeskel <version> on <pod>\n": which pod served it.
		if _, host, ok := strings.Cut(string(got), " on "); ok {
			r.pod = strings.TrimSpace(host)
		}
	}
	switch {
	case err != nil:
		r.fail = classify(err)
	case resp.StatusCode >= 500:
		r.fail = failStatus5x
	case resp.StatusCode != http.StatusOK:
		r.fail = failStatusXX
	case r.kind == kindEcho && !bytes.Equal(got, l.body):
		r.fail = failBadBody
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
	}
	return failOther
}

// lastServed returns, per pod, when the last successful GET / that it
// answered completed.
func (l *load) lastServed() map[string]time.Time {
	last := map[string]time.Time{}
	for _, r := range l.results {
		if r.pod != "" && r.fail == "" && r.doneAt.After(last[r.pod]) {
			last[r.pod] = r.doneAt
		}
	}
	return last
}

// summary aggregates results.
type summary struct {
	requests int
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
