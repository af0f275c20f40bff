package server

import (
	"context"
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

	shutdown <-chan struct{} // closed when Shutdown begins

	// shutdownBegan is set by the server's RegisterOnShutdown hook, which
	// net/http runs only after it stopped serving new requests.
	shutdownBegan atomic.Bool
	cut           atomic.Int64 // connections counted as cut, each once
}

// conn is an accepted connection. It is what net/http holds as the
// connection, so it is also what Hijack returns, whichever way the handler
// reached it.
type conn struct {
	net.Conn
	cs *conns

	state atomic.Int64 // the last http.ConnState (an int: Int64 holds every value)
	began atomic.Bool  // a request byte was read while the state was StateNew
	cut   atomic.Bool  // counted in cs.cut
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
	if n > 0 && !c.began.Load() && http.ConnState(c.state.Load()) == http.StateNew {
		c.began.Store(true)
	}
	return n, err
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

// markCut counts c as cut, once.
func (c *conn) markCut() {
	if c.cut.CompareAndSwap(false, true) {
		c.cs.cut.Add(1)
	}
}

// connState is the http.Server.ConnState hook.
func (cs *conns) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	c.state.Store(int64(st))
	switch st {
	case http.StateActive:
		// net/http sets StateActive once it has read a request's header
		// (or failed to, after reading part of it), then returns without
		// serving it if Shutdown has begun: the client began a request and
		// gets no response.
		if cs.shutdownBegan.Load() {
			c.markCut()
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

// cutAtDeadline counts every connection the deadline cuts: a request being
// read or served, a request of which part was read, a hijacked connection
// still open, a LongLived registration not done. It closes the hijacked ones,
// which net/http no longer knows, and returns the number of connections that
// had sent no request (new or idle): closing those loses nothing.
func (cs *conns) cutAtDeadline() (unused int) {
	var hijacked []*conn
	cs.mu.Lock()
	for c := range cs.open {
		if c.closed && c.longLived == 0 {
			continue
		}
		switch st := http.ConnState(c.state.Load()); {
		case c.busyLocked(), st == http.StateActive, st == http.StateNew && c.began.Load():
			c.markCut()
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
	if c, ok := nc.(*conn); ok {
		return context.WithValue(ctx, connKey{}, c)
	}
	return ctx
}

// requestConn returns the tracked connection of a request context, or nil.
func requestConn(ctx context.Context) *conn {
	c, _ := ctx.Value(connKey{}).(*conn)
	return c
}
