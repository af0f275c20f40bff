package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/kubeskel/kubeskel/internal/logging"
)

var spanContext = trace.NewSpanContext(trace.SpanContextConfig{
	TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
	SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
	TraceFlags: trace.FlagsSampled,
})

const (
	traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	spanID  = "00f067aa0ba902b7"
)

func TestJSON(t *testing.T) {
	tests := []struct {
		name      string
		ctx       context.Context
		wantTrace bool
	}{
		{"without span", context.Background(), false},
		{"with span", trace.ContextWithSpanContext(context.Background(), spanContext), true},
		{"with invalid span", trace.ContextWithSpanContext(context.Background(), trace.SpanContext{}), false},
		{"with remote span", trace.ContextWithRemoteSpanContext(context.Background(), spanContext), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			logger, err := logging.New(&buf, "json", "info")
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			logger.With("server", "http").InfoContext(tt.ctx, "listening", "addr", "127.0.0.1:8080")
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("output %q is not one JSON object: %v", buf.String(), err)
			}
			want := map[string]any{"level": "INFO", "msg": "listening", "server": "http", "addr": "127.0.0.1:8080"}
			if tt.wantTrace {
				want["trace_id"], want["span_id"] = traceID, spanID
			}
			for k, v := range want {
				if rec[k] != v {
					t.Errorf("%s = %v, want %v (record %s)", k, rec[k], v, buf.String())
				}
			}
			if !tt.wantTrace {
				for _, k := range []string{"trace_id", "span_id"} {
					if _, ok := rec[k]; ok {
						t.Errorf("record has %s without a valid span context: %s", k, buf.String())
					}
				}
			}
		})
	}
}

func TestText(t *testing.T) {
	var buf bytes.Buffer
	logger, err := logging.New(&buf, "text", "info")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	logger.WithGroup("req").InfoContext(trace.ContextWithSpanContext(context.Background(), spanContext), "request", "status", 200)
	out := buf.String()
	for _, want := range []string{"level=INFO", "msg=request", "req.status=200", "trace_id=" + traceID, "span_id=" + spanID} {
		if !strings.Contains(out, want) {
			t.Errorf("text output %q does not contain %q", out, want)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(out), "{") {
		t.Errorf("text output looks like JSON: %q", out)
	}
}

func TestLevel(t *testing.T) {
	tests := []struct {
		level      string
		debug, err bool // whether a debug and an error record are written
	}{
		{"debug", true, true},
		{"info", false, true},
		{"warn", false, true},
		{"error", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			logger, err := logging.New(&buf, "json", tt.level)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			logger.Debug("d")
			if got := buf.Len() > 0; got != tt.debug {
				t.Errorf("debug record written: %t, want %t", got, tt.debug)
			}
			buf.Reset()
			logger.Error("e")
			if got := buf.Len() > 0; got != tt.err {
				t.Errorf("error record written: %t, want %t", got, tt.err)
			}
		})
	}
	var buf bytes.Buffer
	logger, _ := logging.New(&buf, "json", "warn")
	logger.Info("i")
	if buf.Len() != 0 {
		t.Errorf("level warn wrote an info record: %q", buf.String())
	}
}

func TestBadFormatAndLevel(t *testing.T) {
	tests := []struct {
		format, level, wantInErr string
	}{
		{"xml", "info", `"xml"`},
		{"", "info", "format"},
		{"json", "verbose", `"verbose"`},
		{"text", "", "level"},
	}
	for _, tt := range tests {
		t.Run(tt.format+"/"+tt.level, func(t *testing.T) {
			logger, err := logging.New(&bytes.Buffer{}, tt.format, tt.level)
			if err == nil {
				t.Fatalf("New(%q, %q) = %v, nil; want an error", tt.format, tt.level, logger)
			}
			if logger != nil {
				t.Errorf("New returned a logger with the error")
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
		})
	}
}
