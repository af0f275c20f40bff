package app_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/app"
	"github.com/kubeskel/kubeskel/internal/server"
)

func newHandler(t *testing.T, slowMax time.Duration) http.Handler {
	t.Helper()
	mux := server.NewMux(server.Observability{})
	app.AddRoutes(mux, app.Deps{Version: "v1.2.3", Host: "pod-abc", SlowMax: slowMax})
	return mux
}

func serveHTTP(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestHello(t *testing.T) {
	h := newHandler(t, time.Second)
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/", http.StatusOK},
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodGet, "/other", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			w := serveHTTP(h, httptest.NewRequest(tt.method, tt.path, nil))
			if got := w.Code; got != tt.want {
				t.Fatalf("status = %d, want %d", got, tt.want)
			}
			if tt.want != http.StatusOK {
				return
			}
			if got, want := w.Header().Get("Content-Type"), "text/plain; charset=utf-8"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
			if tt.method == http.MethodGet {
				if got, want := w.Body.String(), "kubeskel v1.2.3 on pod-abc\n"; got != want {
					t.Errorf("body = %q, want %q", got, want)
				}
				if got, want := w.Header().Get("Content-Length"), "27"; got != want {
					t.Errorf("Content-Length = %q, want %q", got, want)
				}
			}
		})
	}
}

func TestHelloOverHTTPHead(t *testing.T) {
	srv := httptest.NewServer(newHandler(t, time.Second))
	defer srv.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodHead, srv.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD / = %d with %d body bytes; want 200 and none", resp.StatusCode, len(body))
	}
}

func TestEcho(t *testing.T) {
	h := newHandler(t, time.Second)
	const limit = 1 << 20
	tests := []struct {
		name   string
		body   string
		want   int
		echoed bool
	}{
		{"empty", "", http.StatusOK, true},
		{"small", "hello, world", http.StatusOK, true},
		{"exactly the limit", strings.Repeat("x", limit), http.StatusOK, true},
		{"one byte over", strings.Repeat("x", limit+1), http.StatusRequestEntityTooLarge, false},
		{"far over", strings.Repeat("x", 3*limit), http.StatusRequestEntityTooLarge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/echo", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			w := serveHTTP(h, r)
			if got := w.Code; got != tt.want {
				t.Fatalf("status = %d, want %d", got, tt.want)
			}
			if !tt.echoed {
				return
			}
			if got := w.Body.String(); got != tt.body {
				t.Errorf("echoed %d bytes, want the %d sent", len(got), len(tt.body))
			}
			if got, want := w.Header().Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type = %q, want %q (the request's)", got, want)
			}
		})
	}
	if got, want := serveHTTP(h, httptest.NewRequest(http.MethodGet, "/echo", nil)).Code, http.StatusMethodNotAllowed; got != want {
		t.Errorf("GET /echo = %d, want %d", got, want)
	}
}

func TestSlow(t *testing.T) {
	tests := []struct {
		name     string
		max      time.Duration
		query    string
		want     int
		wantBody string
	}{
		{"short", time.Minute, "?d=1ms", http.StatusOK, "slept 1ms\n"},
		{"zero", time.Minute, "?d=0s", http.StatusOK, "slept 0s\n"},
		{"capped at max", 2 * time.Millisecond, "?d=1h", http.StatusOK, "slept 2ms\n"},
		{"default capped", 3 * time.Millisecond, "", http.StatusOK, "slept 3ms\n"},
		{"not a duration", time.Minute, "?d=five", http.StatusBadRequest, ""},
		{"no unit", time.Minute, "?d=5", http.StatusBadRequest, ""},
		{"negative", time.Minute, "?d=-1s", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := serveHTTP(newHandler(t, tt.max), httptest.NewRequest(http.MethodGet, "/slow"+tt.query, nil))
			if got := w.Code; got != tt.want {
				t.Fatalf("status = %d, want %d (body %q)", got, tt.want, w.Body)
			}
			if tt.wantBody != "" && w.Body.String() != tt.wantBody {
				t.Errorf("body = %q, want %q", w.Body, tt.wantBody)
			}
		})
	}
}

func TestSlowReturnsEarlyOnCancel(t *testing.T) {
	h := newHandler(t, time.Hour)
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w := serveHTTP(h, httptest.NewRequestWithContext(ctx, http.MethodGet, "/slow?d=1h", nil))
		if got, want := w.Code, http.StatusServiceUnavailable; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if !strings.Contains(w.Body.String(), "context canceled") {
			t.Errorf("body %q does not give the cause", w.Body)
		}
	})
	t.Run("cancelled while sleeping", func(t *testing.T) {
		parent, cancel := context.WithCancelCause(context.Background())
		ctx := &waitedContext{Context: parent, waiting: make(chan struct{})}
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			done <- serveHTTP(h, httptest.NewRequestWithContext(ctx, http.MethodGet, "/slow?d=1h", nil))
		}()
		// Cancel only once the handler waits on its context, so this tests
		// the wait and not a check made when the handler begins.
		select {
		case <-ctx.waiting:
		case w := <-done:
			t.Fatalf("/slow?d=1h answered %d %q without waiting on its context", w.Code, w.Body)
		case <-time.After(10 * time.Second):
			t.Fatal("/slow?d=1h did not wait on its context within 10s")
		}
		cancel(context.DeadlineExceeded)
		select {
		case w := <-done:
			if got, want := w.Code, http.StatusServiceUnavailable; got != want {
				t.Errorf("status = %d, want %d", got, want)
			}
			if !strings.Contains(w.Body.String(), "deadline exceeded") {
				t.Errorf("body %q does not give the cancel cause", w.Body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("/slow?d=1h did not return after its context was cancelled")
		}
	})
}

// waitedContext closes waiting the first time Done is called, that is when
// a handler starts waiting for the context to end.
type waitedContext struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func (c *waitedContext) Done() <-chan struct{} {
	c.once.Do(func() { close(c.waiting) })
	return c.Context.Done()
}
