package telemetry

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

func setup(t *testing.T, env map[string]string) (*Telemetry, error) {
	t.Helper()
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_PROPAGATORS", "OTEL_TRACES_SAMPLER", "OTEL_SERVICE_NAME"} {
		t.Setenv(k, env[k])
	}
	return Setup(context.Background(), Options{ServiceName: "test", ServiceVersion: "v0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
			defer tel.Shutdown(context.Background())
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
	}
	for _, tt := range tests {
		_, err := setup(t, tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Setup with %v = %v, want an error naming %s", tt.env, err, tt.want)
		}
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
