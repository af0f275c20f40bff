package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
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

// BenchmarkHTTP1Loopback measures what serving h2c on the same listener
// costs HTTP/1.1 clients, through a real loopback connection: keep-alive
// requests on one connection, and one request per new connection (where
// net/http and the connection wrapper look for the HTTP/2 preface).
func BenchmarkHTTP1Loopback(b *testing.B) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") })
	const request = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
	roundTrip := func(b *testing.B, c net.Conn, br *bufio.Reader) {
		if _, err := io.WriteString(c, request); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d, want 200", resp.StatusCode)
		}
	}
	for _, mode := range []string{"keepalive", "newconn"} {
		for _, h2c := range []bool{false, true} {
			name := mode + "/off"
			if h2c {
				name = mode + "/h2c"
			}
			b.Run(name, func(b *testing.B) {
				s := listenAndServe(b, hello, Options{H2C: h2c, Traffic: &Observability{}}, nil)
				d := &net.Dialer{}
				dial := func() (net.Conn, *bufio.Reader) {
					c, err := d.DialContext(context.Background(), "tcp", s.Addr().String())
					if err != nil {
						b.Fatal(err)
					}
					return c, bufio.NewReader(c)
				}
				b.ReportAllocs()
				if mode == "keepalive" {
					c, br := dial()
					defer c.Close()
					for b.Loop() {
						roundTrip(b, c, br)
					}
					return
				}
				for b.Loop() {
					c, br := dial()
					roundTrip(b, c, br)
					c.Close()
				}
			})
		}
	}
}
