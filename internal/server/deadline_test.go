package server

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// pipeConn returns a tracked conn over one end of a net.Pipe, with a
// sweeper of the given tick that never runs by itself (the test sweeps),
// and the other end.
func pipeConn(t *testing.T, tick time.Duration) (*conns, *conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cs := &conns{open: make(map[*conn]struct{}), sweeper: newDeadlineSweeper(tick)}
	c := &conn{Conn: a, cs: cs}
	cs.open[c] = struct{}{}
	return cs, c, b
}

// readErr reads one byte from c in the background.
func readErr(c net.Conn) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		ch <- err
	}()
	return ch
}

// stillBlocked waits d for a read result: ok if none arrives, else the
// read's error.
func stillBlocked(ch <-chan error, d time.Duration) (err error, ok bool) {
	select {
	case err := <-ch:
		return err, false
	case <-time.After(d):
		return nil, true
	}
}

func setRead(t *testing.T, c *conn, d time.Time) {
	t.Helper()
	if err := c.SetReadDeadline(d); err != nil {
		t.Fatalf("SetReadDeadline(%v): %v", d, err)
	}
}

func setBoth(t *testing.T, c *conn, d time.Time) {
	t.Helper()
	if err := c.SetDeadline(d); err != nil {
		t.Fatalf("SetDeadline(%v): %v", d, err)
	}
}

func TestCoarseReadDeadline(t *testing.T) {
	const tick = time.Millisecond
	at := func(cs *conns, d time.Duration) time.Time { return cs.sweeper.epoch.Add(d) }
	tests := []struct {
		name string
		// run sets deadlines and sweeps; it returns the read to check.
		run      func(t *testing.T, cs *conns, c *conn) <-chan error
		deadline bool // the read fails with os.ErrDeadlineExceeded; else it stays blocked
	}{
		{"due deadline applied by the sweep", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			ch := readErr(c)
			cs.sweep(int64(10 * time.Second))
			return ch
		}, true},
		{"sweep before the deadline leaves the read", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			ch := readErr(c)
			cs.sweep(int64(10*time.Second) - 1)
			return ch
		}, false},
		{"no sweep, no expiry: the sweeper is what applies it", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, time.Now().Add(5*time.Millisecond))
			return readErr(c)
		}, false},
		{"replaced deadline is not applied", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			setRead(t, c, at(cs, 20*time.Second))
			ch := readErr(c)
			cs.sweep(int64(15 * time.Second))
			return ch
		}, false},
		{"cleared deadline is not applied", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			setRead(t, c, time.Time{})
			ch := readErr(c)
			cs.sweep(int64(15 * time.Second))
			return ch
		}, false},
		{"applied deadline cleared: reads block again", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			cs.sweep(int64(10 * time.Second))
			setRead(t, c, time.Time{})
			return readErr(c)
		}, false},
		{"applied deadline extended: reads block until the new one", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, at(cs, 10*time.Second))
			cs.sweep(int64(10 * time.Second))
			setRead(t, c, at(cs, 20*time.Second))
			ch := readErr(c)
			cs.sweep(int64(15 * time.Second))
			return ch
		}, false},
		{"deadline in the past: at once, without a sweep", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, aLongTimeAgo)
			return readErr(c)
		}, true},
		{"deadline within two ticks of the last sweep: the connection's own", func(t *testing.T, cs *conns, c *conn) <-chan error {
			cs.sweep(int64(time.Since(cs.sweeper.epoch)))
			setRead(t, c, time.Now().Add(tick))
			return readErr(c)
		}, true},
		{"own deadline cleared by a zero one", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, aLongTimeAgo)
			setRead(t, c, time.Time{})
			return readErr(c)
		}, false},
		{"own deadline replaced by a coarse one", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setRead(t, c, aLongTimeAgo)
			setRead(t, c, at(cs, 10*time.Second))
			return readErr(c)
		}, false},
		{"hijacked: the connection's own, without a sweep", func(t *testing.T, cs *conns, c *conn) <-chan error {
			c.state.Store(int64(http.StateHijacked))
			setRead(t, c, time.Now().Add(5*time.Millisecond))
			return readErr(c)
		}, true},
		{"SetDeadline sets the read deadline too", func(t *testing.T, cs *conns, c *conn) <-chan error {
			setBoth(t, c, at(cs, 10*time.Second))
			ch := readErr(c)
			cs.sweep(int64(10 * time.Second))
			return ch
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs, c, _ := pipeConn(t, tick)
			ch := tt.run(t, cs, c)
			if !tt.deadline {
				if err, ok := stillBlocked(ch, 50*time.Millisecond); !ok {
					t.Fatalf("read returned (%v); want it still blocked", err)
				}
				return
			}
			select {
			case err := <-ch:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read error %v, want os.ErrDeadlineExceeded", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("read still blocked 5 s later; want os.ErrDeadlineExceeded")
			}
		})
	}
}

func TestWriteDeadlineSetAndCleared(t *testing.T) {
	_, c, peer := pipeConn(t, time.Millisecond)
	go io.Copy(io.Discard, peer)
	if err := c.SetWriteDeadline(aLongTimeAgo); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write after clearing the deadline: %v", err)
	}
}

// TestServerTimeouts checks that ReadHeaderTimeout, IdleTimeout and
// ReadTimeout are enforced through the coarse deadlines: never before the
// timeout, at most a tick and the slack later. With the sweeper stopped
// (the control), nothing cuts the connection.
func TestServerTimeouts(t *testing.T) {
	const (
		header = 400 * time.Millisecond
		idle   = 600 * time.Millisecond
		read   = 500 * time.Millisecond
		slack  = 1500 * time.Millisecond // scheduling under -race on a busy machine
	)
	opts := Options{ReadHeaderTimeout: header, IdleTimeout: idle, ReadTimeout: read}
	const request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name    string
		timeout time.Duration
		// begin writes to conn; the timeout runs from no earlier than its
		// start. It reads what must be read first.
		begin func(t *testing.T, conn net.Conn, br *bufio.Reader)
	}{
		{"header timeout, first request", header, func(t *testing.T, conn net.Conn, _ *bufio.Reader) {
			write(t, conn, "GET / HTTP/1.1\r\nHost: x\r\n")
		}},
		{"header timeout, keep-alive request", header, func(t *testing.T, conn net.Conn, br *bufio.Reader) {
			write(t, conn, request)
			readResponse(t, br)
			write(t, conn, "GET / HTTP/1.1\r\n")
		}},
		{"idle timeout", idle, func(t *testing.T, conn net.Conn, br *bufio.Reader) {
			write(t, conn, request)
			readResponse(t, br)
		}},
		{"read timeout, request body", read, func(t *testing.T, conn net.Conn, _ *bufio.Reader) {
			write(t, conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
		}},
	}
	for _, control := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name
			if control {
				name = "control, sweeper stopped: " + name
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				s := listenAndServe(t, readAllOrAbort, opts, func(s *Server) {
					if control {
						s.conns.sweeper.halt()
					}
				})
				addr := s.Addr().String()
				start := time.Now()
				conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				tt.begin(t, conn, br)
				limit := tt.timeout + sweepTick(header) + slack
				if control {
					limit = tt.timeout + 10*sweepTick(header)
				}
				if err := conn.SetReadDeadline(start.Add(limit)); err != nil {
					t.Fatal(err)
				}
				_, err = br.ReadByte()
				elapsed := time.Since(start)
				switch {
				case control && errors.Is(err, os.ErrDeadlineExceeded):
					// Open past the timeout: the sweeper is what cut it.
				case control:
					t.Fatalf("connection ended after %v (%v) with the sweeper stopped; want it open past %v", elapsed, err, limit)
				case errors.Is(err, os.ErrDeadlineExceeded):
					t.Fatalf("connection still open %v after it began; want it closed within %v", elapsed, limit)
				case err == nil:
					t.Fatalf("server sent data after %v; want it to close the connection", elapsed)
				case elapsed < tt.timeout:
					t.Fatalf("connection closed after %v (%v); want no earlier than %v", elapsed, err, tt.timeout)
				}
			})
		}
	}
}

// readAllOrAbort reads the whole body and answers "ok"; if the body cannot
// be read, it aborts the response: net/http then closes the connection
// without one.
var readAllOrAbort = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		panic(http.ErrAbortHandler)
	}
	io.WriteString(w, "ok")
})

func write(t *testing.T, conn net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(conn, s); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

func readResponse(t *testing.T, br *bufio.Reader) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ok") {
		t.Fatalf("response %d %q, %v; want 200 ok", resp.StatusCode, body, err)
	}
}
