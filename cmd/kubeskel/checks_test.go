package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// readyFull returns the status of /ready?full=1 and each check's result.
func readyFull(t *testing.T, p *process) (int, map[string]string) {
	t.Helper()
	code, _, body := get(t, p.url(true, "/ready?full=1"))
	results := map[string]string{}
	if err := json.Unmarshal([]byte(body), &results); err != nil {
		t.Fatalf("/ready?full=1 body %q: %v", body, err)
	}
	return code, results
}

// waitReadyFull polls /ready?full=1 for up to timeout until ok accepts its
// status and results, and returns the last ones seen.
func waitReadyFull(t *testing.T, p *process, timeout time.Duration, ok func(int, map[string]string) bool) (int, map[string]string) {
	t.Helper()
	var code int
	var results map[string]string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if code, results = readyFull(t, p); ok(code, results) {
			break
		}
	}
	return code, results
}

// closedPort returns a loopback address on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestDependencyChecks drives APP_CHECK_TCP and APP_CHECK_HTTP through the
// binary: a dependency that is down fails readiness and is named, a slow one
// does not slow the probe, and one that comes up makes the pod ready.
func TestDependencyChecks(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		tcpAddr := closedPort(t)
		failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
		}))
		defer failing.Close()
		p := start(t, "APP_CHECK_TCP="+tcpAddr, "APP_CHECK_HTTP="+failing.URL+"/health?token=s3cret",
			"APP_CHECK_INTERVAL=500ms", "APP_CHECK_TIMEOUT=1s")
		tcpName, httpName := "tcp:"+tcpAddr, failing.URL
		code, results := waitReadyFull(t, p, 10*time.Second, func(_ int, r map[string]string) bool {
			return strings.Contains(r[tcpName], "refused") && strings.Contains(r[httpName], "status 500")
		})
		if code != http.StatusServiceUnavailable {
			t.Errorf("/ready?full=1 = %d with both dependencies down, want 503", code)
		}
		if !strings.Contains(results[tcpName], "refused") {
			t.Errorf("/ready?full=1 %s = %q, want connection refused (all: %v)", tcpName, results[tcpName], results)
		}
		if !strings.Contains(results[httpName], "status 500") {
			t.Errorf("/ready?full=1 %s = %q, want status 500 (all: %v)", httpName, results[httpName], results)
		}
		if got := results["lifecycle"]; got != "OK" {
			t.Errorf("lifecycle check = %q, want OK: only the dependencies fail", got)
		}
		for name, result := range results {
			if strings.Contains(name+result, "s3cret") || strings.Contains(name+result, "/health") {
				t.Errorf("/ready?full=1 shows the URL's path or query: %q: %q", name, result)
			}
		}
		if code, _, _ := get(t, p.url(true, "/ready")); code != http.StatusServiceUnavailable {
			t.Errorf("/ready = %d, want 503", code)
		}
		// A dependency never fails liveness.
		if code, _, _ := get(t, p.url(true, "/live")); code != http.StatusOK {
			t.Errorf("/live = %d, want 200", code)
		}
	})

	t.Run("slow dependency does not block the probe", func(t *testing.T) {
		const slow = 3 * time.Second
		var inCheck atomic.Int32
		var checks atomic.Int32
		dep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			checks.Add(1)
			inCheck.Add(1)
			defer inCheck.Add(-1)
			select {
			case <-time.After(slow):
			case <-r.Context().Done():
			}
		}))
		defer dep.Close()
		defer dep.CloseClientConnections()
		p := start(t, "APP_CHECK_HTTP="+dep.URL, "APP_CHECK_INTERVAL=1s", "APP_CHECK_TIMEOUT=10s")
		// Probe for longer than one slow check; count the probes answered
		// while a check was really waiting on the dependency.
		probedDuringCheck := 0
		for end := time.Now().Add(slow + time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			busy := inCheck.Load() > 0
			began := time.Now()
			get(t, p.url(true, "/ready"))
			if took := time.Since(began); took > time.Second {
				t.Errorf("/ready took %s while the dependency takes %s to answer; want well under 1s", took, slow)
			}
			if busy && inCheck.Load() > 0 {
				probedDuringCheck++
			}
		}
		if checks.Load() == 0 || probedDuringCheck == 0 {
			t.Fatalf("no probe ran while a check waited on the dependency (%d checks): the test proves nothing", checks.Load())
		}
		t.Logf("%d probes answered while a %s check was in progress", probedDuringCheck, slow)
	})

	t.Run("dependency that comes up makes the pod ready", func(t *testing.T) {
		tcpAddr := closedPort(t)
		var up atomic.Bool
		dep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !up.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		defer dep.Close()
		p := start(t, "APP_CHECK_TCP="+tcpAddr, "APP_CHECK_HTTP="+dep.URL, "APP_CHECK_INTERVAL=500ms", "APP_CHECK_TIMEOUT=1s")
		code, results := waitReadyFull(t, p, 10*time.Second, func(_ int, r map[string]string) bool {
			return strings.Contains(r["tcp:"+tcpAddr], "refused") && strings.Contains(r[dep.URL], "status 503")
		})
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/ready?full=1 = %d %v before the dependencies are up, want 503", code, results)
		}

		ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", tcpAddr)
		if err != nil {
			t.Fatalf("listen again on %s: %v", tcpAddr, err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		up.Store(true)
		upAt := time.Now()
		code, results = waitReadyFull(t, p, 10*time.Second, func(code int, _ map[string]string) bool { return code == http.StatusOK })
		if code != http.StatusOK {
			t.Fatalf("/ready?full=1 = %d %v 10s after the dependencies came up, want 200 within a few 500ms intervals", code, results)
		}
		t.Logf("ready %s after the dependencies came up", time.Since(upAt).Round(time.Millisecond))
		if code, _, _ := get(t, p.url(true, "/ready")); code != http.StatusOK {
			t.Errorf("/ready = %d, want 200", code)
		}
	})
}
