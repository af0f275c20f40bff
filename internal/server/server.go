// Package server runs an http.Server with safe defaults on a listener bound
// up front, and drains it: it counts requests in flight, marks responses
// "Connection: close" while draining, cancels request contexts shortly before
// the shutdown deadline, and reports how many requests the deadline cut.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Options are the http.Server limits. Zero ReadTimeout and WriteTimeout mean
// no limit; the others must be positive (config validates them).
type Options struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// Logger receives the server's own errors (TLS handshakes, panics).
	Logger *slog.Logger
	// Traffic, if set, wraps the handler in the traffic middleware: requests
	// are counted in flight, answered with "Connection: close" while
	// draining, recovered from panics and observed. Leave it nil for the
	// admin server, whose probes must never be affected by the drain.
	Traffic *Observability
}

// Server is one HTTP listener and its server. Create it with Listen.
type Server struct {
	name string
	ln   net.Listener
	srv  *http.Server

	// cancelRequests cancels the base context of every request.
	cancelRequests context.CancelFunc

	inFlight atomic.Int64
	arrivals atomic.Uint64
	draining atomic.Bool

	longLivedN   atomic.Int64
	shuttingDown chan struct{}
	shutdownOnce sync.Once
}

// Listen binds addr now, so that a bind failure is returned to the caller
// before anything reports ready. name labels the server in logs ("http",
// "admin"). The server does not accept requests until Serve is called.
func Listen(name, addr string, h http.Handler, o Options) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s server: %w", addr, name, err)
	}
	// Request contexts derive from this context, never from the signal
	// context: a SIGTERM must not cancel requests that are still being served.
	base, cancel := context.WithCancel(context.Background())
	s := &Server{name: name, ln: ln, cancelRequests: cancel, shuttingDown: make(chan struct{})}
	base = context.WithValue(base, serverKey{}, s)
	if o.Traffic != nil {
		var unmatched RouteObserver
		if o.Traffic.Route != nil {
			unmatched = o.Traffic.Route("unmatched", "")
		}
		h = s.middleware(h, *o.Traffic, unmatched)
	}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		WriteTimeout:      o.WriteTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	if o.Logger != nil {
		s.srv.ErrorLog = slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)
	}
	s.srv.RegisterOnShutdown(func() { s.shutdownOnce.Do(func() { close(s.shuttingDown) }) })
	return s, nil
}

// Addr is the address the listener is bound to (with the real port when
// the configured port was 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until Shutdown or Close. It returns nil after
// Shutdown or Close, and the error otherwise.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s on %s: %w", s.name, s.Addr(), err)
	}
	return nil
}

// StartDraining makes every later response carry "Connection: close", so
// keep-alive clients and proxies open new connections (to other pods)
// instead of reusing this one. The listener keeps accepting.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Draining reports whether StartDraining was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// InFlight is the number of requests being served now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Arrivals is the number of requests received since start; it only grows.
func (s *Server) Arrivals() uint64 { return s.arrivals.Load() }

// Shutdown stops accepting, closes idle connections and waits for requests
// in flight and for long-lived connections (see LongLived) until ctx ends.
// margin before ctx's deadline it cancels every request context so handlers
// can still return cleanly. If ctx ends first, the remaining connections are
// closed and cut is the number of requests and long-lived connections that
// were still open; err is then context.DeadlineExceeded (or ctx's error).
func (s *Server) Shutdown(ctx context.Context, margin time.Duration) (cut int, err error) {
	if deadline, ok := ctx.Deadline(); ok {
		t := time.AfterFunc(time.Until(deadline)-margin, s.cancelRequests)
		defer t.Stop()
	}
	// Shutdown calls the RegisterOnShutdown hook, which tells long-lived
	// connections to finish; it does not wait for them, so we do below.
	err = s.srv.Shutdown(ctx)
	if err == nil {
		err = s.waitLongLived(ctx)
	}
	if err != nil {
		cut = int(s.inFlight.Load() + s.longLivedN.Load())
		s.cancelRequests()
		return cut, errors.Join(fmt.Errorf("shut down %s server: %w", s.name, err), s.srv.Close())
	}
	s.cancelRequests()
	return 0, nil
}

// waitLongLived polls, rather than using a WaitGroup, because handlers may
// still register long-lived connections while Shutdown is waiting.
func (s *Server) waitLongLived(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.longLivedN.Load() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	s.cancelRequests()
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("close %s server: %w", s.name, err)
	}
	return nil
}

type serverKey struct{}

// LongLived registers a connection that outlives its handler, such as a
// hijacked WebSocket, with the server whose request context is ctx.
// shutdown is closed when Shutdown begins: the connection should then finish
// its work and close. done must be called once when it has; Shutdown waits
// for it until its deadline and counts it as cut otherwise. Outside a
// server's request context, LongLived returns a nil channel and a no-op.
func LongLived(ctx context.Context) (shutdown <-chan struct{}, done func()) {
	s, ok := ctx.Value(serverKey{}).(*Server)
	if !ok {
		return nil, func() {}
	}
	s.longLivedN.Add(1)
	var once sync.Once
	return s.shuttingDown, func() {
		once.Do(func() { s.longLivedN.Add(-1) })
	}
}
