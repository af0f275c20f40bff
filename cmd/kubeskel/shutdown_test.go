package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestDeadlineCutsRequests holds a request in flight that cannot finish (its
// client never sends the rest of the body) and checks that the shutdown
// deadline cuts it, logs the count and exits non-zero.
func TestDeadlineCutsRequests(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=1s", "APP_HANDLER_CANCEL_MARGIN=200ms")
	conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly-a-part")
	waitInFlight(t, p, 1)

	p.signal(syscall.SIGTERM)
	if got, want := p.wait(20*time.Second), 3; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	rec := p.waitLog(time.Second, "shutdown cut requests", "", "")
	if got, want := rec["requests_cut"], float64(1); got != want {
		t.Errorf("requests_cut = %v, want %v", got, want)
	}
	if got := p.waitLog(time.Second, "phase", "phase", "stopped")["exit_code"]; got != float64(3) {
		t.Errorf("stopped phase exit_code = %v, want 3", got)
	}
	// The connection was closed by the server, not left hanging.
	noErr(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	if _, err := io.ReadAll(conn); err != nil {
		t.Errorf("reading the cut connection: %v, want EOF", err)
	}
}

// TestHandlerContextCancelledBeforeDeadline: a handler that honours its
// context returns cleanly when the context is cancelled APP_HANDLER_CANCEL_MARGIN
// before the deadline, so nothing is cut and the exit is clean.
func TestHandlerContextCancelledBeforeDeadline(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=2s", "APP_HANDLER_CANCEL_MARGIN=500ms")
	type result struct {
		code int
		body string
		at   time.Time
	}
	done := make(chan result, 1)
	go func() {
		resp, err := httpGet(t.Context(), p.url(false, "/slow?d=25s"))
		if err != nil {
			done <- result{code: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), time.Now()}
	}()
	waitInFlight(t, p, 1)
	p.signal(syscall.SIGTERM)
	r := <-done
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cancel") {
		t.Errorf("slow request got %d %q, want 503 from its cancelled context", r.code, r.body)
	}
	if got := p.wait(20 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0 (the handler returned before the deadline)", got)
	}
	if got := p.waitLog(time.Second, "phase", "phase", "flushing")["requests_cut"]; got != float64(0) {
		t.Errorf("requests_cut = %v, want 0", got)
	}
	// The response came before the deadline: the process exited 0 and only
	// after the response.
	if r.at.After(p.exitedAt) {
		t.Errorf("response arrived after the process exited")
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=30s", "APP_TERMINATION_GRACE_PERIOD=60s")
	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	p.signal(syscall.SIGINT)
	// Far less than the 30s delay still to run.
	if got, want := p.wait(10*time.Second), 4; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	p.waitLog(time.Second, "second signal: exiting at once", "", "")
}

func TestQuietPeriodEndsDelayEarly(t *testing.T) {
	t.Run("no traffic", func(t *testing.T) {
		p := start(t, "APP_PRESTOP_DELAY=30s", "APP_PRESTOP_QUIET_PERIOD=300ms", "APP_TERMINATION_GRACE_PERIOD=60s")
		p.signal(syscall.SIGTERM)
		if got := p.wait(15 * time.Second); got != 0 {
			t.Errorf("exit code = %d, want 0", got)
		}
		p.waitLog(time.Second, "pre-stop delay ended early: no request during the quiet period", "", "")
	})
	t.Run("traffic keeps the delay going", func(t *testing.T) {
		p := start(t, "APP_PRESTOP_DELAY=30s", "APP_PRESTOP_QUIET_PERIOD=300ms", "APP_TERMINATION_GRACE_PERIOD=60s")
		p.signal(syscall.SIGTERM)
		p.waitLog(5*time.Second, "phase", "phase", "draining")
		trafficFor := 1200 * time.Millisecond
		for end := time.Now().Add(trafficFor); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if code, _, _ := get(t, p.url(false, "/")); code != 200 {
				t.Fatalf("GET / during the delay = %d", code)
			}
		}
		if got := p.wait(15 * time.Second); got != 0 {
			t.Errorf("exit code = %d, want 0", got)
		}
		if d := p.waitLog(time.Second, "phase", "phase", "shutting_down")["previous_phase_ms"].(float64); d < float64(trafficFor.Milliseconds()) {
			t.Errorf("draining lasted %.0fms although requests kept arriving for %s", d, trafficFor)
		}
	})
}

func TestSidecarWait(t *testing.T) {
	t.Run("ready after the sidecar", func(t *testing.T) {
		var sidecarReady atomic.Bool
		sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !sidecarReady.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		defer sidecar.Close()
		p := launch(t, baseEnv("APP_SIDECAR_READY_URL="+sidecar.URL+"/healthz/ready", "APP_PRESTOP_DELAY=0s"))
		p.adminAddr = p.waitLog(10*time.Second, "listening", "server", "admin")["addr"].(string)
		p.waitLog(10*time.Second, "waiting for sidecar", "", "")
		if code, _, _ := get(t, p.url(true, "/ready")); code != 503 {
			t.Errorf("/ready while the sidecar is not ready = %d, want 503", code)
		}
		sidecarReady.Store(true)
		p.waitLog(10*time.Second, "phase", "phase", "ready")
		if code, _, _ := get(t, p.url(true, "/ready")); code != 200 {
			t.Errorf("/ready after the sidecar is ready = %d, want 200", code)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		defer sidecar.Close()
		p := launch(t, baseEnv("APP_SIDECAR_READY_URL="+sidecar.URL+"/ready?token=s3cret", "APP_SIDECAR_READY_TIMEOUT=700ms"))
		if got, want := p.wait(10*time.Second), 1; got != want {
			t.Errorf("exit code = %d, want %d", got, want)
		}
		if stderr := p.stderrString(); !strings.Contains(stderr, "APP_SIDECAR_READY_URL") || strings.Contains(stderr, "s3cret") {
			t.Errorf("stderr should name APP_SIDECAR_READY_URL without its value: %q", stderr)
		}
		if len(p.logs.all(func(r map[string]any) bool { return r["phase"] == "ready" })) > 0 {
			t.Errorf("reported ready although the sidecar never was")
		}
	})
}

// TestSidecarQuitAfterDrain: the sidecar is asked to quit only after the
// drain, that is after a slow request in flight at SIGTERM has been answered
// and the flushing phase has begun, never at the signal.
func TestSidecarQuitAfterDrain(t *testing.T) {
	type call struct {
		what string
		at   time.Time
	}
	quit := make(chan call, 1)
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		quit <- call{r.Method + " " + r.URL.Path, time.Now()}
	}))
	defer sidecar.Close()
	p := start(t, "APP_SIDECAR_QUIT_URL="+sidecar.URL+"/quitquitquit", "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=20s")

	const slow = 2 * time.Second
	answered := make(chan int, 1)
	go func() {
		resp, err := httpGet(t.Context(), p.url(false, "/slow?d="+slow.String()))
		if err != nil {
			answered <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	waitInFlight(t, p, 1)
	signalled := time.Now()
	p.signal(syscall.SIGTERM)
	if got := p.wait(20 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
	if got := <-answered; got != 200 {
		t.Errorf("slow request in flight at SIGTERM = %d, want 200", got)
	}
	var got call
	select {
	case got = <-quit:
	default:
		t.Fatalf("the sidecar quit URL was not called before exit")
	}
	if want := "POST /quitquitquit"; got.what != want {
		t.Errorf("sidecar got %q, want %q", got.what, want)
	}
	// The slow request held the drain for most of its 2s: a quit sent at
	// the signal would come far sooner.
	if after := got.at.Sub(signalled); after < slow/2 {
		t.Errorf("sidecar asked to quit %s after SIGTERM, before the slow request in flight could finish", after)
	}
	flushing := p.waitLog(time.Second, "phase", "phase", "flushing")
	flushedAt, err := time.Parse(time.RFC3339Nano, flushing["time"].(string))
	if err != nil {
		t.Fatalf("flushing record time: %v", err)
	}
	if got.at.Before(flushedAt) {
		t.Errorf("sidecar asked to quit at %s, before the flushing phase at %s", got.at.Format(time.StampMicro), flushedAt.Format(time.StampMicro))
	}
}

func TestServiceLinkVariablesTolerated(t *testing.T) {
	p := start(t,
		"APP_PORT=tcp://10.0.0.1:8080", "APP_PORT_8080_TCP=tcp://10.0.0.1:8080", "APP_PORT_8080_TCP_PROTO=tcp",
		"APP_PORT_8080_TCP_PORT=8080", "APP_PORT_8080_TCP_ADDR=10.0.0.1", "APP_SERVICE_HOST=10.0.0.1",
		"APP_SERVICE_PORT=8080", "APP_SERVICE_PORT_HTTP=8080",
		"APP_PRESTOP_DELY=3s", // a typo, which must be reported
	)
	if code, _, _ := get(t, p.url(true, "/ready")); code != 200 {
		t.Errorf("/ready = %d, want 200", code)
	}
	warned := map[string]bool{}
	for _, r := range p.logs.all(func(r map[string]any) bool { return r["variable"] != nil }) {
		warned[r["variable"].(string)] = true
	}
	if !warned["APP_PRESTOP_DELY"] || len(warned) != 1 {
		t.Errorf("warned about %v, want only the typo APP_PRESTOP_DELY", warned)
	}
}

// TestMalformedRequestsKeepServing: bad requests get a 4xx and the process
// keeps serving. (Handler panics are tested in internal/server.)
func TestMalformedRequestsKeepServing(t *testing.T) {
	// With h2c on (the default) net/http waits for 14 bytes, the length of
	// "PRI * HTTP/2.0", before it parses HTTP/1.1: the 12-byte "NONSENSE"
	// request gets its 400 only at the read header timeout, which must stay
	// below the 5s read deadline below.
	p := start(t, "APP_READ_HEADER_TIMEOUT=1s")
	for _, raw := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\nX: " + strings.Repeat("a", 2<<20) + "\r\n\r\n", // headers over the limit
		"NONSENSE\r\n\r\n",
		"GET /slow?d=banana HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", p.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		noErr(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
		io.WriteString(conn, raw)
		status, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(status, "HTTP/1.1 4") {
			t.Errorf("response to a malformed request = %q, want a 4xx", status)
		}
	}
	if code, _, _ := get(t, p.url(false, "/")); code != 200 {
		t.Errorf("GET / after malformed requests = %d, want 200", code)
	}
}
