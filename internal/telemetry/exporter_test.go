package telemetry

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// grpcCollector counts OTLP/gRPC trace exports.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	exports atomic.Int64
}

func (c *grpcCollector) Export(context.Context, *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.exports.Add(1)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// TestSpanExporterFromEnv: OTEL_TRACES_EXPORTER and the OTLP protocol
// variables choose the exporter, and a span really reaches the collector of
// the chosen protocol (an OTLP/HTTP one and an OTLP/gRPC one listen; the
// endpoint points at the one the case expects, so a wrong choice fails the
// export).
func TestSpanExporterFromEnv(t *testing.T) {
	var httpExports atomic.Int64
	httpSink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/traces" && r.Method == http.MethodPost {
			httpExports.Add(1)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer httpSink.Close()
	l, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcSink := &grpcCollector{}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, grpcSink)
	go gs.Serve(l) //nolint:errcheck // stopped below
	defer gs.Stop()

	tests := []struct {
		name                            string
		exporter, protocol, tracesProto string
		want                            string // off, console, http, grpc, or the variable an error names
	}{
		{"unset", "", "", "", "off"},
		{"none", "none", "", "", "off"},
		{"none, spaces", " none ", "", "", "off"},
		{"console", "console", "", "", "console"},
		{"otlp defaults to http/protobuf", "otlp", "", "", "http"},
		{"otlp http/protobuf", "otlp", "http/protobuf", "", "http"},
		{"otlp grpc", "otlp", "grpc", "", "grpc"},
		{"traces protocol wins", "otlp", "http/protobuf", "grpc", "grpc"},
		{"traces protocol wins over a bad general one", "otlp", "carrier-pigeon", "http/protobuf", "http"},
		{"bad protocol", "otlp", "http/json", "", "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{"bad traces protocol", "otlp", "grpc", "udp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
		{"unknown exporter", "zipkin", "", "", "OTEL_TRACES_EXPORTER"},
		{"a list", "otlp,console", "", "", "OTEL_TRACES_EXPORTER"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			endpoint := httpSink.URL
			if tt.want == "grpc" {
				endpoint = "http://" + l.Addr().String()
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.protocol)
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", tt.tracesProto)
			httpBefore, grpcBefore := httpExports.Load(), grpcSink.exports.Load()
			tel, err := setup(t, map[string]string{"OTEL_TRACES_EXPORTER": tt.exporter, "OTEL_TRACES_SAMPLER": "always_on"})
			switch tt.want {
			case "off", "console", "http", "grpc":
				if err != nil {
					t.Fatalf("Setup = %v", err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Setup = %v, want an error naming %s", err, tt.want)
				}
				return
			}
			if got, want := tel.Enabled(), tt.want != "off"; got != want {
				t.Fatalf("Enabled() = %v, want %v", got, want)
			}
			if tt.want == "http" || tt.want == "grpc" {
				_, end := tel.StartServerSpan(httptest.NewRequest("GET", "/", nil), "/", "GET /")
				end(200)
			}
			if err := tel.Shutdown(context.Background()); err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			var wantHTTP, wantGRPC int64
			switch tt.want {
			case "http":
				wantHTTP = 1
			case "grpc":
				wantGRPC = 1
			}
			gotHTTP, gotGRPC := httpExports.Load()-httpBefore, grpcSink.exports.Load()-grpcBefore
			if gotHTTP != wantHTTP || gotGRPC != wantGRPC {
				t.Errorf("exports: OTLP/HTTP %d, OTLP/gRPC %d; want %d and %d", gotHTTP, gotGRPC, wantHTTP, wantGRPC)
			}
		})
	}
}
