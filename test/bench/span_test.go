//go:build bench

// Package bench holds Go benchmarks of the per-request pieces that
// internal/server's BenchmarkMiddleware does not cover with the real
// libraries: a server span from the real OpenTelemetry SDK, and one request
// log line through the real logger. Run with
//
//	go test -tags bench -run '^$' -bench . -benchmem ./test/bench
package bench

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/logging"
	"github.com/kubeskel/kubeskel/internal/telemetry"
)

// BenchmarkServerSpan measures telemetry.StartServerSpan plus ending the span,
// as the instrumented Mux calls them once per request, and ("rpc-…")
// telemetry.StartRPCSpan plus its end, as the gRPC server does per call. The spans go to a
// local OTLP/HTTP sink that discards them. Exporting runs on the SDK's batch
// goroutine; when this loop outruns it the SDK drops spans, so ns/op is a
// lower bound of what a span costs (the callgrind figures in BENCHMARKS.md
// include the export).
func BenchmarkServerSpan(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer sink.Close()

	alwaysOn := map[string]string{
		"OTEL_TRACES_EXPORTER":        "otlp",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL,
		"OTEL_TRACES_SAMPLER":         "always_on",
	}
	for _, bc := range []struct {
		name string
		env  map[string]string
		rpc  bool // StartRPCSpan instead of StartServerSpan
	}{
		{"tracing-off", map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{"tracing-off-with-traceparent", map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{"sdk-always-on-otlp-http", alwaysOn, false},
		{"rpc-sdk-always-on-otlp-http", alwaysOn, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for k, v := range bc.env {
				b.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background(), telemetry.Options{
				ServiceName: "bench", Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := tel.Shutdown(ctx); err != nil {
					b.Error(err)
				}
			})
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			req.Header.Set("User-Agent", "wrk")
			if bc.name == "tracing-off-with-traceparent" {
				req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			}
			b.ReportAllocs()
			if bc.rpc {
				ctx, md := context.Background(), func(string) string { return "" }
				for b.Loop() {
					_, end := tel.StartRPCSpan(ctx, "/kubeskel.echo.v1.Echo/Say", md)
					end(0, "")
				}
				return
			}
			for b.Loop() {
				_, end := tel.StartServerSpan(req, "/", "GET /")
				end(http.StatusOK)
			}
		})
	}
}

// BenchmarkRequestLogLine measures one request log line through the real
// logger (JSON, with trace ids when the context has a span), with the
// attributes internal/server's middleware logs. Keep the attribute list in
// step with middleware.go. "slog" is the same line through
// slog.Logger.LogAttrs, which reads the clock and the caller's program
// counter; "middleware" is how the middleware logs it
// (logging.LogAttrsAt, with the time it already has).
func BenchmarkRequestLogLine(b *testing.B) {
	logger, err := logging.New(io.Discard, "json", "info")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	attrs := func() []slog.Attr {
		return []slog.Attr{slog.String("method", "GET"), slog.String("path", "/"), slog.String("route", "/"),
			slog.Int("status", 200), slog.Float64("duration_ms", 0.042), slog.String("remote", "127.0.0.1:54321")}
	}
	b.Run("slog", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			logger.LogAttrs(ctx, slog.LevelInfo, "request", attrs()...)
		}
	})
	b.Run("middleware", func(b *testing.B) {
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			logging.LogAttrsAt(ctx, logger, now, slog.LevelInfo, "request", attrs()...)
		}
	})
}
