// Package server runs an http.Server with safe defaults on a listener bound
// up front, and drains it: it counts requests in flight, marks responses
// "Connection: close" while draining, cancels request contexts shortly before
// the shutdown deadline, tracks every connection (hijacked ones included)
// and reports how many requests the shutdown really cut.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kubeskel/kubeskel/internal/stopwatch"
)

// Options are the http.Server limits. Zero ReadTimeout and WriteTimeout mean
// no limit; the others must be positive (config validates them).
//
// The read timeouts (ReadHeaderTimeout, ReadTimeout, IdleTimeout, and the
// TLS handshake, which net/http bounds by ReadHeaderTimeout) fire no earlier
// than set and at most one sweep tick later: a tenth of the shortest of
// them, within [1 ms, 500 ms] (deadline.go). WriteTimeout is exact.
type Options struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// H2C, if true, also serves cleartext HTTP/2 with prior knowledge (the
	// client starts with the HTTP/2 preface; there is no "Upgrade: h2c"
	// dance) on the same listener as HTTP/1.1. False serves HTTP/1.1 only.
	H2C bool
	// TLS, if set, makes the listener serve HTTPS with this configuration
	// (its certificate typically from GetCertificate, so that it can change
	// without a restart), offering HTTP/2 and HTTP/1.1 by ALPN ("h2",
	// "http/1.1"). H2C is then ignored: there is no cleartext on the port.
	// The server does not modify it.
	TLS *tls.Config
	// KeepConnectionsWhileDraining, if true, leaves responses unmarked while
	// draining: keep-alive connections stay open until Shutdown closes them.
	// The default (false) is what a rolling update needs; true exists to
	// measure what "Connection: close" buys.
	KeepConnectionsWhileDraining bool
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
	name   string
	ln     net.Listener
	srv    *http.Server
	logger *slog.Logger
	conns  *conns

	// cancelRequests cancels the base context of every request.
	cancelRequests context.CancelFunc

	inFlight atomic.Int64
	arrivals atomic.Uint64
	clock    stopwatch.Epoch // times requests
	draining atomic.Bool
	// closeOnDrain: responses carry "Connection: close" once draining.
	closeOnDrain bool

	shuttingDown chan struct{}
	shutdownOnce sync.Once
}

// Listen binds addr now, so that a bind failure is returned to the caller
// before anything reports ready. name labels the server in logs ("http",
// "admin"). The server does not accept requests until Serve is called.
func Listen(name, addr string, h http.Handler, o Options) (*Server, error) {
	// net.Listen does exactly this; the context only bounds resolving addr.
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s server: %w", addr, name, err)
	}
	// Request contexts derive from this context, never from the signal
	// context: a SIGTERM must not cancel requests that are still being served.
	base, cancel := context.WithCancel(context.Background())
	shuttingDown := make(chan struct{})
	s := &Server{name: name, ln: ln, logger: o.Logger, cancelRequests: cancel, shuttingDown: shuttingDown, clock: stopwatch.New(),
		closeOnDrain: !o.KeepConnectionsWhileDraining,
		conns: &conns{open: make(map[*conn]struct{}), shutdown: shuttingDown, h2c: o.H2C && o.TLS == nil,
			sweeper: newDeadlineSweeper(sweepTick(shortestPositive(o.ReadHeaderTimeout, o.ReadTimeout, o.IdleTimeout)))}}
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
		ConnContext:       connContext,
		ConnState:         s.conns.connState,
	}
	switch {
	case o.TLS != nil:
		// Serve adds "h2" and "http/1.1" to a copy's NextProtos from these.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		s.srv.Protocols = &p
		s.srv.TLSConfig = o.TLS
	case o.H2C:
		// net/http's own HTTP/2 server, not golang.org/x/net/http2/h2c: its
		// connections stay known to Shutdown, which sends them GOAWAY and
		// waits for their streams (golang/go#26682).
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.srv.Protocols = &p
	}
	if o.Logger != nil {
		s.srv.ErrorLog = slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)
	}
	// net/http runs this only after it has stopped serving new requests.
	s.srv.RegisterOnShutdown(func() {
		s.conns.shutdownBegan.Store(true)
		s.shutdownOnce.Do(func() { close(s.shuttingDown) })
	})
	return s, nil
}

// Addr is the address the listener is bound to (with the real port when
// the configured port was 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until Shutdown or Close. It returns nil after
// Shutdown or Close, and the error otherwise.
func (s *Server) Serve() error {
	s.conns.sweeper.launch(s.conns)
	serve := s.srv.Serve
	if s.srv.TLSConfig != nil {
		// The certificate comes from TLSConfig (GetCertificate), not files.
		serve = func(l net.Listener) error { return s.srv.ServeTLS(l, "", "") }
	}
	if err := serve(listener{s.ln, s.conns}); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s on %s: %w", s.name, s.Addr(), err)
	}
	return nil
}

// StartDraining makes every later response carry "Connection: close", so
// keep-alive clients and proxies open new connections (to other pods)
// instead of reusing this one. On an HTTP/2 connection net/http turns that
// header into a graceful GOAWAY: streams in flight complete, and the client
// opens a new connection for its next request. The listener keeps accepting.
// With Options.KeepConnectionsWhileDraining responses stay unmarked.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Draining reports whether StartDraining was called.
func (s *Server) Draining() bool { return s.draining.Load() }

// InFlight is the number of requests being served now.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Arrivals is the number of requests received since start; it only grows.
func (s *Server) Arrivals() uint64 { return s.arrivals.Load() }

// ErrCut is wrapped by the error of Shutdown when it cut requests.
var ErrCut = errors.New("requests cut")

// Shutdown stops accepting, closes idle connections and waits until ctx ends
// for requests in flight, for hijacked connections to be closed by their
// handlers and for LongLived registrations to be done. margin before ctx's
// deadline it cancels every request context so handlers can still return
// cleanly. When ctx ends first, it closes every remaining connection.
//
// On HTTP/2 connections net/http sends a graceful GOAWAY and waits for
// their open streams. A connection that finishes its preface after that
// GOAWAY sweep (golang/go#81153) is served; net/http sends it a GOAWAY when
// its open streams reach zero, or, if it opens no stream, it holds Shutdown
// until the deadline and is then closed (it lost nothing: not counted).
//
// cut is the number of HTTP/1 connections on which a request or a hijacked
// connection was lost, plus the number of HTTP/2 streams that were lost
// (a stream counts from the start of its handler to its return; a stream
// refused by the GOAWAY was never served, and the client may retry it):
//   - at the deadline: a request being served, or whose header net/http has
//     begun to read (at least one byte); a hijacked connection still open;
//     a LongLived registration not done. A connection that sent no request
//     yet, or is idle between requests, loses nothing: it is closed, logged
//     at Info with its number, and not counted.
//   - before the deadline: net/http does not serve a request whose header it
//     finishes reading after Shutdown began (it closes the connection), and
//     it closes keep-alive connections idle when Shutdown begins; a request
//     net/http had begun to read on either is counted. (A request whose first
//     bytes arrive in the instant net/http begins to shut down, before
//     RegisterOnShutdown hooks run, can be missed.)
//
// On HTTP/2 the deadline counts every stream whose handler has not returned
// (at least one per connection with a LongLived registration not done); a
// connection with none loses nothing and is not counted.
//
// With TLS the same holds, HTTP/2 being told apart by ALPN; but a request
// cannot be seen under the encryption before net/http reads its header, so
// a connection counts as begun from its first handshake byte: one still in
// its handshake, or set up with no request yet, is counted as cut at the
// deadline (an overcount, never an undercount).
//
// Each HTTP/1 connection is counted at most once. err wraps ErrCut if and only if
// cut > 0, and then also ctx's error if the deadline was reached; without a
// cut, err is non-nil only if closing the listener failed.
func (s *Server) Shutdown(ctx context.Context, margin time.Duration) (cut int, err error) {
	// Read deadlines expire until the last connection is gone.
	defer s.conns.sweeper.halt()
	if deadline, ok := ctx.Deadline(); ok {
		t := time.AfterFunc(time.Until(deadline)-margin, s.cancelRequests)
		defer t.Stop()
	}
	// Shutdown calls the RegisterOnShutdown hook, which tells long-lived
	// connections to finish; it does not wait for hijacked connections, so
	// we do below.
	// net/http closes idle keep-alive connections at once. A client may be
	// sending on one at that moment: HTTP/1.1 cannot tell it whether the
	// request was seen (RFC 9112 section 9.3.1), and only a client retry
	// saves it. Log how many were exposed; "Connection: close" during the
	// pre-stop delay leaves only connections idle through the whole delay.
	if s.logger != nil {
		s.logger.Info("closing idle keep-alive connections", "server", s.name, "connections", s.conns.idleHTTP1())
	}
	var ctxErr, closeErr error
	if err := s.srv.Shutdown(ctx); err != nil && errors.Is(err, ctx.Err()) {
		ctxErr = err
	} else {
		closeErr = err // closing the listener failed; the drain went on
		ctxErr = s.waitBusy(ctx)
	}
	if ctxErr != nil {
		if unused := s.conns.cutAtDeadline(); unused > 0 && s.logger != nil {
			s.logger.Info("closed connections that had sent no request", "server", s.name, "connections", unused)
		}
		// Shutdown closed the listener already; closing it again is no error.
		if err := s.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			closeErr = errors.Join(closeErr, err)
		}
	}
	s.cancelRequests()
	if closeErr != nil {
		closeErr = fmt.Errorf("close %s server: %w", s.name, closeErr)
	}
	cut = int(s.conns.cut.Load())
	if cut == 0 {
		return 0, closeErr
	}
	if ctxErr != nil {
		err = fmt.Errorf("shut down %s server: %w: %d at the deadline: %w", s.name, ErrCut, cut, ctxErr)
	} else {
		err = fmt.Errorf("shut down %s server: %w: %d dropped by net/http after shutdown began", s.name, ErrCut, cut)
	}
	return cut, errors.Join(err, closeErr)
}

// waitBusy waits for hijacked connections and LongLived registrations. It
// polls, rather than using a WaitGroup, because handlers may still hijack or
// register while Shutdown is waiting.
func (s *Server) waitBusy(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.conns.busy() > 0 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Close closes the listener and every connection at once, hijacked ones
// included.
func (s *Server) Close() error {
	s.cancelRequests()
	err := s.srv.Close()
	s.conns.closeHijacked()
	s.conns.sweeper.halt()
	if err != nil {
		return fmt.Errorf("close %s server: %w", s.name, err)
	}
	return nil
}

// LongLived tells a handler when its server shuts down and lets it hold
// Shutdown for work that outlives the handler, on the request's connection
// (ctx is the request context or one derived from it). shutdown is closed
// when Shutdown begins: the handler should then finish and close. done must
// be called once the work is finished; later calls are no-ops.
//
// A hijacked connection needs no registration: Shutdown waits for it until
// its handler closes it, whichever way the handler reached Hijack, and in
// any order relative to LongLived. With a registration, Shutdown waits for
// both the Close and done. Either way the connection is counted at most once
// as cut at the deadline, and a hijacked connection still open then is
// closed by Shutdown. Outside a server's request context, LongLived returns
// a nil channel and a no-op.
func LongLived(ctx context.Context) (shutdown <-chan struct{}, done func()) {
	c := requestConn(ctx)
	if c == nil {
		return nil, func() {}
	}
	cs := c.cs
	cs.mu.Lock()
	c.longLived++
	cs.mu.Unlock()
	var once sync.Once
	return cs.shutdown, func() {
		once.Do(func() {
			cs.mu.Lock()
			c.longLived--
			cs.finishLocked(c)
			cs.mu.Unlock()
		})
	}
}
