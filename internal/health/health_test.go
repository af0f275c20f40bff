package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubeskel/kubeskel/internal/health"
)

// do serves one request to h and returns the recorded response.
func do(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

func TestNoChecks(t *testing.T) {
	h := health.New(prometheus.NewRegistry()).Handler()
	for _, path := range []string{"/live", "/ready"} {
		t.Run(path, func(t *testing.T) {
			if got, want := do(t, h, http.MethodGet, path).Code, http.StatusOK; got != want {
				t.Errorf("GET %s = %d, want %d", path, got, want)
			}
		})
	}
}

func TestReadinessFailsLivenessStays(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	ready := errors.New("draining")
	p.AddReadiness("lifecycle", func() error { return ready })
	p.AddLiveness("goroutines", func() error { return nil })
	h := p.Handler()

	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/live", http.StatusOK},
		{http.MethodHead, "/live", http.StatusOK},
		{http.MethodGet, "/ready", http.StatusServiceUnavailable},
		{http.MethodHead, "/ready", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			if got := do(t, h, tt.method, tt.path).Code; got != tt.want {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestLivenessFailureFailsReadiness(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	p.AddLiveness("deadlock", func() error { return errors.New("stuck") })
	h := p.Handler()
	for _, path := range []string{"/live", "/ready"} {
		if got, want := do(t, h, http.MethodGet, path).Code, http.StatusServiceUnavailable; got != want {
			t.Errorf("GET %s with a failing liveness check = %d, want %d", path, got, want)
		}
	}
}

func TestHEADOverHTTP(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	p.AddReadiness("fails", func() error { return errors.New("no") })
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	tests := []struct {
		path string
		want int
	}{
		{"/live", http.StatusOK},
		{"/ready", http.StatusServiceUnavailable},
		{"/ready?full=1", http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, srv.URL+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.StatusCode; got != tt.want {
				t.Errorf("HEAD %s = %d, want %d", tt.path, got, tt.want)
			}
			var buf [1]byte
			if n, _ := resp.Body.Read(buf[:]); n != 0 {
				t.Errorf("HEAD %s returned a body", tt.path)
			}
		})
	}
}

func TestHEADRecorderHasNoBody(t *testing.T) {
	// Without net/http's server, the handler's own output for HEAD is what
	// a recorder sees; the status must match GET.
	p := health.New(prometheus.NewRegistry())
	p.AddReadiness("db", func() error { return errors.New("connection refused") })
	h := p.Handler()
	for _, path := range []string{"/live", "/ready", "/ready?full=1"} {
		get, head := do(t, h, http.MethodGet, path), do(t, h, http.MethodHead, path)
		if got, want := head.Code, get.Code; got != want {
			t.Errorf("HEAD %s = %d, want %d as GET", path, got, want)
		}
		if got, want := head.Header().Get("Content-Type"), get.Header().Get("Content-Type"); got != want {
			t.Errorf("HEAD %s Content-Type = %q, want %q as GET", path, got, want)
		}
		if head.Body.Len() != 0 {
			t.Errorf("HEAD %s wrote a body: %q", path, head.Body)
		}
		// Control: GET does write one, so an empty HEAD body means
		// something.
		if get.Body.Len() == 0 {
			t.Errorf("GET %s wrote no body", path)
		}
	}
	if got, want := do(t, h, http.MethodPost, "/ready").Code, http.StatusMethodNotAllowed; got != want {
		t.Errorf("POST /ready = %d, want %d", got, want)
	}
}

func TestFullJSON(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	p.AddReadiness("db", func() error { return errors.New("connection refused") })
	p.AddReadiness("lifecycle", func() error { return nil })
	p.AddLiveness("self", func() error { return nil })
	h := p.Handler()

	tests := []struct {
		path string
		want map[string]string
	}{
		{"/ready?full=1", map[string]string{"db": "connection refused", "lifecycle": "OK", "self": "OK"}},
		{"/live?full=1", map[string]string{"self": "OK"}},
		{"/ready", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			w := do(t, h, http.MethodGet, tt.path)
			if got, want := w.Header().Get("Content-Type"), "application/json"; !strings.HasPrefix(got, want) {
				t.Errorf("Content-Type = %q, want %s", got, want)
			}
			var got map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q is not a JSON object: %v", w.Body, err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("checks = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("check %q = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestAsyncReadiness(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	entered := make(chan struct{}, 1)
	finish := make(chan error)
	check := func() error {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case err := <-finish: // the test decides when a run ends and its result
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.AddAsyncReadiness(ctx, "slow-db", check, time.Hour)
	h := p.Handler()

	// The first run is in progress and blocked: the probe must still
	// answer, and fail, because no result exists yet.
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the async check never ran")
	}
	if got, want := do(t, h, http.MethodGet, "/ready").Code, http.StatusServiceUnavailable; got != want {
		t.Errorf("GET /ready before the first run finished = %d, want %d", got, want)
	}
	if got, want := do(t, h, http.MethodGet, "/live").Code, http.StatusOK; got != want {
		t.Errorf("GET /live = %d, want %d (async checks are readiness only)", got, want)
	}

	finish <- nil // the first run passes
	deadline := time.Now().Add(10 * time.Second)
	for do(t, h, http.MethodGet, "/ready").Code != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("GET /ready never passed after the first run passed")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAsyncReadinessAnswersWhileCheckIsSlow(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	firstRunDone := make(chan struct{})
	check := func() error {
		time.Sleep(500 * time.Millisecond) // a slow dependency
		select {
		case <-firstRunDone:
		default:
			close(firstRunDone)
		}
		return nil
	}
	p.AddAsyncReadiness(ctx, "slow", check, 50*time.Millisecond)

	// The probe returns while the check is still sleeping.
	code := do(t, p.Handler(), http.MethodGet, "/ready").Code
	select {
	case <-firstRunDone:
		t.Fatal("the probe waited for the slow check's first run")
	default:
	}
	if got, want := code, http.StatusServiceUnavailable; got != want {
		t.Errorf("GET /ready before any result = %d, want %d", got, want)
	}
}

func TestAsyncReadinessStopsWithContext(t *testing.T) {
	p := health.New(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	runs := make(chan struct{}, 100)
	p.AddAsyncReadiness(ctx, "x", func() error { runs <- struct{}{}; return nil }, time.Millisecond)
	<-runs
	cancel()
	// After cancel at most one run can be in progress; then no more come.
	// Drain what is there and make sure the count stops growing.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := len(runs)
		time.Sleep(20 * time.Millisecond)
		if len(runs) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the async check kept running after its context ended")
		}
		for len(runs) > 0 {
			<-runs
		}
	}
}

func TestStatusGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := health.New(reg)
	var failing atomic.Bool
	failing.Store(true)
	p.AddReadiness("db", func() error {
		if failing.Load() {
			return errors.New("down")
		}
		return nil
	})
	p.AddLiveness("self", func() error { return nil })

	want := map[string]float64{"db": 1, "self": 0}
	if got := statusGauges(t, reg); !maps.Equal(got, want) {
		t.Errorf("kubeskel_healthcheck_status = %v, want %v", got, want)
	}
	failing.Store(false)
	want["db"] = 0
	if got := statusGauges(t, reg); !maps.Equal(got, want) {
		t.Errorf("after recovery, kubeskel_healthcheck_status = %v, want %v", got, want)
	}
}

// statusGauges returns kubeskel_healthcheck_status by check.
func statusGauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != "kubeskel_healthcheck_status" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "check" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return got
}

// Two dependencies on the same host (different paths) get the same
// CheckName; both must be checked, and adding the second must not panic on
// a duplicate metric.
func TestSameNameChecksBothCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := health.New(reg)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("adding a second check with the same name panicked: %v", r)
		}
	}()
	name := health.CheckName("http://db:8080/a")
	if other := health.CheckName("http://db:8080/b"); other != name {
		t.Fatalf("CheckName differs for the same host: %q, %q", name, other)
	}
	p.AddReadiness(name, func() error { return errors.New("a is down") })
	p.AddReadiness(name, func() error { return nil })
	if got, want := do(t, p.Handler(), http.MethodGet, "/ready").Code, http.StatusServiceUnavailable; got != want {
		t.Errorf("GET /ready with one of two same-name checks failing = %d, want %d", got, want)
	}
}

func TestTCPCheck(t *testing.T) {
	ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := ln.Addr().String()
	if err := health.TCPCheck(open, 5*time.Second)(); err != nil {
		t.Errorf("TCPCheck(%s) on a listening port: %v", open, err)
	}
	ln.Close()
	if err := health.TCPCheck(open, 5*time.Second)(); err == nil {
		t.Errorf("TCPCheck(%s) on a closed port: nil error", open)
	}
}

func TestHTTPCheck(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/hang":
			select {
			case <-block:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	defer close(block)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	const secret = "s3cr3t-t0ken"
	userinfo := func(base string) string { return strings.Replace(base, "http://", "http://user:"+secret+"@", 1) }
	tests := []struct {
		name    string
		url     string
		wantErr bool
	}{
		{"2xx", srv.URL + "/ok", false},
		{"2xx with credentials", userinfo(srv.URL) + "/ok?token=" + secret, false},
		{"503", srv.URL + "/down/" + secret + "?token=" + secret, true},
		{"404", userinfo(srv.URL) + "/missing/" + secret, true},
		{"redirect not followed", srv.URL + "/redirect?token=" + secret, true},
		{"timeout", srv.URL + "/hang?token=" + secret, true},
		{"refused", userinfo(closedURL) + "/x/" + secret + "?token=" + secret, true},
		{"bad URL", "http://user:" + secret + "@[::1/x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := health.HTTPCheck(tt.url, 200*time.Millisecond)()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("HTTPCheck() error = %v, want error: %t", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "user") {
				t.Errorf("error %q leaks the URL's path, query or credentials", err)
			}
		})
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct{ url, want string }{
		{"http://user:pass@db:8080/health?token=x", "http://db:8080"},
		{"https://api.example.com/v1/status", "https://api.example.com"},
		{"http://[::1/x", "http"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			if got := health.CheckName(tt.url); got != tt.want {
				t.Errorf("CheckName(%q) = %q, want %q", tt.url, got, tt.want)
			}
		})
	}
}
