package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

// serve listens on 127.0.0.1:0, serves h in the background and closes the
// server when the test ends. It returns the server and its base URL.
func serve(t *testing.T, h http.Handler, o server.Options) (*server.Server, string) {
	t.Helper()
	s, err := server.Listen("http", "127.0.0.1:0", h, o)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v, want nil after Close", err)
		}
	})
	return s, "http://" + s.Addr().String()
}

// newClient returns a client with its own connection pool.
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// reply is what get keeps of a response: its body is read and closed.
type reply struct {
	StatusCode int
	Close      bool // the server asked to close the connection
}

// get does a GET with the test's context and reads the whole body.
func get(t *testing.T, c *http.Client, url string) (reply, string) {
	t.Helper()
	resp, err := do(t, c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s: %v", url, err)
	}
	return reply{StatusCode: resp.StatusCode, Close: resp.Close}, string(body)
}

// do sends a GET with the test's context; the caller closes the body. It is
// safe to call from another goroutine (it does not fail the test).
func do(t *testing.T, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// dialContext opens a raw TCP connection to addr with the test's context;
// the caller closes it.
func dialContext(t *testing.T, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
}

// waitFor polls cond until it is true, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// receive waits for a value on ch, failing the test after 10s.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// record is one captured log record.
type record struct {
	ctx   context.Context
	time  time.Time
	level slog.Level
	msg   string
	attrs map[string]string
}

// logCapture is a slog.Handler that keeps every record.
type logCapture struct {
	mu      sync.Mutex
	records []record
}

func (*logCapture) Enabled(context.Context, slog.Level) bool { return true }

func (c *logCapture) Handle(ctx context.Context, r slog.Record) error {
	rec := record{ctx: ctx, time: r.Time, level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, rec)
	return nil
}

func (c *logCapture) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *logCapture) WithGroup(string) slog.Handler      { return c }

func (c *logCapture) all() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record(nil), c.records...)
}

// find returns the records with message msg.
func (c *logCapture) find(msg string) []record {
	var found []record
	for _, r := range c.all() {
		if r.msg == msg {
			found = append(found, r)
		}
	}
	return found
}

// observation is one RouteObserver.Observe call.
type observation struct {
	route, routeMethod string // as passed to Observability.Route
	method             string
	status             int
}

// routeRecorder implements Observability.Route, recording every call.
type routeRecorder struct {
	mu           sync.Mutex
	routes       []string // Route calls, "method route"
	observations []observation
}

func (rr *routeRecorder) Route(route, method string) server.RouteObserver {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	rr.routes = append(rr.routes, method+" "+route)
	return &routeObserver{rr: rr, route: route, method: method}
}

func (rr *routeRecorder) observed() []observation {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return append([]observation(nil), rr.observations...)
}

func (rr *routeRecorder) routeCalls() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return append([]string(nil), rr.routes...)
}

type routeObserver struct {
	rr            *routeRecorder
	route, method string
}

func (o *routeObserver) Observe(method string, status int, d time.Duration) {
	o.rr.mu.Lock()
	defer o.rr.mu.Unlock()
	if d < 0 {
		status = -1 // makes the test fail: durations are never negative
	}
	o.rr.observations = append(o.rr.observations, observation{route: o.route, routeMethod: o.method, method: method, status: status})
}

// shutdownResult is what Server.Shutdown returned.
type shutdownResult struct {
	cut int
	err error
}

// shutdownInBackground starts s.Shutdown with the given deadline and margin
// and delivers its result on the returned channel.
func shutdownInBackground(t *testing.T, s *server.Server, timeout, margin time.Duration) <-chan shutdownResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	done := make(chan shutdownResult, 1)
	go func() {
		cut, err := s.Shutdown(ctx, margin)
		done <- shutdownResult{cut, err}
	}()
	return done
}
