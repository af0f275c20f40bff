package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

func TestListenBusyPort(t *testing.T) {
	busy, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()

	s, err := server.Listen("admin", addr, http.NotFoundHandler(), server.Options{})
	if err == nil {
		s.Close()
		t.Fatalf("Listen(%s) on a busy port: nil error", addr)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address %s", err, addr)
	}
	if !strings.Contains(err.Error(), "admin") {
		t.Errorf("error %q does not name the server", err)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("error %q does not wrap EADDRINUSE", err)
	}
}

func TestListenBindsBeforeServe(t *testing.T) {
	s, err := server.Listen("http", "127.0.0.1:0", http.NotFoundHandler(), server.Options{})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer s.Close()
	addr := s.Addr().(*net.TCPAddr)
	if addr.Port == 0 {
		t.Fatalf("Addr() = %v, want the real port", addr)
	}
	// The kernel completes the handshake on a bound, listening socket even
	// before anyone accepts.
	conn, err := dialContext(t, addr.String())
	if err != nil {
		t.Fatalf("dial %s before Serve: %v", addr, err)
	}
	conn.Close()
}

func TestServeReturnsNilAfterShutdown(t *testing.T) {
	s, err := server.Listen("http", "127.0.0.1:0", http.NotFoundHandler(), server.Options{})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cut, err := s.Shutdown(ctx, time.Second); cut != 0 || err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil", cut, err)
	}
	if err := receive(t, "Serve to return", served); err != nil {
		t.Errorf("Serve() = %v, want nil after Shutdown", err)
	}
}

func TestConnectionCloseWhileDraining(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad", http.StatusInternalServerError) })
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "a")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "b")
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	paths := []string{"/write", "/status", "/error", "/flush", "/panic", "/missing"}

	discard := slog.New(slog.DiscardHandler)
	tests := []struct {
		name    string
		traffic *server.Observability
	}{
		{"traffic", &server.Observability{Logger: discard}},
		{"admin", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, base := serve(t, mux, server.Options{Traffic: tt.traffic, Logger: discard})
			c := newClient(t)
			for _, p := range paths {
				if p == "/panic" && tt.traffic == nil {
					continue // only the traffic middleware recovers panics
				}
				// The client strips the Connection header; Close reports it.
				if resp, _ := get(t, c, base+p); resp.Close {
					t.Errorf("before draining, GET %s: Connection: close, want keep-alive", p)
				}
			}
			if s.Draining() {
				t.Fatal("Draining() = true before StartDraining")
			}
			s.StartDraining()
			if !s.Draining() {
				t.Fatal("Draining() = false after StartDraining")
			}
			for _, p := range paths {
				if p == "/panic" && tt.traffic == nil {
					continue
				}
				resp, _ := get(t, c, base+p)
				if tt.traffic == nil {
					if resp.Close {
						t.Errorf("admin server draining, GET %s: Connection: close, want keep-alive", p)
					}
					continue
				}
				if !resp.Close {
					t.Errorf("while draining, GET %s (status %d): no Connection: close", p, resp.StatusCode)
				}
			}
		})
	}
}

// KeepConnectionsWhileDraining leaves every response unmarked while draining,
// on HTTP/1.1 keep-alive connections: the switch behind the e2e-kube control
// that shows what "Connection: close" buys.
func TestKeepConnectionsWhileDraining(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}, KeepConnectionsWhileDraining: true})
	c := newClient(t)
	s.StartDraining()
	for i := range 3 {
		if resp, _ := get(t, c, base); resp.Close {
			t.Errorf("request %d while draining with KeepConnectionsWhileDraining: Connection: close, want keep-alive", i)
		}
	}
}

// A handler may return without writing anything; net/http then sends 200
// itself, bypassing the middleware's WriteHeader. The response must still
// carry "Connection: close" while draining (contract: every traffic
// response).
func TestConnectionCloseWhileDrainingEmptyResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	s.StartDraining()
	resp, _ := get(t, newClient(t), base)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Errorf("status = %d, want %d", got, want)
	}
	// The client removes the Connection header and sets Close instead.
	if !resp.Close {
		t.Error("while draining, a response the handler left empty has no Connection: close")
	}
}

func TestInFlightAndArrivals(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	c := newClient(t)
	if got := s.InFlight(); got != 0 {
		t.Fatalf("InFlight() = %d before any request, want 0", got)
	}

	done := make(chan error, 1)
	go func() {
		resp, err := do(t, c, base+"/block")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	receive(t, "the handler to start", started)
	if got, want := s.InFlight(), int64(1); got != want {
		t.Errorf("InFlight() = %d while a request is served, want %d", got, want)
	}
	if got, want := s.Arrivals(), uint64(1); got != want {
		t.Errorf("Arrivals() = %d, want %d", got, want)
	}
	close(release)
	if err := receive(t, "the response", done); err != nil {
		t.Fatalf("GET /block: %v", err)
	}
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })

	get(t, c, base+"/quick")
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
	if got, want := s.Arrivals(), uint64(2); got != want {
		t.Errorf("Arrivals() = %d after two requests, want %d", got, want)
	}
}

func TestAdminServerNotCounted(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
	})
	s, base := serve(t, h, server.Options{})
	c := newClient(t)
	done := make(chan error, 1)
	go func() {
		resp, err := do(t, c, base)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	receive(t, "the handler to start", started)
	if got := s.InFlight(); got != 0 {
		t.Errorf("admin server InFlight() = %d, want 0 (not counted)", got)
	}
	close(release)
	if err := receive(t, "the response", done); err != nil {
		t.Fatal(err)
	}
}

func TestPanicRecovered(t *testing.T) {
	logs := &logCapture{}
	var panics atomic.Int32
	rr := &routeRecorder{}
	obs := &server.Observability{
		Route:  rr.Route,
		Panic:  func() { panics.Add(1) },
		Logger: slog.New(logs),
	}
	mux := server.NewMux(*obs)
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fine") })
	s, base := serve(t, mux, server.Options{Traffic: obs, Logger: slog.New(logs)})
	c := newClient(t)

	resp, _ := get(t, c, base+"/panic")
	if got, want := resp.StatusCode, http.StatusInternalServerError; got != want {
		t.Errorf("status of a panicking handler = %d, want %d", got, want)
	}
	if got, want := panics.Load(), int32(1); got != want {
		t.Errorf("Panic called %d times, want %d", got, want)
	}
	recs := logs.find("handler panic")
	if len(recs) != 1 {
		t.Fatalf("got %d \"handler panic\" records, want 1; all: %+v", len(recs), logs.all())
	}
	rec := recs[0]
	if got, want := rec.level, slog.LevelError; got != want {
		t.Errorf("panic logged at %v, want %v", got, want)
	}
	if got, want := rec.attrs["panic"], "boom"; got != want {
		t.Errorf("panic attribute = %q, want %q", got, want)
	}
	if got, want := rec.attrs["path"], "/panic"; got != want {
		t.Errorf("path attribute = %q, want %q", got, want)
	}
	if !strings.Contains(rec.attrs["stack"], "server_test") {
		t.Errorf("stack attribute does not show the panicking handler:\n%s", rec.attrs["stack"])
	}
	// net/http must not have seen the panic: it would log it and drop the
	// connection instead of answering 500.
	for _, r := range logs.all() {
		if strings.Contains(r.msg, "http: panic serving") {
			t.Errorf("net/http logged the panic: %q", r.msg)
		}
	}

	resp, body := get(t, c, base+"/ok")
	if resp.StatusCode != http.StatusOK || body != "fine" {
		t.Errorf("after a panic, GET /ok = %d %q; want 200 \"fine\"", resp.StatusCode, body)
	}
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
	waitFor(t, "two observations", func() bool { return len(rr.observed()) == 2 })
	if got, want := rr.observed()[0], (observation{route: "/panic", routeMethod: "GET", method: "GET", status: 500}); got != want {
		t.Errorf("panic observed as %+v, want %+v", got, want)
	}
}

// A panic after the response has begun cannot become a 500: the status line
// is gone. The response must be aborted so the client sees an error instead
// of a complete-looking 200, and the panic still logged and counted once.
func TestPanicAfterHeadersAbortsResponse(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		// flushed: the status and part of the body reached the client
		// before the panic, so the error comes while reading the body.
		flushed bool
		status  int // observed in metrics: the status the handler wrote
	}{
		{"flushed body", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			http.NewResponseController(w).Flush()
			panic("late")
		}, true, http.StatusOK},
		{"buffered body", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "partial")
			panic("late")
		}, false, http.StatusOK},
		{"status only", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			panic("late")
		}, false, http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logCapture{}
			rr := &routeRecorder{}
			var panics atomic.Int32
			obs := &server.Observability{Route: rr.Route, Panic: func() { panics.Add(1) }, Logger: slog.New(logs)}
			mux := server.NewMux(*obs)
			mux.HandleFunc("GET /late", tt.handler)
			mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fine") })
			s, base := serve(t, mux, server.Options{Traffic: obs, Logger: slog.New(logs)})
			c := newClient(t)

			resp, err := do(t, c, base+"/late")
			if tt.flushed {
				if err != nil {
					t.Fatalf("GET /late: %v, want the flushed status", err)
				}
				if got, want := resp.StatusCode, http.StatusOK; got != want {
					t.Errorf("status = %d, want %d", got, want)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("reading the body of an aborted response: %v, want io.ErrUnexpectedEOF", err)
				}
			} else if err == nil {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Errorf("GET /late = %d %q (read error %v), want an error: the response was cut", resp.StatusCode, body, rerr)
			}

			waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
			waitFor(t, "an observation", func() bool { return len(rr.observed()) == 1 })
			if got, want := rr.observed()[0], (observation{route: "/late", routeMethod: "GET", method: "GET", status: tt.status}); got != want {
				t.Errorf("observed %+v, want %+v", got, want)
			}
			if got, want := panics.Load(), int32(1); got != want {
				t.Errorf("Panic called %d times, want %d", got, want)
			}
			if got, want := len(logs.find("handler panic")), 1; got != want {
				t.Errorf("got %d \"handler panic\" records, want %d", got, want)
			}
			for _, r := range logs.all() {
				if strings.Contains(r.msg, "panic serving") {
					t.Errorf("net/http logged the panic too: %q", r.msg)
				}
			}

			after, body := get(t, c, base+"/ok")
			if after.StatusCode != http.StatusOK || body != "fine" {
				t.Errorf("after an aborted response, GET /ok = %d %q; want 200 \"fine\"", after.StatusCode, body)
			}
		})
	}
}

func TestErrAbortHandlerNotRecovered(t *testing.T) {
	logs := &logCapture{}
	var panics atomic.Int32
	obs := &server.Observability{Panic: func() { panics.Add(1) }, Logger: slog.New(logs)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			io.WriteString(w, "partial")
			panic(http.ErrAbortHandler)
		}
		io.WriteString(w, "ok")
	})
	s, base := serve(t, h, server.Options{Traffic: obs, Logger: slog.New(logs)})
	c := newClient(t)

	resp, err := do(t, c, base+"/abort")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusInternalServerError {
			t.Errorf("aborted response answered 500, want the connection aborted")
		}
	}
	if err == nil {
		t.Errorf("GET /abort: nil error, want the response aborted")
	}
	if got := panics.Load(); got != 0 {
		t.Errorf("Panic called %d times for http.ErrAbortHandler, want 0", got)
	}
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
	for _, r := range logs.all() {
		t.Errorf("http.ErrAbortHandler logged %q %v, want no log", r.msg, r.attrs)
	}

	after, body := get(t, c, base+"/ok")
	if after.StatusCode != http.StatusOK || body != "ok" {
		t.Errorf("after an abort, GET /ok = %d %q; want 200 \"ok\"", after.StatusCode, body)
	}
}

// net/http treats only the sentinel itself as an abort (it compares the
// recovered value with ==); a panic with an error that merely wraps
// http.ErrAbortHandler is an ordinary panic, which net/http would log with a
// stack. The middleware draws the same line: it recovers it, answers 500 and
// logs and counts it once.
func TestWrappedErrAbortHandlerRecovered(t *testing.T) {
	logs := &logCapture{}
	var panics atomic.Int32
	obs := &server.Observability{Panic: func() { panics.Add(1) }, Logger: slog.New(logs)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(fmt.Errorf("give up: %w", http.ErrAbortHandler))
	})
	s, base := serve(t, h, server.Options{Traffic: obs, Logger: slog.New(logs)})

	resp, _ := get(t, newClient(t), base)
	if got, want := resp.StatusCode, http.StatusInternalServerError; got != want {
		t.Errorf("status after a panic with a wrapped http.ErrAbortHandler = %d, want %d", got, want)
	}
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
	if got, want := panics.Load(), int32(1); got != want {
		t.Errorf("Panic called %d times, want %d", got, want)
	}
	if got, want := len(logs.find("handler panic")), 1; got != want {
		t.Errorf("got %d \"handler panic\" records, want %d; all: %+v", got, want, logs.all())
	}
	for _, r := range logs.all() {
		if strings.Contains(r.msg, "panic serving") {
			t.Errorf("net/http logged the panic: %q", r.msg)
		}
	}
}

func TestShutdownWaitsForInFlight(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var ctxErrAtRelease atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		ctxErrAtRelease.Store(fmt.Sprint(r.Context().Err()))
		io.WriteString(w, "finished")
	})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	c := newClient(t)

	type result struct {
		status int
		body   string
		err    error
	}
	reqDone := make(chan result, 1)
	go func() {
		resp, err := do(t, c, base)
		if err != nil {
			reqDone <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		reqDone <- result{resp.StatusCode, string(b), err}
	}()
	receive(t, "the handler to start", started)

	shutDone := shutdownInBackground(t, s, 20*time.Second, time.Second)
	// Shutdown has begun once the listener refuses connections.
	waitFor(t, "the listener to close", func() bool {
		conn, err := dialContext(t, s.Addr().String())
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
	select {
	case r := <-shutDone:
		t.Fatalf("Shutdown returned %d, %v while a request was in flight", r.cut, r.err)
	default:
	}

	close(release)
	r := receive(t, "Shutdown to return", shutDone)
	if r.cut != 0 || r.err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil", r.cut, r.err)
	}
	res := receive(t, "the response", reqDone)
	if res.err != nil || res.status != http.StatusOK || res.body != "finished" {
		t.Errorf("in-flight request got %d %q %v; want 200 \"finished\"", res.status, res.body, res.err)
	}
	if got, want := ctxErrAtRelease.Load(), "<nil>"; got != want {
		t.Errorf("request context error at release = %v, want %v (the margin had not begun)", got, want)
	}
	if got := s.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d after Shutdown, want 0", got)
	}
}

func TestShutdownCutsRequestIgnoringContext(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release // ignores r.Context()
		io.WriteString(w, "too late")
	})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	defer close(release)
	c := newClient(t)

	// reqErr receives nil if the client got a whole response.
	reqErr := make(chan error, 1)
	go func() {
		resp, err := do(t, c, base)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		reqErr <- err
	}()
	receive(t, "the handler to start", started)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cut, err := s.Shutdown(ctx, 50*time.Millisecond)
	if got, want := cut, 1; got != want {
		t.Errorf("Shutdown cut %d requests, want %d", got, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown error = %v, want context.DeadlineExceeded", err)
	}
	if err != nil && !strings.Contains(err.Error(), "http") {
		t.Errorf("Shutdown error %q does not name the server", err)
	}
	if err := receive(t, "the client to see the cut", reqErr); err == nil {
		t.Error("the cut request got a whole response, want its connection closed")
	}
}

func TestShutdownCancelsContextsBeforeDeadline(t *testing.T) {
	started := make(chan struct{})
	type seen struct {
		at    time.Time
		cause error
	}
	cancelled := make(chan seen, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		cancelled <- seen{time.Now(), context.Cause(r.Context())}
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	c := newClient(t)

	status := make(chan int, 1)
	go func() {
		resp, err := do(t, c, base)
		if err != nil {
			status <- -1
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	receive(t, "the handler to start", started)

	// The margin leaves plenty of time between the cancellation and the
	// deadline, so the handler returns and nothing is cut.
	deadline := time.Now().Add(3 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cut, err := s.Shutdown(ctx, 2800*time.Millisecond)
	if cut != 0 || err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil (the handler honoured its context)", cut, err)
	}
	select {
	case sn := <-cancelled:
		if !sn.at.Before(deadline) {
			t.Errorf("request context cancelled at %v, not before the deadline %v", sn.at, deadline)
		}
		if !errors.Is(sn.cause, context.Canceled) {
			t.Errorf("context cause = %v, want context.Canceled", sn.cause)
		}
	default:
		t.Fatal("Shutdown returned before the handler saw its context cancelled")
	}
	if got, want := receive(t, "the response", status), http.StatusServiceUnavailable; got != want {
		t.Errorf("client got status %d, want %d", got, want)
	}
}

func TestRequestContextNotCancelledBeforeShutdown(t *testing.T) {
	var ctxErr atomic.Value
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctxErr.Store(fmt.Sprint(r.Context().Err()))
	})
	s, base := serve(t, h, server.Options{Traffic: &server.Observability{}})
	s.StartDraining() // draining alone never cancels requests
	get(t, newClient(t), base)
	if got, want := ctxErr.Load(), "<nil>"; got != want {
		t.Errorf("request context error while draining = %v, want %v", got, want)
	}
}

// hijackAndGreet is a handler that takes over the connection like a
// WebSocket server, registers it as long-lived, writes "hello", then waits
// for Shutdown, writes "bye" and waits for release before calling done.
func hijackAndGreet(t *testing.T, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shutdown, done := server.LongLived(r.Context())
		if shutdown == nil {
			t.Error("LongLived returned a nil channel inside a server's request")
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack through the middleware: %v", err)
			done()
			return
		}
		brw.WriteString("hello\n")
		brw.Flush()
		go func() {
			defer conn.Close()
			<-shutdown
			conn.Write([]byte("bye\n"))
			<-release
			done()
			done() // a second call is a no-op
		}()
	})
}

func TestLongLived(t *testing.T) {
	release := make(chan struct{})
	s, _ := serve(t, hijackAndGreet(t, release), server.Options{Traffic: &server.Observability{}})

	conn, err := dialContext(t, s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
	rd := bufio.NewReader(conn)
	if line, err := rd.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("read %q, %v; want \"hello\\n\"", line, err)
	}

	shutDone := shutdownInBackground(t, s, 20*time.Second, time.Second)
	// The shutdown channel closes when Shutdown begins.
	if line, err := rd.ReadString('\n'); err != nil || line != "bye\n" {
		t.Fatalf("read %q, %v after Shutdown began; want \"bye\\n\"", line, err)
	}
	select {
	case r := <-shutDone:
		t.Fatalf("Shutdown returned %d, %v before the long-lived connection called done", r.cut, r.err)
	default:
	}
	close(release)
	r := receive(t, "Shutdown to return", shutDone)
	if r.cut != 0 || r.err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil", r.cut, r.err)
	}
}

func TestLongLivedCutAtDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s, _ := serve(t, hijackAndGreet(t, release), server.Options{Traffic: &server.Observability{}})

	conn, err := dialContext(t, s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("read %q, %v; want \"hello\\n\"", line, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	cut, err := s.Shutdown(ctx, 0)
	if got, want := cut, 1; got != want {
		t.Errorf("Shutdown cut %d, want %d (the long-lived connection)", got, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown error = %v, want context.DeadlineExceeded", err)
	}
}

func TestLongLivedOutsideServer(t *testing.T) {
	shutdown, done := server.LongLived(context.Background())
	if shutdown != nil {
		t.Error("LongLived outside a server returned a non-nil channel")
	}
	done() // must not panic
}

func TestMuxRouteMetrics(t *testing.T) {
	rr := &routeRecorder{}
	obs := &server.Observability{Route: rr.Route}
	mux := server.NewMux(*obs)
	mux.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.PathValue("id")) //nolint:gosec // test handler: it echoes the id in the test's own request path
	})
	mux.HandleFunc("/any", func(w http.ResponseWriter, r *http.Request) {})
	_, base := serve(t, mux, server.Options{Traffic: obs})
	c := newClient(t)

	requests := []struct {
		method, path string
		want         observation
	}{
		{"GET", "/x", observation{route: "/x", routeMethod: "GET", method: "GET", status: 201}},
		{"GET", "/items/42", observation{route: "/items/{id}", routeMethod: "GET", method: "GET", status: 200}},
		{"HEAD", "/items/42", observation{route: "/items/{id}", routeMethod: "GET", method: "HEAD", status: 200}},
		{"DELETE", "/any", observation{route: "/any", routeMethod: "", method: "DELETE", status: 200}},
		{"GET", "/nope", observation{route: "unmatched", routeMethod: "", method: "GET", status: 404}},
		{"POST", "/x", observation{route: "unmatched", routeMethod: "", method: "POST", status: 405}},
		{"BREW", "/nope", observation{route: "unmatched", routeMethod: "", method: "_OTHER", status: 404}},
	}
	for i, tt := range requests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, tt.want.status; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
			waitFor(t, "the observation", func() bool { return len(rr.observed()) > i })
			if got := rr.observed()[i]; got != tt.want {
				t.Errorf("observed %+v, want %+v", got, tt.want)
			}
		})
	}
	// Route is resolved once per route, not per request.
	if got, want := len(rr.routeCalls()), 4; got != want {
		t.Errorf("Observability.Route called %d times (%q), want %d (three routes and unmatched)", got, rr.routeCalls(), want)
	}
}

type ctxKey struct{}

func TestMuxStartSpan(t *testing.T) {
	type span struct {
		route, name string
		status      int
	}
	spans := make(chan span, 10)
	logs := &logCapture{}
	obs := &server.Observability{
		Logger: slog.New(logs),
		StartSpan: func(r *http.Request, route, spanName string) (context.Context, func(int)) {
			ctx := context.WithValue(r.Context(), ctxKey{}, spanName)
			return ctx, func(status int) { spans <- span{route, spanName, status} }
		},
	}
	mux := server.NewMux(*obs)
	mux.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) {
		// The handler runs in the span's context.
		fmt.Fprint(w, r.Context().Value(ctxKey{})) //nolint:gosec // test handler: it echoes the span name the test's StartSpan stored
	})
	mux.HandleFunc("GET /created", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	mux.HandleFunc("GET /empty", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /boom", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	mux.HandleFunc("/items/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {})
	_, base := serve(t, mux, server.Options{Traffic: obs})
	c := newClient(t)

	tests := []struct {
		path       string
		wantStatus int
		want       span
	}{
		{"/x", 200, span{"/x", "GET /x", 200}},
		{"/created", 201, span{"/created", "GET /created", 201}},
		{"/empty", 200, span{"/empty", "GET /empty", 200}},
		{"/boom", 500, span{"/boom", "GET /boom", 500}},
		{"/items/7", 418, span{"/items/{id}", "/items/{id}", 418}},
		{"/", 200, span{"/", "GET /", 200}}, // "{$}" is not part of the route
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := get(t, c, base+tt.path)
			if got, want := resp.StatusCode, tt.wantStatus; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
			if tt.path == "/x" && body != "GET /x" {
				t.Errorf("handler saw context value %q, want the span's context", body)
			}
			if got := receive(t, "the span to end", spans); got != tt.want {
				t.Errorf("span = %+v, want %+v", got, tt.want)
			}
		})
	}

	get(t, c, base+"/nope")
	select {
	case sp := <-spans:
		t.Errorf("unmatched request started span %+v, want none", sp)
	default:
	}

	// The panic is logged with the span's context, so it carries the
	// trace id.
	recs := logs.find("handler panic")
	if len(recs) != 1 {
		t.Fatalf("got %d panic records, want 1", len(recs))
	}
	if got, want := recs[0].ctx.Value(ctxKey{}), any("GET /boom"); got != want {
		t.Errorf("panic logged with context value %v, want %v", got, want)
	}
}

func TestMuxWithoutMiddleware(t *testing.T) {
	// A Mux served without the traffic middleware still routes and still
	// ends spans.
	ended := make(chan int, 1)
	mux := server.NewMux(server.Observability{
		StartSpan: func(r *http.Request, route, name string) (context.Context, func(int)) {
			return r.Context(), func(status int) { ended <- status }
		},
	})
	mux.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	_, base := serve(t, mux, server.Options{})
	resp, _ := get(t, newClient(t), base+"/x")
	if got, want := resp.StatusCode, http.StatusAccepted; got != want {
		t.Errorf("status = %d, want %d", got, want)
	}
	receive(t, "the span to end", ended)
}

func TestRequestLog(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint(enabled), func(t *testing.T) {
			logs := &logCapture{}
			obs := &server.Observability{Logger: slog.New(logs), RequestLog: enabled}
			mux := server.NewMux(*obs)
			const handlerTime = 30 * time.Millisecond
			mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(handlerTime)
				w.WriteHeader(http.StatusAccepted)
			})
			s, base := serve(t, mux, server.Options{Traffic: obs})
			before := time.Now()
			get(t, newClient(t), base+"/items/9")
			waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
			after := time.Now()
			recs := logs.find("request")
			if !enabled {
				if len(recs) != 0 {
					t.Errorf("request log off: got %d records, want 0", len(recs))
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("got %d request records, want 1", len(recs))
			}
			for k, want := range map[string]string{"method": "GET", "path": "/items/9", "route": "/items/{id}", "status": "202"} {
				if got := recs[0].attrs[k]; got != want {
					t.Errorf("request log %s = %q, want %q", k, got, want)
				}
			}
			// The duration covers the handler; the record's time is when
			// the request ended, on the wall clock.
			ms, err := strconv.ParseFloat(recs[0].attrs["duration_ms"], 64)
			if err != nil || ms < float64(handlerTime.Milliseconds()) || ms > float64(after.Sub(before).Microseconds())/1000 {
				t.Errorf("duration_ms = %q, want at least %v and at most the %v the request took", recs[0].attrs["duration_ms"], handlerTime, after.Sub(before))
			}
			if rt := recs[0].time; rt.Before(before.Add(handlerTime)) || rt.After(after) {
				t.Errorf("record time %v, want between %v and %v", rt, before.Add(handlerTime), after)
			}
		})
	}
}

func TestFlushThroughMiddleware(t *testing.T) {
	proceed := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the middleware: %v", err)
		}
		io.WriteString(w, "first\n")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush through the middleware: %v", err)
		}
		<-proceed // the client must have read "first" without the handler returning
		io.WriteString(w, "second\n")
	})
	_, base := serve(t, h, server.Options{Traffic: &server.Observability{}})

	resp, err := do(t, newClient(t), base)
	if err != nil {
		close(proceed)
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	lines := make(chan string, 1)
	go func() {
		line, _ := rd.ReadString('\n')
		lines <- line
	}()
	if got, want := receive(t, "the flushed line", lines), "first\n"; got != want {
		t.Errorf("first line = %q, want %q", got, want)
	}
	close(proceed)
	if rest, _ := io.ReadAll(rd); string(rest) != "second\n" {
		t.Errorf("rest = %q, want \"second\\n\"", rest)
	}
}

func TestHijackWhileDraining(t *testing.T) {
	logs := &logCapture{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
		brw.Flush()
	})
	s, _ := serve(t, h, server.Options{Traffic: &server.Observability{Logger: slog.New(logs)}, Logger: slog.New(logs)})
	s.StartDraining()

	conn, err := dialContext(t, s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read hijacked response: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "ok" {
		t.Errorf("body = %q, want \"ok\"", body)
	}
	waitFor(t, "InFlight() == 0", func() bool { return s.InFlight() == 0 })
	// The middleware must not write to a connection the handler took over.
	for _, r := range logs.all() {
		t.Errorf("unexpected log after a hijack: %q %v", r.msg, r.attrs)
	}
}
