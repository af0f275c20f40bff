package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a minimal OTLP/HTTP trace receiver: it decodes the
// protobuf export requests and keeps the spans.
type otlpReceiver struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export request", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				o.services = append(o.services, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func (o *otlpReceiver) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.spans)
}

// TestSpanOfLastRequestIsExported: a request served during the pre-stop
// delay has its span exported before the process exits, because telemetry
// is flushed after the drain. The batch processor is told to wait ten
// minutes, so only that final flush can have exported it.
func TestSpanOfLastRequestIsExported(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	defer collector.Close()

	p := start(t, "APP_PRESTOP_DELAY=1500ms", "APP_REQUEST_LOG=true",
		"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+collector.URL, "OTEL_BSP_SCHEDULE_DELAY=600000",
		"OTEL_SERVICE_NAME=kubeskel-test")
	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url(false, "/"), nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET / during the delay: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET / during the delay = %d", resp.StatusCode)
	}
	// Control: nothing is exported yet, so the span can only arrive through
	// the flush at shutdown.
	if n := receiver.count(); n != 0 {
		t.Fatalf("%d spans exported before shutdown; the test cannot tell the flush did it", n)
	}

	if got := p.wait(20 * time.Second); got != 0 {
		t.Fatalf("exit code = %d, want 0", got)
	}
	receiver.mu.Lock()
	defer receiver.mu.Unlock()
	var found *tracepb.Span
	for _, s := range receiver.spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			found = s
		}
	}
	if found == nil {
		t.Fatalf("no span with trace id %s among %d exported", traceID, len(receiver.spans))
	}
	if got, want := found.Name, "GET /"; got != want {
		t.Errorf("span name = %q, want %q", got, want)
	}
	if got, want := found.Kind, tracepb.Span_SPAN_KIND_SERVER; got != want {
		t.Errorf("span kind = %v, want %v", got, want)
	}
	attrs := map[string]string{}
	for _, a := range found.Attributes {
		attrs[a.Key] = a.GetValue().GetStringValue()
		if a.Key == "http.response.status_code" {
			attrs[a.Key] = "int"
			if a.GetValue().GetIntValue() != 200 {
				t.Errorf("http.response.status_code = %d, want 200", a.GetValue().GetIntValue())
			}
		}
	}
	if got, want := attrs["http.route"], "/"; got != want {
		t.Errorf("http.route = %q, want %q", got, want)
	}
	if attrs["http.response.status_code"] != "int" {
		t.Errorf("span has no http.response.status_code")
	}
	if len(receiver.services) == 0 || receiver.services[0] != "kubeskel-test" {
		t.Errorf("service.name = %v, want kubeskel-test from OTEL_SERVICE_NAME", receiver.services)
	}
	// The request log line carries the same trace id.
	logged := p.logs.all(func(r map[string]any) bool { return r["msg"] == "request" && r["trace_id"] == traceID })
	if len(logged) != 1 {
		t.Errorf("request log lines with trace_id %s: %d, want 1", traceID, len(logged))
	}
}

// TestNoExporterByDefault: with OTEL_TRACES_EXPORTER unset nothing is sent,
// even to a collector listening on the standard endpoint variable.
func TestNoExporterByDefault(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	defer collector.Close()
	p := start(t, "APP_PRESTOP_DELAY=0s", "OTEL_EXPORTER_OTLP_ENDPOINT="+collector.URL, "APP_REQUEST_LOG=true")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url(false, "/"), nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	p.signal(syscall.SIGTERM)
	if got := p.wait(20 * time.Second); got != 0 {
		t.Fatalf("exit code = %d, want 0", got)
	}
	if n := receiver.count(); n != 0 {
		t.Errorf("%d spans exported with OTEL_TRACES_EXPORTER unset, want 0", n)
	}
	// The caller's trace id still reaches the logs.
	if len(p.logs.all(func(r map[string]any) bool { return r["msg"] == "request" && r["trace_id"] != nil })) != 1 {
		t.Errorf("request log line lacks the caller's trace_id")
	}
}
