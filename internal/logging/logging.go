// Package logging builds the service's structured logger: log/slog, JSON or
// text, with the trace and span ids of the context added to every record.
package logging

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// New returns a logger writing to w in format "json" or "text" at level
// "debug", "info", "warn" or "error". Records logged with a context that
// carries a valid span context get trace_id and span_id attributes.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("parse log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch format {
	case "json":
		h = slog.NewJSONHandler(w, opts)
	case "text":
		h = slog.NewTextHandler(w, opts)
	default:
		return nil, fmt.Errorf("unknown log format %q (want json or text)", format)
	}
	return slog.New(traceHandler{h}), nil
}

// LogAttrsAt is l.LogAttrs for a caller that has already read the clock:
// the record's time is t. Unlike slog.Logger's methods it records no
// program counter, so it does not walk the caller's stack (runtime.Callers,
// about 2,000 instructions, BENCHMARKS.md): a handler with AddSource prints
// no source for it. The loggers New builds never print the source. It is
// meant for lines logged on every request.
func LogAttrsAt(ctx context.Context, l *slog.Logger, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) {
	h := l.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	// slog.Logger drops the handler's error too: a logger has no caller to
	// return it to.
	_ = h.Handle(ctx, r)
}

// traceHandler adds the trace and span ids of the record's context.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		// hex into stack buffers: one allocation per id instead of two.
		tid, sid := sc.TraceID(), sc.SpanID()
		var tb [32]byte
		var sb [16]byte
		hex.Encode(tb[:], tid[:])
		hex.Encode(sb[:], sid[:])
		r.AddAttrs(slog.String("trace_id", string(tb[:])), slog.String("span_id", string(sb[:])))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
