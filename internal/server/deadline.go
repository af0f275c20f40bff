package server

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Read deadlines, coarse.
//
// net/http sets a connection's read deadline six times per keep-alive
// HTTP/1.1 request: the idle deadline (IdleTimeout), the header deadline
// (ReadHeaderTimeout), the whole-request deadline (ReadTimeout, zero by
// default), twice around its background read, and once more to clear it.
// With kubeskel's defaults three of those add, move and delete a runtime
// timer: in callgrind, kubeskel's two settings alone cost bare net/http 5%
// more instructions per request (BENCHMARKS.md). A deadline that far away
// needs no timer of its own: each connection keeps it in one atomic word,
// and one sweeper per server applies the deadlines that have passed to
// their connections, every tick. The connection's own deadline is then set
// only when a deadline is due within two ticks (net/http's abort of its
// background read is one: a deadline in the past, which must interrupt the
// read at once), and a zero deadline costs nothing when none is set.
//
// What that changes: a read deadline at least two ticks away expires when
// the first sweep after it runs, up to one tick (plus scheduling delay)
// late, never early; the blocked read then fails with
// os.ErrDeadlineExceeded, as with the connection's own deadline. A read
// started after such a deadline passed but before the sweep blocks until
// the sweep. Write deadlines, and read deadlines on hijacked connections
// (whose owner is the handler), are the connection's own.

// rdFired is a conn's rd once the sweeper applied it: the connection's own
// read deadline is in the past until the next SetReadDeadline.
const rdFired = -1

// aLongTimeAgo is a deadline that has passed: it makes blocked reads fail
// at once (net/http uses the same value).
var aLongTimeAgo = time.Unix(1, 0)

// sweepTick is the sweeper's period for a server whose shortest read
// timeout is shortest: a tenth of it, within [1 ms, 500 ms]. Zero (no
// timeout) gives the longest tick.
func sweepTick(shortest time.Duration) time.Duration {
	const lo, hi = time.Millisecond, 500 * time.Millisecond
	if shortest <= 0 {
		return hi
	}
	return min(max(shortest/10, lo), hi)
}

// shortestPositive is the shortest of ds that is positive, 0 if none is.
func shortestPositive(ds ...time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		if d > 0 && (m == 0 || d < m) {
			m = d
		}
	}
	return m
}

// deadlineSweeper applies the coarse read deadlines of one server's
// connections. Its clock is monotonic: deadlines are kept as durations
// since epoch.
type deadlineSweeper struct {
	epoch time.Time
	tick  time.Duration
	// swept is the time of the last sweep, since epoch: a deadline earlier
	// than two ticks after it goes on the connection itself.
	swept atomic.Int64

	start, stop sync.Once
	done        chan struct{}
}

func newDeadlineSweeper(tick time.Duration) *deadlineSweeper {
	return &deadlineSweeper{epoch: time.Now(), tick: tick, done: make(chan struct{})}
}

// run sweeps cs every tick until halt. Call it at most once, in its own
// goroutine.
func (ds *deadlineSweeper) run(cs *conns) {
	t := time.NewTicker(ds.tick)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			cs.sweep(int64(time.Since(ds.epoch)))
		case <-ds.done:
			return
		}
	}
}

// launch starts the sweeper for cs the first time it is called, unless
// halt was called first.
func (ds *deadlineSweeper) launch(cs *conns) {
	ds.start.Do(func() {
		select {
		case <-ds.done:
		default:
			go ds.run(cs)
		}
	})
}

// halt stops the sweeper; it is safe to call more than once. Coarse
// deadlines set after it never expire.
func (ds *deadlineSweeper) halt() { ds.stop.Do(func() { close(ds.done) }) }

// sweep applies to their connections the coarse read deadlines that are
// due at now (since the sweeper's epoch).
func (cs *conns) sweep(now int64) {
	cs.sweeper.swept.Store(now)
	type dueConn struct {
		c  *conn
		rd int64
	}
	var due []dueConn
	cs.mu.Lock()
	for c := range cs.open {
		if rd := c.rd.Load(); rd > 0 && rd <= now && !c.closed {
			due = append(due, dueConn{c, rd})
		}
	}
	cs.mu.Unlock()
	for _, d := range due {
		d.c.expireRead(d.rd)
	}
}

// expireRead applies the coarse read deadline rd, unless it was replaced
// since the sweep read it.
func (c *conn) expireRead(rd int64) {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	if c.rd.CompareAndSwap(rd, rdFired) {
		c.rdArmed.Store(true)
		// An error means the connection is closed: nothing to interrupt.
		_ = c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

// SetReadDeadline keeps a deadline at least two sweeper ticks away as a
// coarse deadline (see above) and sets any other on the connection itself.
// It is safe for concurrent use; as with any net.Conn, concurrent calls take
// effect in some order.
func (c *conn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		if c.rd.Load() == 0 && !c.rdArmed.Load() {
			return nil // no deadline is set: nothing to clear
		}
		return c.setReadDeadlineLocked(time.Time{}, 0)
	}
	ds := c.cs.sweeper
	if ds != nil && http.ConnState(c.state.Load()) != http.StateHijacked {
		if rd := int64(t.Sub(ds.epoch)); rd >= ds.swept.Load()+2*int64(ds.tick) {
			// The swap keeps the sweeper from applying an older deadline; if
			// it applied one already, or one is set on the connection, that
			// one must go.
			if old := c.rd.Swap(rd); old != rdFired && !c.rdArmed.Load() {
				return nil
			}
			return c.setReadDeadlineLocked(time.Time{}, rd)
		}
	}
	return c.setReadDeadlineLocked(t, 0)
}

// setReadDeadlineLocked sets the coarse deadline to rd (0: none) and the
// connection's own to t (zero: none), after any sweep applying a deadline
// to c has finished.
func (c *conn) setReadDeadlineLocked(t time.Time, rd int64) error {
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.rd.Store(rd)
	if t.IsZero() && !c.rdArmed.Load() {
		return nil
	}
	c.rdArmed.Store(!t.IsZero())
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the connection's write deadline; clearing a deadline
// that is not set costs nothing (net/http clears it after every request).
func (c *conn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && !c.wdArmed.Load() {
		return nil
	}
	c.dlMu.Lock()
	defer c.dlMu.Unlock()
	c.wdArmed.Store(!t.IsZero())
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines, as net.Conn's does.
func (c *conn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}
