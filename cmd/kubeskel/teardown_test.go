package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitRaw waits for a raw stdout line containing every one of parts; it is
// for the text log format, which waitLog (JSON) cannot read.
func (p *process) waitRaw(timeout time.Duration, parts ...string) string {
	p.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		p.logs.mu.Lock()
		lines := append([]string(nil), p.logs.raw...)
		p.logs.mu.Unlock()
		for _, line := range lines {
			if containsAll(line, parts) {
				return line
			}
		}
	}
	p.t.Fatalf("no stdout line containing %q within %s", parts, timeout)
	return ""
}

func containsAll(s string, parts []string) bool {
	for _, part := range parts {
		if !strings.Contains(s, part) {
			return false
		}
	}
	return true
}

// TestSecondSignalUsesLogFormat: the "second signal" line is written by the
// configured logger, so with APP_LOG_FORMAT=text it is a text line.
func TestSecondSignalUsesLogFormat(t *testing.T) {
	p := launch(t, baseEnv("APP_LOG_FORMAT=text", "APP_PRESTOP_DELAY=30s", "APP_TERMINATION_GRACE_PERIOD=60s"))
	p.waitRaw(10*time.Second, "msg=phase", "phase=ready")
	p.signal(syscall.SIGTERM)
	p.waitRaw(5*time.Second, "msg=phase", "phase=draining")
	p.signal(syscall.SIGINT)
	if got, want := p.wait(10*time.Second), 4; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	line := p.waitRaw(time.Second, "second signal: exiting at once")
	if !strings.HasPrefix(line, "time=") || !strings.Contains(line, "signal=interrupt") || !strings.Contains(line, "exit_code=4") {
		t.Errorf("second-signal line %q is not a text record with signal=interrupt exit_code=4", line)
	}
}

// TestTrafficWaitsForSidecar: during the sidecar wait the traffic listener
// is bound but not served, so a request gets no response until the sidecar
// is ready, and then the queued request is answered.
func TestTrafficWaitsForSidecar(t *testing.T) {
	var sidecarReady atomic.Bool
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sidecarReady.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer sidecar.Close()
	p := launch(t, baseEnv("APP_SIDECAR_READY_URL="+sidecar.URL+"/ready", "APP_PRESTOP_DELAY=0s"))
	p.httpAddr = p.waitLog(10*time.Second, "listening", "server", "http")["addr"].(string)
	p.adminAddr = p.waitLog(10*time.Second, "listening", "server", "admin")["addr"].(string)
	p.waitLog(10*time.Second, "waiting for sidecar", "", "")

	type result struct {
		code int
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		client := &http.Client{Timeout: 30 * time.Second}
		resp, err := httpGetWith(t.Context(), client, p.url(false, "/"))
		if err != nil {
			answered <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		answered <- result{code: resp.StatusCode}
	}()
	select {
	case r := <-answered:
		t.Fatalf("traffic request answered while the sidecar was not ready: %+v", r)
	case <-time.After(time.Second):
	}
	if code, _, _ := get(t, p.url(true, "/ready")); code != 503 {
		t.Errorf("/ready while the sidecar is not ready = %d, want 503", code)
	}
	sidecarReady.Store(true)
	select {
	case r := <-answered:
		if r.err != nil || r.code != 200 {
			t.Errorf("queued traffic request once ready = %d, %v; want 200", r.code, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("queued traffic request not answered once the sidecar was ready")
	}
	p.signal(syscall.SIGTERM)
	if got := p.wait(15 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
}

// TestCheckConfig: "kubeskel check-config" validates the environment like
// start-up does, prints the budget arithmetic and exits 0 or 2.
func TestCheckConfig(t *testing.T) {
	tests := []struct {
		name       string
		env        []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"defaults", nil, 0,
			"APP_PRESTOP_SLEEP 0s + APP_PRESTOP_DELAY 5s + APP_SHUTDOWN_TIMEOUT 20s + APP_TELEMETRY_FLUSH_TIMEOUT 2s + admin stop 1s = 28s, below APP_TERMINATION_GRACE_PERIOD 30s", ""},
		{"preStop sleep counts", []string{"APP_PRESTOP_SLEEP=3s"}, 2, "", "APP_TERMINATION_GRACE_PERIOD: shutdown budget does not fit: APP_PRESTOP_SLEEP 3s"},
		{"overflow", []string{"APP_PRESTOP_DELAY=2000000h", "APP_SHUTDOWN_TIMEOUT=2000000h"}, 2, "", "APP_PRESTOP_DELAY: must be at most 24h"},
		{"not a duration", []string{"APP_SHUTDOWN_TIMEOUT=soon"}, 2, "", "APP_SHUTDOWN_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := launch(t, baseEnv(tt.env...), "check-config")
			if got := p.wait(10 * time.Second); got != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr %q", got, tt.wantCode, p.stderrString())
			}
			if tt.wantStdout != "" {
				p.waitRaw(time.Second, tt.wantStdout)
			}
			if !strings.Contains(p.stderrString(), tt.wantStderr) {
				t.Errorf("stderr %q does not contain %q", p.stderrString(), tt.wantStderr)
			}
		})
	}
}
