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
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

// dial opens a raw TCP connection to s, closed when the test ends.
func dial(t *testing.T, s *server.Server) net.Conn {
	t.Helper()
	conn, err := dialContext(t, s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readToEnd reads conn until the server closes it and returns what came; it
// fails the test if the server leaves the connection open for 10s.
func readToEnd(t *testing.T, conn net.Conn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server left the connection open (read %q)", b)
	}
	return string(b)
}

// waitListenerClosed waits until Shutdown has closed s's listener.
func waitListenerClosed(t *testing.T, s *server.Server) {
	t.Helper()
	waitFor(t, "the listener to close", func() bool {
		conn, err := dialContext(t, s.Addr().String())
		if err != nil {
			return true
		}
		conn.Close()
		return false
	})
}

// A connection that sent nothing when the deadline closes it lost nothing:
// Shutdown must not report it as a cut request.
func TestShutdownSilentConnectionNotCut(t *testing.T) {
	logs := &logCapture{}
	for _, traffic := range []bool{true, false} {
		t.Run(fmt.Sprintf("traffic=%v", traffic), func(t *testing.T) {
			o := server.Options{Logger: slog.New(logs)}
			if traffic {
				o.Traffic = &server.Observability{}
			}
			s, _ := serve(t, http.NotFoundHandler(), o)
			conn := dial(t, s)
			// The server has the connection once a request on another
			// connection is answered after it: connections are accepted in
			// order.
			get(t, newClient(t), "http://"+s.Addr().String())

			r := receive(t, "Shutdown to return", shutdownInBackground(t, s, time.Second, 0))
			if r.cut != 0 || r.err != nil {
				t.Errorf("Shutdown() = %d, %v; want 0, nil (the connection never sent a request)", r.cut, r.err)
			}
			if got := readToEnd(t, conn); got != "" {
				t.Errorf("the silent connection received %q, want nothing", got)
			}
		})
	}
	recs := logs.find("closed connections that had sent no request")
	if len(recs) == 0 {
		t.Fatalf("no log of the closed silent connection; all: %+v", logs.all())
	}
	if got, want := recs[0].attrs["connections"], "1"; got != want {
		t.Errorf("logged connections = %s, want %s", got, want)
	}
	if got, want := recs[0].level, slog.LevelInfo; got != want {
		t.Errorf("logged at %v, want %v", got, want)
	}
}

// A client that began a request (part of its headers) and is closed at the
// deadline gets no response: that request was cut.
func TestShutdownHalfSentHeadersCut(t *testing.T) {
	s, _ := serve(t, http.NotFoundHandler(), server.Options{Traffic: &server.Observability{}})
	conn := dial(t, s)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: test\r\n") // no blank line: headers unfinished
	get(t, newClient(t), "http://"+s.Addr().String())     // the server has read it by now
	time.Sleep(100 * time.Millisecond)                    // generous: the bytes are on loopback

	r := receive(t, "Shutdown to return", shutdownInBackground(t, s, time.Second, 0))
	if got, want := r.cut, 1; got != want {
		t.Errorf("Shutdown cut %d, want %d (the half-sent request)", got, want)
	}
	if !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, server.ErrCut) {
		t.Errorf("Shutdown error = %v, want context.DeadlineExceeded and server.ErrCut", r.err)
	}
	if got := readToEnd(t, conn); got != "" {
		t.Errorf("the cut connection received %q, want nothing", got)
	}
}

// net/http never serves a request whose headers it finishes reading after
// Shutdown began: it closes the connection. That request is cut too, even
// though the deadline was never reached.
func TestShutdownCountsRequestDroppedByNetHTTP(t *testing.T) {
	// The handler hands over the channel LongLived closes when Shutdown
	// has begun for the server's hooks. net/http closes the listener first
	// and runs those hooks in goroutines after it: a request completing in
	// between is the miss Server.Shutdown documents (without this wait the
	// test failed 3 and 6 times in 300 under -race with both CPUs busy,
	// 2026-12-07, and once in make test), so it waits for the hook before
	// it completes the request.
	began := make(chan (<-chan struct{}), 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shutdown, done := server.LongLived(r.Context())
		done()
		select {
		case began <- shutdown:
		default:
		}
		http.NotFound(w, r)
	})
	s, _ := serve(t, h, server.Options{Traffic: &server.Observability{}})
	conn := dial(t, s)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: test\r\n")
	get(t, newClient(t), "http://"+s.Addr().String())
	shutdownBegan := receive(t, "the handler's shutdown channel", began)
	time.Sleep(100 * time.Millisecond)

	done := shutdownInBackground(t, s, 20*time.Second, time.Second)
	waitListenerClosed(t, s)
	receive(t, "Shutdown to begin for the server's hooks", shutdownBegan)
	fmt.Fprintf(conn, "\r\n") // the request is complete now
	if got := readToEnd(t, conn); got != "" {
		t.Errorf("the request completed during Shutdown got %q; this test expects net/http to drop it", got)
	}
	r := receive(t, "Shutdown to return", done)
	if got, want := r.cut, 1; got != want {
		t.Errorf("Shutdown cut %d, want %d (the dropped request)", got, want)
	}
	if !errors.Is(r.err, server.ErrCut) {
		t.Errorf("Shutdown error = %v, want server.ErrCut", r.err)
	}
	if errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("Shutdown error = %v, want no DeadlineExceeded: the deadline was not reached", r.err)
	}
}

// An idle keep-alive connection is closed at once and is not a cut.
func TestShutdownIdleKeepAliveNotCut(t *testing.T) {
	s, base := serve(t, http.NotFoundHandler(), server.Options{Traffic: &server.Observability{}})
	get(t, newClient(t), base) // leaves one idle keep-alive connection
	r := receive(t, "Shutdown to return", shutdownInBackground(t, s, 10*time.Second, 0))
	if r.cut != 0 || r.err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil", r.cut, r.err)
	}
}

// Shutdown logs how many HTTP/1 keep-alive connections were idle when it
// closed them: each one races a client that may be sending on it.
func TestShutdownLogsIdleKeepAlive(t *testing.T) {
	logs := &logCapture{}
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/hold", func(w http.ResponseWriter, r *http.Request) { <-release })
	s, base := serve(t, mux, server.Options{Traffic: &server.Observability{}, Logger: slog.New(logs)})
	for range 2 {
		get(t, newClient(t), base) // one idle keep-alive connection each
	}
	held := make(chan struct{})
	go func() { // a busy connection is not idle
		defer close(held)
		if resp, err := do(t, newClient(t), base+"/hold"); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "the /hold request in flight", func() bool { return s.InFlight() == 1 })
	done := shutdownInBackground(t, s, 10*time.Second, 0)
	waitFor(t, "the idle log line", func() bool { return len(logs.find("closing idle keep-alive connections")) > 0 })
	close(release)
	receive(t, "Shutdown to return", done)
	<-held
	recs := logs.find("closing idle keep-alive connections")
	if got, want := recs[0].attrs["connections"], "2"; got != want {
		t.Errorf("idle connections logged = %s, want %s", got, want)
	}
}

// hijackThen returns a handler that takes over the connection (through the
// path named by hp.how), writes "hello", optionally registers with
// LongLived (after the hijack, or before it with hp.registerFirst), and
// keeps the connection open until release; it then closes the connection
// and calls done. With hp.doneFirst it calls done at once, long before the
// Close: the hijacked connection alone must still hold Shutdown.
func hijackThen(t *testing.T, hp hijackPath, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := func() {}
		if hp.register && hp.registerFirst {
			_, done = server.LongLived(r.Context())
		}
		how := hp.how
		var conn net.Conn
		var brw *bufio.ReadWriter
		var err error
		switch how {
		case "Hijacker":
			conn, brw, err = w.(http.Hijacker).Hijack()
		case "ResponseController":
			conn, brw, err = http.NewResponseController(w).Hijack()
		case "Unwrap":
			// A handler that digs out the writer net/http made.
			inner := w.(interface{ Unwrap() http.ResponseWriter }).Unwrap()
			conn, brw, err = inner.(http.Hijacker).Hijack()
		}
		if err != nil {
			t.Errorf("Hijack (%s): %v", how, err)
			return
		}
		if hp.register && !hp.registerFirst {
			_, done = server.LongLived(r.Context())
		}
		if hp.doneFirst {
			done()
		}
		brw.WriteString("hello\n")
		brw.Flush()
		go func() {
			<-release
			conn.Close()
			conn.Close() // a second Close must not release anything twice
			done()       // and neither must a second done
		}()
	})
}

type hijackPath struct {
	how                      string
	register                 bool
	registerFirst, doneFirst bool // LongLived before Hijack; done before Close
}

func (hp hijackPath) String() string {
	s := fmt.Sprintf("%s/LongLived=%v", hp.how, hp.register)
	if hp.registerFirst {
		s += "/registerFirst"
	}
	if hp.doneFirst {
		s += "/doneFirst"
	}
	return s
}

var hijackPaths = []hijackPath{
	{how: "Hijacker"},
	{how: "ResponseController"},
	{how: "Unwrap"},
	{how: "Hijacker", register: true}, // the natural order: upgrade, then register
	{how: "Unwrap", register: true},
	{how: "ResponseController", register: true, registerFirst: true},
	{how: "Hijacker", register: true, doneFirst: true},
	{how: "Unwrap", register: true, registerFirst: true, doneFirst: true},
}

// Shutdown waits for a hijacked connection however the handler reached
// Hijack and in whichever order it registered, on the traffic server and on
// a server without the middleware, and returns once the handler closes it.
func TestShutdownWaitsForHijackedConn(t *testing.T) {
	for _, hp := range hijackPaths {
		for _, traffic := range []bool{true, false} {
			if !traffic && hp.how == "Unwrap" {
				continue // without the middleware there is nothing to unwrap
			}
			t.Run(fmt.Sprintf("%s/traffic=%v", hp, traffic), func(t *testing.T) {
				var o server.Options
				if traffic {
					o.Traffic = &server.Observability{}
				}
				release := make(chan struct{})
				s, _ := serve(t, hijackThen(t, hp, release), o)
				conn := dial(t, s)
				fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
				rd := bufio.NewReader(conn)
				if line, err := rd.ReadString('\n'); err != nil || line != "hello\n" {
					close(release)
					t.Fatalf("read %q, %v; want \"hello\\n\"", line, err)
				}
				done := shutdownInBackground(t, s, 20*time.Second, time.Second)
				waitListenerClosed(t, s)
				time.Sleep(200 * time.Millisecond) // Shutdown polls: give it time to return wrongly
				select {
				case r := <-done:
					t.Errorf("Shutdown returned %d, %v while the hijacked connection was open", r.cut, r.err)
				default:
				}
				close(release)
				r := receive(t, "Shutdown to return", done)
				if r.cut != 0 || r.err != nil {
					t.Errorf("Shutdown() = %d, %v after the connection closed; want 0, nil", r.cut, r.err)
				}
			})
		}
	}
}

func TestShutdownCutsHijackedConnAtDeadline(t *testing.T) {
	for _, hp := range hijackPaths {
		t.Run(hp.String(), func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			s, _ := serve(t, hijackThen(t, hp, release), server.Options{Traffic: &server.Observability{}})
			conn := dial(t, s)
			fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
			rd := bufio.NewReader(conn)
			if line, err := rd.ReadString('\n'); err != nil || line != "hello\n" {
				t.Fatalf("read %q, %v; want \"hello\\n\"", line, err)
			}
			r := receive(t, "Shutdown to return", shutdownInBackground(t, s, time.Second, 0))
			if got, want := r.cut, 1; got != want {
				t.Errorf("Shutdown cut %d, want %d (one hijacked connection)", got, want)
			}
			if !errors.Is(r.err, context.DeadlineExceeded) || !errors.Is(r.err, server.ErrCut) {
				t.Errorf("Shutdown error = %v, want context.DeadlineExceeded and server.ErrCut", r.err)
			}
			// Shutdown closed the connection the handler still held.
			if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if rest, err := io.ReadAll(rd); err != nil {
				t.Errorf("after the deadline the hijacked connection is still open: read %q, %v; want EOF", rest, err)
			}
		})
	}
}

// Close closes hijacked connections too, which http.Server.Close does not.
func TestCloseClosesHijackedConn(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s, _ := serve(t, hijackThen(t, hijackPath{how: "Hijacker"}, release), server.Options{Traffic: &server.Observability{}})
	conn := dial(t, s)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n")
	rd := bufio.NewReader(conn)
	if line, err := rd.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("read %q, %v; want \"hello\\n\"", line, err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if rest, err := io.ReadAll(rd); err != nil {
		t.Errorf("after Close the hijacked connection is still open: read %q, %v; want EOF", rest, err)
	}
}

// The connection a handler hijacks is the server's wrapper; NetConn gives
// the accepted *net.TCPConn for handlers that need its methods.
func TestHijackedNetConn(t *testing.T) {
	got := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			got <- err.Error()
			return
		}
		defer conn.Close()
		nc, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			got <- fmt.Sprintf("%T has no NetConn", conn)
			return
		}
		got <- fmt.Sprintf("%T", nc.NetConn())
	})
	s, _ := serve(t, h, server.Options{Traffic: &server.Observability{}})
	conn := dial(t, s)
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")
	if g, want := receive(t, "the handler", got), "*net.TCPConn"; g != want {
		t.Errorf("NetConn() is %s, want %s", g, want)
	}
}

// A file response arrives whole. Without the middleware net/http copies it
// through the connection's ReadFrom (the sendfile path), which the wrapper
// must keep; the middleware's writer has no ReadFrom, so there it is plain
// writes.
func TestFileResponseThroughWrapper(t *testing.T) {
	path := t.TempDir() + "/body"
	want := strings.Repeat("kubeskel\n", 100_000)
	if err := os.WriteFile(path, []byte(want), 0o600); err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) })
	for _, traffic := range []*server.Observability{nil, {}} {
		_, base := serve(t, h, server.Options{Traffic: traffic})
		resp, body := get(t, newClient(t), base)
		if resp.StatusCode != http.StatusOK || body != want {
			t.Errorf("traffic=%v: GET file = %d, %d bytes; want 200, %d bytes", traffic != nil, resp.StatusCode, len(body), len(want))
		}
	}
}
