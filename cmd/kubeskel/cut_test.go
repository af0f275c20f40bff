package main

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestSilentConnectionNotCut holds a connection open that never sends a
// request. The shutdown deadline closes it, but nothing was lost: the exit is
// clean and no request is reported cut. Its control is TestDeadlineCutsRequests
// (a request begun is cut, exit 3) and TestHalfSentRequestCut below.
func TestSilentConnectionNotCut(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=1s", "APP_HANDLER_CANCEL_MARGIN=200ms")
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request on another connection, answered after this one was
	// accepted: the server holds the silent connection by now.
	get(t, p.url(false, "/"))

	p.signal(syscall.SIGTERM)
	if got, want := p.wait(20*time.Second), 0; got != want {
		t.Errorf("exit code = %d, want %d (the connection never sent a request)", got, want)
	}
	if got := p.waitLog(time.Second, "phase", "phase", "flushing")["requests_cut"]; got != float64(0) {
		t.Errorf("requests_cut = %v, want 0", got)
	}
	if recs := p.logs.all(func(r map[string]any) bool { return r["msg"] == "shutdown cut requests" }); len(recs) != 0 {
		t.Errorf("logged %v, want no \"shutdown cut requests\"", recs)
	}
	rec := p.waitLog(time.Second, "closed connections that had sent no request", "server", "http")
	if got, want := rec["connections"], float64(1); got != want {
		t.Errorf("closed connections = %v, want %v", got, want)
	}
	noErr(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	if b, err := io.ReadAll(conn); err != nil || len(b) != 0 {
		t.Errorf("silent connection: read %q, %v; want closed with nothing sent", b, err)
	}
}

// TestHalfSentRequestCut: a client that sent part of a request header when
// the deadline comes gets no response; that request is cut (exit 3).
func TestHalfSentRequestCut(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=1s", "APP_HANDLER_CANCEL_MARGIN=200ms")
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n") // the header never ends
	get(t, p.url(false, "/"))
	time.Sleep(200 * time.Millisecond) // generous: the bytes are on loopback

	p.signal(syscall.SIGTERM)
	if got, want := p.wait(20*time.Second), 3; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	rec := p.waitLog(time.Second, "shutdown cut requests", "", "")
	if got, want := rec["requests_cut"], float64(1); got != want {
		t.Errorf("requests_cut = %v, want %v", got, want)
	}
}
