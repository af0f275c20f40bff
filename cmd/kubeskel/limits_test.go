package main

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

// closedAfter reads conn until the server closes it, at most for 8s, and
// returns what was read and how long after since the close came. A
// connection still open after 8s fails the test.
func closedAfter(t *testing.T, conn net.Conn, since time.Time) (string, time.Duration) {
	t.Helper()
	noErr(t, conn.SetReadDeadline(time.Now().Add(8*time.Second)))
	b, err := io.ReadAll(conn)
	took := time.Since(since)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open %s later (read %q)", took.Round(time.Millisecond), b)
	}
	return string(b), took
}

// dial opens a raw connection to the traffic port.
func dial(t *testing.T, p *process) net.Conn {
	t.Helper()
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestServerLimits: the APP_* server limits reach the traffic server of the
// binary. Each limit is set to 1s where the default is far longer (or none),
// so a limit that is not wired leaves the connection open past the 8s bound.
func TestServerLimits(t *testing.T) {
	// The close must come after the limit, and before a bound that a
	// loaded machine still meets but the defaults (5s, 620s, none) do not.
	within := func(t *testing.T, what string, took, limit, bound time.Duration) {
		t.Helper()
		if took < limit-100*time.Millisecond || took > bound {
			t.Errorf("%s after %s, want between %s and %s", what, took.Round(time.Millisecond), limit, bound)
		}
	}

	t.Run("read header timeout cuts a slowloris client", func(t *testing.T) {
		p := start(t, "APP_READ_HEADER_TIMEOUT=1s")
		conn := dial(t, p)
		sent := time.Now()
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		got, took := closedAfter(t, conn, sent)
		within(t, "connection with unfinished headers closed", took, time.Second, 4*time.Second)
		if strings.Contains(got, "200 OK") {
			t.Errorf("got a response %q to unfinished headers", got)
		}
	})

	t.Run("idle timeout closes a keep-alive connection", func(t *testing.T) {
		p := start(t, "APP_IDLE_TIMEOUT=1s")
		conn := dial(t, p)
		io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		noErr(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered := time.Now()
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("GET / = %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		noErr(t, conn.SetReadDeadline(time.Now().Add(8*time.Second)))
		rest, err := io.ReadAll(br)
		took := time.Since(answered)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("idle connection still open %s after the response", took.Round(time.Millisecond))
		}
		within(t, "idle keep-alive connection closed", took, time.Second, 4*time.Second)
		if len(rest) != 0 {
			t.Errorf("idle connection sent %q", rest)
		}
	})

	t.Run("read timeout cuts a trickling body", func(t *testing.T) {
		p := start(t, "APP_READ_TIMEOUT=1s")
		conn := dial(t, p)
		sent := time.Now()
		io.WriteString(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			// One byte every 100ms, for at most 10s: the body never ends
			// before the limit.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for range 100 {
				select {
				case <-stop:
					return
				case <-tick.C:
					if _, err := conn.Write([]byte("x")); err != nil {
						return
					}
				}
			}
		}()
		got, took := closedAfter(t, conn, sent)
		within(t, "request with a trickling body cut", took, time.Second, 4*time.Second)
		if strings.HasPrefix(got, "HTTP/1.1 200") {
			t.Errorf("trickled request answered %q, want it cut", got)
		}
	})

	t.Run("write timeout cuts a slow response", func(t *testing.T) {
		p := start(t, "APP_WRITE_TIMEOUT=1s", "APP_SLOW_MAX=30s")
		// Control: a response that fits in the write timeout is answered.
		if code, _, body := get(t, p.url(false, "/slow?d=10ms")); code != 200 || body != "slept 10ms\n" {
			t.Fatalf("GET /slow?d=10ms = %d %q, want 200", code, body)
		}
		conn := dial(t, p)
		sent := time.Now()
		io.WriteString(conn, "GET /slow?d=2500ms HTTP/1.1\r\nHost: x\r\n\r\n")
		got, took := closedAfter(t, conn, sent)
		// net/http does not stop the handler at the deadline: the write it
		// makes when done fails, and the connection is closed unanswered.
		if got != "" {
			t.Errorf("response past the write timeout = %q, want the connection closed without one", got)
		}
		within(t, "slow response cut", took, time.Second, 7*time.Second)
	})

	t.Run("max header bytes", func(t *testing.T) {
		// net/http reads at most MaxHeaderBytes + 4096 bytes of request
		// line and headers (initialReadLimitSize, "bufio slop"): with h2c
		// off a head of exactly 8192 bytes is read whole, one more byte hits
		// the limit. With h2c on (the default) net/http first peeks at the
		// 14 bytes of "PRI * HTTP/2.0" outside that limit, so the boundary
		// is 14 bytes higher.
		request := func(size int) string {
			head := "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: "
			return head + strings.Repeat("a", size-len(head)-len("\r\n\r\n")) + "\r\n\r\n"
		}
		const limit = 4096 + 4096
		for _, mode := range []struct {
			http2 string
			limit int
		}{
			{"off", limit},
			{"h2c", limit + len("PRI * HTTP/2.0")},
		} {
			p := start(t, "APP_MAX_HEADER_BYTES=4096", "APP_HTTP2="+mode.http2)
			for _, tt := range []struct {
				size int
				want string
			}{
				{mode.limit, "HTTP/1.1 200 "},
				{mode.limit + 1, "HTTP/1.1 431 "},
				{mode.limit + 100, "HTTP/1.1 431 "},
			} {
				raw := request(tt.size)
				if len(raw) != tt.size {
					t.Fatalf("request is %d bytes, want %d", len(raw), tt.size)
				}
				conn := dial(t, p)
				noErr(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
				io.WriteString(conn, raw)
				status, err := bufio.NewReader(conn).ReadString('\n')
				if !strings.HasPrefix(status, tt.want) {
					t.Errorf("APP_HTTP2=%s, request head of %d bytes: status %q (%v), want %q", mode.http2, tt.size, status, err, tt.want)
				}
			}
		}
		// Control: the default limit (1 MiB) takes the larger head.
		def := start(t)
		conn := dial(t, def)
		noErr(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
		io.WriteString(conn, request(limit+100))
		if status, err := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(status, "HTTP/1.1 200 ") {
			t.Errorf("with the default limit, head of %d bytes: status %q (%v), want 200", limit+100, status, err)
		}
	})
}
