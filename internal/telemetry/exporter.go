package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// spanExporterFromEnv creates the span exporter that OTEL_TRACES_EXPORTER
// names, as contrib's autoexport does for traces, without linking
// autoexport's metric and log exporters (≈ 2.7 MB and 94 packages kubeskel
// never uses, paid at start-up and in resident pages):
//
//   - unset, empty or "none": no exporter (nil), so tracing is off;
//   - "otlp": OTLP over OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
//     OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf; "grpc" selects gRPC.
//     Each exporter reads its own OTEL_EXPORTER_OTLP_* variables;
//   - "console": human-readable JSON spans on standard output.
//
// Any other value, or a list (the specification allows one; autoexport does
// not), is an error naming the variable.
func spanExporterFromEnv(ctx context.Context) (sdktrace.SpanExporter, error) {
	switch name := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); name {
	case "", "none":
		return nil, nil
	case "console":
		e, err := stdouttrace.New()
		if err != nil {
			return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=console: %w", err)
		}
		return e, nil
	case "otlp":
		variable, protocol := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
		if protocol == "" {
			variable, protocol = "OTEL_EXPORTER_OTLP_PROTOCOL", strings.TrimSpace(os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
		}
		var e sdktrace.SpanExporter
		var err error
		switch protocol {
		case "", "http/protobuf":
			e, err = otlptracehttp.New(ctx)
		case "grpc":
			e, err = otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("%s: unsupported protocol %q; want grpc or http/protobuf", variable, protocol)
		}
		if err != nil {
			return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=otlp: create exporter: %w", err)
		}
		return e, nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: unsupported exporter %q; want otlp, console or none", name)
	}
}
