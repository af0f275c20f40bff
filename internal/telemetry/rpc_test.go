package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func metadataGetter(md map[string]string) func(string) string {
	return func(k string) string { return md[k] }
}

// StartRPCSpan carries the caller's trace id from gRPC metadata (lower-case
// keys) with tracing off, and continues it in a recording span with tracing
// on.
func TestStartRPCSpan(t *testing.T) {
	md := metadataGetter(map[string]string{"traceparent": traceparent})
	const want = "4bf92f3577b34da6a3ce929d0e0e4736"

	off, err := setup(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	base := context.Background()
	ctx, end := off.StartRPCSpan(base, "/kubeskel.echo.v1.Echo/Say", metadataGetter(nil))
	end(0, "")
	if ctx != base {
		t.Errorf("tracing off, no metadata: context changed")
	}
	ctx, end = off.StartRPCSpan(base, "/kubeskel.echo.v1.Echo/Say", md)
	end(0, "")
	if got := trace.SpanContextFromContext(ctx).TraceID().String(); got != want {
		t.Errorf("tracing off: trace id = %s, want %s", got, want)
	}
	if trace.SpanFromContext(ctx).IsRecording() {
		t.Errorf("tracing off: a span is recording")
	}

	on, err := setup(t, map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "always_on"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := on.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	ctx, end = on.StartRPCSpan(base, "/kubeskel.echo.v1.Echo/Say", md)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() || span.SpanContext().TraceID().String() != want {
		t.Errorf("tracing on: span recording %v trace %s, want recording and %s", span.IsRecording(), span.SpanContext().TraceID(), want)
	}
	end(13, "internal error")
}

// With tracing off, a call without trace metadata allocates nothing in
// StartRPCSpan and its end: the doc comment's promise, on every RPC.
func TestStartRPCSpanOffAllocatesNothing(t *testing.T) {
	off, err := setup(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	base, get := context.Background(), metadataGetter(map[string]string{"user-agent": "grpc-go"})
	allocs := testing.AllocsPerRun(100, func() {
		_, end := off.StartRPCSpan(base, "/kubeskel.echo.v1.Echo/Say", get)
		end(0, "")
	})
	if allocs != 0 {
		t.Errorf("StartRPCSpan with tracing off and no trace metadata: %.1f allocations per call, want 0", allocs)
	}
}
