package server

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// conns tracks every connection of one server from accept to close, so that
// Shutdown can tell what its deadline really cut: net/http reports only that
// some connection was not idle, and forgets hijacked connections.
type conns struct {
	mu   sync.Mutex
	open map[*conn]struct{} // accepted and not yet finished (see finishLocked)

	shutdown <-chan struct{}  // closed when Shutdown begins
	h2c      bool             // the server serves cleartext HTTP/2 too
	sweeper  *deadlineSweeper // applies coarse read deadlines; nil: none are coarse

	// shutdownBegan is set by the server's RegisterOnShutdown hook, which
	// net/http runs only after it stopped serving new requests.
	shutdownBegan atomic.Bool
	cut           atomic.Int64 // HTTP/1 connections and HTTP/2 streams counted as cut
}

// http2Preface is what a client sends first on a cleartext HTTP/2
// connection with prior knowledge.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// conn is an accepted connection. It is what net/http holds as the
// connection, so it is also what Hijack returns, whichever way the handler
// reached it.
type conn struct {
	net.Conn
	cs *conns

	state atomic.Int64 // the last http.ConnState (an int: Int64 holds every value)
	began atomic.Bool  // a request byte was read while the state was StateNew
	cut   atomic.Bool  // counted in cs.cut
	// http2 is set once the connection sent the whole HTTP/2 preface;
	// prefaceSeen is how much of it the first reads matched (-1: not
	// HTTP/2). Only the goroutine reading in StateNew touches prefaceSeen.
	http2       atomic.Bool
	prefaceSeen int
	// alpnSeen is set once http2 was set from a TLS handshake's ALPN.
	alpnSeen atomic.Bool
	// streams is the number of requests in flight on an HTTP/2 connection,
	// counted by the traffic middleware from handler start to return.
	streams atomic.Int64
	// Read and write deadlines (deadline.go): rd is the coarse read
	// deadline (since the sweeper's epoch; 0: none; rdFired: applied);
	// rdArmed and wdArmed say whether the connection itself has a read or
	// write deadline. dlMu orders the changes that set the connection's own.
	rd      atomic.Int64
	rdArmed atomic.Bool
	wdArmed atomic.Bool
	dlMu    sync.Mutex
	// Guarded by cs.mu.
	closed    bool
	longLived int // LongLived registrations not yet done
}

// listener wraps every accepted connection in a conn.
type listener struct {
	net.Listener
	cs *conns
}

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &conn{Conn: c, cs: l.cs}
	l.cs.mu.Lock()
	l.cs.open[tc] = struct{}{}
	l.cs.mu.Unlock()
	return tc, nil
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && http.ConnState(c.state.Load()) == http.StateNew {
		if !c.began.Load() {
			c.began.Store(true)
		}
		if c.cs.h2c {
			c.matchPreface(b[:n])
		}
	}
	return n, err
}

// matchPreface follows the first bytes of the connection, which net/http
// reads exactly up to the end of the HTTP/2 preface before it hands the
// connection to its HTTP/2 server (and before any ConnState hook runs for
// it), and sets c.http2 once they are the whole preface.
func (c *conn) matchPreface(b []byte) {
	seen := c.prefaceSeen
	if seen < 0 || seen == len(http2Preface) {
		return
	}
	k := min(len(b), len(http2Preface)-seen)
	if string(b[:k]) != http2Preface[seen:seen+k] {
		c.prefaceSeen = -1
		return
	}
	c.prefaceSeen = seen + k
	if c.prefaceSeen == len(http2Preface) {
		c.http2.Store(true)
	}
}

// Close closes the connection and, the first time, ends its tracking. It is
// safe to call more than once and from several goroutines.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.cs.mu.Lock()
	c.closed = true
	c.cs.finishLocked(c)
	c.cs.mu.Unlock()
	return err
}

// ReadFrom and CloseWrite keep net/http's sendfile path and its lingering
// close working through the wrapper.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn returns the connection the listener accepted, for handlers that
// need its concrete type after a hijack (*net.TCPConn).
func (c *conn) NetConn() net.Conn { return c.Conn }

// markCut counts n as cut on c, once per connection.
func (c *conn) markCut(n int64) {
	if c.cut.CompareAndSwap(false, true) {
		c.cs.cut.Add(n)
	}
}

// tracked returns the conn under nc: nc itself in cleartext, the conn that
// a *tls.Conn wraps with TLS (net/http holds the *tls.Conn).
func tracked(nc net.Conn) (c *conn, tc *tls.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
		c, _ := nc.(*conn)
		return c, tc
	}
	c, _ = nc.(*conn)
	return c, nil
}

// connState is the http.Server.ConnState hook.
func (cs *conns) connState(nc net.Conn, st http.ConnState) {
	c, tc := tracked(nc)
	if c == nil {
		return
	}
	if tc != nil && (st == http.StateActive || st == http.StateIdle) && !c.alpnSeen.Load() {
		// The handshake is over (net/http runs no other hook before it
		// ends), so the negotiated protocol is known and reading it does
		// not wait. net/http hands an "h2" connection to its HTTP/2 server
		// without a hook; this is its first one.
		c.http2.Store(tc.ConnectionState().NegotiatedProtocol == "h2")
		c.alpnSeen.Store(true)
	}
	c.state.Store(int64(st))
	switch st {
	case http.StateActive:
		// net/http sets StateActive once it has read a request's header
		// (or failed to, after reading part of it), then returns without
		// serving it if Shutdown has begun: the client began a request and
		// gets no response. The HTTP/2 server sets StateActive when a
		// connection has read its preface or opens its first stream, and
		// serves that stream (or, after its GOAWAY, refuses it so the client
		// retries it elsewhere): nothing is lost there.
		if cs.shutdownBegan.Load() && !c.http2.Load() {
			c.markCut(1)
		}
	case http.StateClosed:
		cs.mu.Lock()
		c.closed = true
		cs.finishLocked(c)
		cs.mu.Unlock()
	}
}

// busyLocked reports whether Shutdown must still wait for c beyond what
// http.Server.Shutdown waits for: a hijacked connection still open, or a
// LongLived registration not yet done.
func (c *conn) busyLocked() bool {
	return c.longLived > 0 || (http.ConnState(c.state.Load()) == http.StateHijacked && !c.closed)
}

// finishLocked stops tracking c once it is closed and nothing waits on it.
func (cs *conns) finishLocked(c *conn) {
	if c.closed && c.longLived == 0 {
		delete(cs.open, c)
	}
}

// busy is the number of connections Shutdown still waits for after
// http.Server.Shutdown has returned.
func (cs *conns) busy() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for c := range cs.open {
		if c.busyLocked() {
			n++
		}
	}
	return n
}

// idleHTTP1 is the number of open HTTP/1 keep-alive connections idle
// between requests: the ones http.Server.Shutdown closes at once, racing a
// client that may be sending its next request on one of them.
func (cs *conns) idleHTTP1() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	n := 0
	for c := range cs.open {
		if !c.closed && !c.http2.Load() && http.ConnState(c.state.Load()) == http.StateIdle {
			n++
		}
	}
	return n
}

// cutAtDeadline counts what the deadline cuts: on an HTTP/1 connection, one
// for a request being read or served, a request of which part was read, a
// hijacked connection still open or a LongLived registration not done; on an
// HTTP/2 connection, one per stream whose handler has not returned (at least
// one if a LongLived registration is not done). It closes the hijacked
// connections, which net/http no longer knows, and returns the number of
// connections that lose nothing by being closed (new or idle ones, HTTP/2
// ones without a stream in flight).
func (cs *conns) cutAtDeadline() (unused int) {
	var hijacked []*conn
	cs.mu.Lock()
	for c := range cs.open {
		if c.closed && c.longLived == 0 {
			continue
		}
		if c.http2.Load() {
			n := c.streams.Load()
			if n == 0 && c.longLived > 0 {
				n = 1
			}
			if n > 0 {
				c.markCut(n)
			} else {
				unused++
			}
			continue
		}
		switch st := http.ConnState(c.state.Load()); {
		case c.busyLocked(), st == http.StateActive, st == http.StateNew && c.began.Load():
			c.markCut(1)
		default:
			unused++
		}
		if http.ConnState(c.state.Load()) == http.StateHijacked && !c.closed {
			hijacked = append(hijacked, c)
		}
	}
	cs.mu.Unlock()
	for _, c := range hijacked {
		// The connection is counted as cut already; a Close error (the
		// handler closing it at the same moment) changes nothing for the
		// caller, and the handler's later Close is a no-op.
		_ = c.Close()
	}
	return unused
}

// closeHijacked closes every hijacked connection still open: net/http's
// Close does not know them.
func (cs *conns) closeHijacked() {
	var hijacked []*conn
	cs.mu.Lock()
	for c := range cs.open {
		if http.ConnState(c.state.Load()) == http.StateHijacked && !c.closed {
			hijacked = append(hijacked, c)
		}
	}
	cs.mu.Unlock()
	for _, c := range hijacked {
		// Close is forced teardown: a Close error (the handler closing the
		// connection at the same moment) leaves it closed all the same.
		_ = c.Close()
	}
}

type connKey struct{}

// connContext is the http.Server.ConnContext hook: it lets LongLived and the
// middleware find the connection of a request.
func connContext(ctx context.Context, nc net.Conn) context.Context {
	if c, _ := tracked(nc); c != nil {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// requestConn returns the tracked connection of a request context, or nil.
func requestConn(ctx context.Context) *conn {
	c, _ := ctx.Value(connKey{}).(*conn)
	return c
}
