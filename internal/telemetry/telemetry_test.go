package telemetry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func setup(t testing.TB, env map[string]string) (*Telemetry, error) {
	t.Helper()
	return setupLogging(t, env, io.Discard)
}

// setupLogging is setup with OpenTelemetry's own messages written to log.
func setupLogging(t testing.TB, env map[string]string, log io.Writer) (*Telemetry, error) {
	t.Helper()
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_PROPAGATORS", "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE"} {
		t.Setenv(k, env[k])
	}
	return Setup(context.Background(), Options{ServiceName: "test", ServiceVersion: "v0", Logger: slog.New(slog.NewTextHandler(log, nil))})
}

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestDisabledByDefault(t *testing.T) {
	tel, err := setup(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tel.Enabled() {
		t.Fatalf("tracing enabled with OTEL_TRACES_EXPORTER unset")
	}
	t.Run("no incoming trace: context untouched", func(t *testing.T) {
		r := httptest.NewRequest("GET", "/", nil)
		ctx, end := tel.StartServerSpan(r, "/", "GET /")
		end(200)
		if ctx != r.Context() {
			t.Errorf("context changed although there is nothing to carry")
		}
	})
	t.Run("incoming trace id is carried", func(t *testing.T) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Traceparent", traceparent)
		ctx, end := tel.StartServerSpan(r, "/", "GET /")
		end(200)
		sc := trace.SpanContextFromContext(ctx)
		if got, want := sc.TraceID().String(), "4bf92f3577b34da6a3ce929d0e0e4736"; got != want {
			t.Errorf("trace id = %s, want %s", got, want)
		}
		if trace.SpanFromContext(ctx).IsRecording() {
			t.Errorf("a span is recording with tracing disabled")
		}
	})
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of disabled telemetry = %v", err)
	}
}

func TestEnabled(t *testing.T) {
	tests := []struct {
		sampler       string
		wantRecording bool
	}{
		{"always_on", true},
		{"always_off", false},
		{"parentbased_always_on", true},
	}
	for _, tt := range tests {
		t.Run(tt.sampler, func(t *testing.T) {
			tel, err := setup(t, map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_TRACES_SAMPLER": tt.sampler})
			if err != nil {
				t.Fatal(err)
			}
			if tel.Enabled() {
				t.Fatalf("exporter none must disable tracing")
			}
			tel, err = setup(t, map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": tt.sampler})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := tel.Shutdown(context.Background()); err != nil {
					t.Errorf("Shutdown: %v", err)
				}
			}()
			if !tel.Enabled() {
				t.Fatalf("console exporter did not enable tracing")
			}
			r := httptest.NewRequest("GET", "/items/1", nil)
			r.Header.Set("Traceparent", traceparent)
			ctx, end := tel.StartServerSpan(r, "/items/{id}", "GET /items/{id}")
			span := trace.SpanFromContext(ctx)
			if got := span.IsRecording(); got != tt.wantRecording {
				t.Errorf("recording = %v, want %v", got, tt.wantRecording)
			}
			if got := span.SpanContext().TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("span did not continue the incoming trace: %s", got)
			}
			end(500)
		})
	}
}

func TestSetupErrors(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "carrier-pigeon"}, "OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_PROPAGATORS": "tracecontext,nope"}, "OTEL_PROPAGATORS"},
		{map[string]string{"OTEL_PROPAGATORS": "tracecontext, nope"}, "nope"},
		{map[string]string{"OTEL_PROPAGATORS": "nope"}, "OTEL_PROPAGATORS"},
		{map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "5s"}, "OTEL_BSP_SCHEDULE_DELAY"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is larger than OTEL_BSP_MAX_QUEUE_SIZE=100"},
	}
	for _, tt := range tests {
		var log strings.Builder
		_, err := setupLogging(t, tt.env, &log)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Setup with %v = %v, want an error naming %s", tt.env, err, tt.want)
		}
		// The error is the one report: the value is not parsed a second
		// time by a library that logs its own warning.
		if log.Len() != 0 {
			t.Errorf("Setup with %v logged %q besides returning its error", tt.env, log.String())
		}
	}
}

// TestPropagatorList: OTEL_PROPAGATORS entries are trimmed and empty ones
// skipped, as other OpenTelemetry SDKs do; unset means tracecontext and
// baggage.
func TestPropagatorList(t *testing.T) {
	tests := []struct {
		value string
		want  []string // fields the propagator reads and writes
	}{
		{"", []string{"baggage", "traceparent", "tracestate"}},
		{" ", []string{"baggage", "traceparent", "tracestate"}},
		{"tracecontext,baggage", []string{"baggage", "traceparent", "tracestate"}},
		{"tracecontext, baggage", []string{"baggage", "traceparent", "tracestate"}},
		{" tracecontext ,\tbaggage ", []string{"baggage", "traceparent", "tracestate"}},
		{"b3,,tracecontext", []string{"b3", "traceparent", "tracestate"}},
		{"jaeger", []string{"uber-trace-id"}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			var log strings.Builder
			tel, err := setupLogging(t, map[string]string{"OTEL_PROPAGATORS": tt.value}, &log)
			if err != nil {
				t.Fatalf("Setup with OTEL_PROPAGATORS=%q: %v", tt.value, err)
			}
			got := tel.propagator.Fields()
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("fields = %v, want %v", got, tt.want)
			}
			if log.Len() != 0 {
				t.Errorf("Setup logged %q", log.String())
			}
		})
	}
}

// TestDisabledCarriesConfiguredPropagator: with tracing disabled, the
// caller's trace id is carried from whichever header the configured
// propagators read, not only from traceparent.
func TestDisabledCarriesConfiguredPropagator(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		propagators string
		header      http.Header
	}{
		{"", http.Header{"Traceparent": {traceparent}}},
		{"b3", http.Header{"B3": {traceID + "-00f067aa0ba902b7-1"}}},
		{"b3", http.Header{"X-B3-Traceid": {traceID}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-B3-Sampled": {"1"}}},
		{"b3multi", http.Header{"X-B3-Traceid": {traceID}, "X-B3-Spanid": {"00f067aa0ba902b7"}}},
		{"jaeger", http.Header{"Uber-Trace-Id": {traceID + ":00f067aa0ba902b7:0:1"}}},
		{"tracecontext, b3", http.Header{"B3": {traceID + "-00f067aa0ba902b7-1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.propagators+" "+slices.Sorted(maps.Keys(tt.header))[0], func(t *testing.T) {
			tel, err := setup(t, map[string]string{"OTEL_PROPAGATORS": tt.propagators})
			if err != nil {
				t.Fatal(err)
			}
			if tel.Enabled() {
				t.Fatal("tracing enabled with OTEL_TRACES_EXPORTER unset")
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header = tt.header
			ctx, end := tel.StartServerSpan(r, "/", "GET /")
			end(200)
			if got := trace.SpanContextFromContext(ctx).TraceID().String(); got != traceID {
				t.Errorf("trace id = %s, want %s from %v", got, traceID, tt.header)
			}
		})
	}
}

// BenchmarkStartServerSpanDisabled is the cost on every request with
// tracing disabled: without trace headers, and with a traceparent.
func BenchmarkStartServerSpanDisabled(b *testing.B) {
	tel, err := setup(b, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name   string
		header http.Header
	}{
		{"no trace headers", http.Header{"Accept": {"*/*"}, "User-Agent": {"bench"}}},
		{"traceparent", http.Header{"Accept": {"*/*"}, "Traceparent": {traceparent}}},
	} {
		b.Run(bb.name, func(b *testing.B) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header = bb.header
			b.ReportAllocs()
			for b.Loop() {
				_, end := tel.StartServerSpan(r, "/", "GET /")
				end(200)
			}
		})
	}
}

func TestHeaderCarrierMatchesHTTPHeader(t *testing.T) {
	h := http.Header{}
	h.Set("Traceparent", traceparent)
	h.Set("Tracestate", "k=v")
	h.Set("Baggage", "user=1")
	h.Set("X-B3-Traceid", "abc")
	for _, key := range []string{"traceparent", "tracestate", "baggage", "x-b3-traceid", "missing", "Traceparent"} {
		if got, want := headerCarrier(h).Get(key), propagation.HeaderCarrier(h).Get(key); got != want {
			t.Errorf("Get(%q) = %q, want %q as propagation.HeaderCarrier gives", key, got, want)
		}
	}
}

// failingExporter fails every export.
type failingExporter struct{}

func (failingExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error {
	return errors.New("collector unreachable")
}
func (failingExporter) Shutdown(context.Context) error { return nil }

// TestShutdownReportsFailedFlush: a failed export of the last spans is
// Shutdown's error, not only a message to the global error handler; an
// export failing before Shutdown still goes to the SDK.
func TestShutdownReportsFailedFlush(t *testing.T) {
	exp := &flushExporter{SpanExporter: failingExporter{}}
	if err := exp.ExportSpans(context.Background(), nil); err == nil {
		t.Errorf("export before Shutdown returned nil, want its error for the SDK to handle")
	}
	tel := newTelemetry(propagation.TraceContext{})
	tel.exporter = exp
	tel.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	tel.tracer = tel.provider.Tracer("test")
	_, end := tel.StartServerSpan(httptest.NewRequest("GET", "/", nil), "/", "GET /")
	end(200)
	err := tel.Shutdown(context.Background())
	if err == nil || !strings.Contains(err.Error(), "export the last spans: collector unreachable") {
		t.Errorf("Shutdown = %v, want the failed export of the last spans", err)
	}
}

// TestSpanAttributes: the exported server spans carry exactly the attributes
// the semantic conventions require, whatever the order they were set in.
func TestSpanAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel := newTelemetry(propagation.TraceContext{})
	tel.provider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tel.tracer = tel.provider.Tracer("test")

	_, end := tel.StartServerSpan(httptest.NewRequest("POST", "/items/7", nil), "/items/{id}", "POST /items/{id}")
	end(503)
	// The end functions' state is recycled: each span keeps its own
	// attributes, and nothing (the scheme, the error status) carries over.
	_, end = tel.StartServerSpan(httptest.NewRequest("GET", "https://example.com/a/b", nil), "/a/{x}", "GET /a/{x}")
	end(200)
	_, end = tel.StartServerSpan(httptest.NewRequest("GET", "/", nil), "/", "GET /")
	end(204)
	_, endRPC := tel.StartRPCSpan(context.Background(), "/kubeskel.echo.v1.Echo/Say", func(string) string { return "" })
	endRPC(14, "unavailable")
	_, endRPC = tel.StartRPCSpan(context.Background(), "/grpc.health.v1.Health/Check", func(string) string { return "" })
	endRPC(0, "")

	tests := []struct {
		name, kind, status string
		attrs              map[string]string
	}{
		{"POST /items/{id}", "server", "Error", map[string]string{
			"http.request.method": "POST", "http.route": "/items/{id}", "url.path": "/items/7",
			"url.scheme": "http", "http.response.status_code": "503",
		}},
		{"GET /a/{x}", "server", "Unset", map[string]string{
			"http.request.method": "GET", "http.route": "/a/{x}", "url.path": "/a/b",
			"url.scheme": "https", "http.response.status_code": "200",
		}},
		{"GET /", "server", "Unset", map[string]string{
			"http.request.method": "GET", "http.route": "/", "url.path": "/",
			"url.scheme": "http", "http.response.status_code": "204",
		}},
		{"kubeskel.echo.v1.Echo/Say", "server", "Error", map[string]string{
			"rpc.system": "grpc", "rpc.service": "kubeskel.echo.v1.Echo", "rpc.method": "Say", "rpc.grpc.status_code": "14",
		}},
		{"grpc.health.v1.Health/Check", "server", "Unset", map[string]string{
			"rpc.system": "grpc", "rpc.service": "grpc.health.v1.Health", "rpc.method": "Check", "rpc.grpc.status_code": "0",
		}},
	}
	spans := rec.Ended()
	if len(spans) != len(tests) {
		t.Fatalf("%d spans ended, want %d", len(spans), len(tests))
	}
	for i, tt := range tests {
		s := spans[i]
		got := map[string]string{}
		for _, kv := range s.Attributes() {
			got[string(kv.Key)] = kv.Value.String()
		}
		if s.Name() != tt.name || s.SpanKind().String() != tt.kind || s.Status().Code.String() != tt.status || !maps.Equal(got, tt.attrs) {
			t.Errorf("span %d: %q kind %s status %s attributes %v; want %q kind %s status %s attributes %v",
				i, s.Name(), s.SpanKind(), s.Status().Code, got, tt.name, tt.kind, tt.status, tt.attrs)
		}
	}
}
