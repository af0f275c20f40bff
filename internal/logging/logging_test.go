package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

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

// recordHandler keeps the records it is given.
type recordHandler struct {
	level   slog.Level
	records *[]slog.Record
}

func (h recordHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	*h.records = append(*h.records, r)
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestLogAttrsAt(t *testing.T) {
	at := time.Date(2026, 12, 7, 12, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name  string
		level slog.Level
		want  bool
	}{
		{"enabled", slog.LevelInfo, true},
		{"below the handler's level", slog.LevelDebug, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []slog.Record
			l := slog.New(recordHandler{level: slog.LevelInfo, records: &got})
			logging.LogAttrsAt(context.Background(), l, at, tt.level, "request", slog.String("method", "GET"), slog.Int("status", 200))
			if !tt.want {
				if len(got) != 0 {
					t.Fatalf("%d records handled below the level, want none", len(got))
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d records handled, want 1", len(got))
			}
			r := got[0]
			if !r.Time.Equal(at) || r.Level != tt.level || r.Message != "request" || r.PC != 0 {
				t.Errorf("record time %v level %v msg %q pc %#x, want %v %v %q 0", r.Time, r.Level, r.Message, r.PC, at, tt.level, "request")
			}
			var attrs []string
			r.Attrs(func(a slog.Attr) bool {
				attrs = append(attrs, a.String())
				return true
			})
			if want := []string{"method=GET", "status=200"}; !slices.Equal(attrs, want) {
				t.Errorf("attrs %q, want %q", attrs, want)
			}
		})
	}

	// Through New's JSON handler: the same line as LogAttrs, with t as its
	// time and the trace ids of the context.
	var buf bytes.Buffer
	logger, err := logging.New(&buf, "json", "info")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx := trace.ContextWithSpanContext(context.Background(), spanContext)
	logging.LogAttrsAt(ctx, logger, at, slog.LevelInfo, "request", slog.String("route", "/"))
	want := `{"time":"2026-12-07T12:00:00.123456789Z","level":"INFO","msg":"request","route":"/","trace_id":"` + traceID + `","span_id":"` + spanID + `"}` + "\n"
	if buf.String() != want {
		t.Errorf("line\n%s want\n%s", buf.String(), want)
	}
}
