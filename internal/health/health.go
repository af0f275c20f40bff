// Package health serves the liveness and readiness probes. It is the only
// package that knows about github.com/heptiolabs/healthcheck.
package health

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/heptiolabs/healthcheck"
	"github.com/prometheus/client_golang/prometheus"
)

// Check reports a problem as a non-nil error. Checks run on the probe's
// request path unless added with AddAsyncReadiness, so they must be fast.
type Check = func() error

// Probes holds the liveness and readiness checks. Readiness fails when any
// readiness or liveness check fails; liveness only when a liveness check
// fails.
type Probes struct {
	h     healthcheck.Handler
	names map[string]int // checks added per name, to keep names unique
}

// New returns probes without checks (both answer 200) whose check results
// are also exported as the gauge kubeskel_healthcheck_status{check} in reg
// (0 ok, 1 failing).
func New(reg prometheus.Registerer) *Probes {
	return &Probes{h: healthcheck.NewMetricsHandler(reg, "kubeskel"), names: map[string]int{}}
}

// unique returns name, or name#2, name#3... if it was used before: the
// library would replace a check of the same name and panic on registering
// its gauge twice. Checks are added during start-up only, from one goroutine.
func (p *Probes) unique(name string) string {
	p.names[name]++
	if n := p.names[name]; n > 1 {
		return fmt.Sprintf("%s#%d", name, n)
	}
	return name
}

// AddLiveness adds a check of the process's own health. Never add a
// dependency here: a failing liveness probe restarts the container.
func (p *Probes) AddLiveness(name string, c Check) { p.h.AddLivenessCheck(p.unique(name), c) }

// AddReadiness adds a check that must pass for the pod to receive traffic.
// c runs on every probe, so it must answer at once (read a flag).
func (p *Probes) AddReadiness(name string, c Check) { p.h.AddReadinessCheck(p.unique(name), c) }

// AddAsyncReadiness runs c every interval in the background, from now until
// ctx ends, and makes its latest result a readiness check, so a probe
// answers in microseconds whatever the dependency's latency. It fails until
// c has run once.
func (p *Probes) AddAsyncReadiness(ctx context.Context, name string, c Check, interval time.Duration) {
	p.h.AddReadinessCheck(p.unique(name), healthcheck.AsyncWithContext(ctx, c, interval))
}

// TCPCheck passes when addr accepts a TCP connection within timeout.
func TCPCheck(addr string, timeout time.Duration) Check {
	return healthcheck.TCPDialCheck(addr, timeout)
}

// HTTPCheck passes when a GET of rawURL answers 2xx within timeout. Its
// errors do not contain the URL's path, query or credentials.
func HTTPCheck(rawURL string, timeout time.Duration) Check {
	client := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return func() error {
		// A Check takes no context; the client's Timeout bounds the request.
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, rawURL, nil)
		if err != nil {
			return fmt.Errorf("GET %s: invalid URL", CheckName(rawURL))
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("GET %s: request failed", CheckName(rawURL))
		}
		// Drain the body so the connection is reused by the next check.
		// Errors here only mean the connection is not reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("GET %s: status %d", CheckName(rawURL), resp.StatusCode)
		}
		return nil
	}
}

// CheckName is a name for an HTTP dependency that is safe to show: scheme
// and host only.
func CheckName(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "http"
	}
	return u.Scheme + "://" + u.Host
}

// Handler serves GET and HEAD /live and /ready: 200 when the checks pass,
// 503 otherwise; ?full=1 adds each check's result as JSON.
func (p *Probes) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			// The library only answers GET: serve HEAD as GET, with the
			// same status and headers, and drop the body here rather than
			// rely on net/http, so any wrapper sees a HEAD response.
			get := *r
			get.Method = http.MethodGet
			r = &get
			w = headWriter{w}
		}
		p.h.ServeHTTP(w, r)
	})
}

// headWriter discards the body of a response to HEAD.
type headWriter struct{ http.ResponseWriter }

func (w headWriter) Write(b []byte) (int, error) { return len(b), nil }

// Ready runs the readiness checks as GET /ready does and returns nil when it
// would answer 200, for servers that report readiness another way (the gRPC
// health service).
func (p *Probes) Ready() error {
	var w statusWriter
	p.h.ReadyEndpoint(&w, &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/ready"}})
	if w.code != 0 && w.code != http.StatusOK {
		return fmt.Errorf("readiness: status %d", w.code)
	}
	return nil
}

// statusWriter keeps only the status code of a response.
type statusWriter struct{ code int }

func (w *statusWriter) Header() http.Header         { return http.Header{} }
func (w *statusWriter) WriteHeader(code int)        { w.code = code }
func (w *statusWriter) Write(b []byte) (int, error) { return len(b), nil }
