package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/kubeskel/kubeskel/internal/metrics"
)

// discardWriter is a reusable in-memory http.ResponseWriter.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header  { return w.h }
func (w *discardWriter) WriteHeader(code int) { w.status = code }

func (w *discardWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

// BenchmarkMiddleware measures the cost the traffic middleware and the
// instrumented Mux add to a request, without the network: the handler chain
// is called directly with one reused request and ResponseWriter.
func BenchmarkMiddleware(b *testing.B) {
	body := []byte("kubeskel dev on bench\n")
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
		w.Write(body)
	})
	noopSpan := func(r *http.Request, route, spanName string) (context.Context, func(int)) {
		return r.Context(), func(int) {}
	}

	// chain returns the handler a traffic server built with obs serves.
	chain := func(b *testing.B, obs *Observability) http.Handler {
		b.Helper()
		mux := NewMux(*obs)
		mux.Handle("GET /{$}", hello)
		s, err := Listen("bench", "127.0.0.1:0", mux, Options{Traffic: obs})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s.srv.Handler
	}
	withMetrics := func(o Observability) *Observability {
		reg := metrics.New()
		o.Route = func(route, method string) RouteObserver { return reg.Route(route, method) }
		o.Panic = reg.Panic
		return &o
	}
	requestLog := slog.New(slog.NewJSONHandler(io.Discard, nil))

	benchmarks := []struct {
		name    string
		handler func(b *testing.B) http.Handler
	}{
		{"bare", func(*testing.B) http.Handler { return hello }},
		{"mux", func(*testing.B) http.Handler {
			mux := NewMux(Observability{})
			mux.Handle("GET /{$}", hello)
			return mux
		}},
		{"traffic+metrics", func(b *testing.B) http.Handler {
			return chain(b, withMetrics(Observability{}))
		}},
		{"traffic+metrics+noop-span", func(b *testing.B) http.Handler {
			return chain(b, withMetrics(Observability{StartSpan: noopSpan}))
		}},
		{"traffic+metrics+request-log", func(b *testing.B) http.Handler {
			return chain(b, withMetrics(Observability{Logger: requestLog, RequestLog: true}))
		}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			h := bm.handler(b)
			// context.Background(), as http.NewRequest uses: the measured
			// chain sees the same request context as before.
			req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://bench/", nil)
			if err != nil {
				b.Fatal(err)
			}
			req.RemoteAddr = "127.0.0.1:12345"
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, req)
			}
			if w.status != http.StatusOK {
				b.Fatalf("status = %d, want 200", w.status)
			}
		})
	}
}
