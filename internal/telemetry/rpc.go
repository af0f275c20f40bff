package telemetry

import (
	"context"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// StartRPCSpan is StartServerSpan for a gRPC call: get looks a key up in the
// call's metadata (lower-case keys), fullMethod is "/pkg.Service/Method".
// It starts a server span named "pkg.Service/Method" when tracing is
// enabled; end takes the gRPC status code (0 is OK) and message, and must
// be called exactly once (its state is recycled after the call). With
// tracing disabled and no trace metadata it costs a few lookups and no
// allocation.
func (t *Telemetry) StartRPCSpan(ctx context.Context, fullMethod string, get func(key string) string) (context.Context, func(code uint32, msg string)) {
	if t.provider != nil || t.hasTraceMetadata(get) {
		ctx = t.propagator.Extract(ctx, getCarrier(get))
	}
	if t.provider == nil {
		return ctx, noRPCEnd
	}
	name := strings.TrimPrefix(fullMethod, "/")
	ctx, span := t.tracer.Start(ctx, name, t.serverKind...)
	if !span.IsRecording() {
		return ctx, func(uint32, string) { span.End() }
	}
	// All attributes in one call at the end, as StartServerSpan does, and
	// for the same reason; the end state is recycled as serverSpanEnd is.
	e, _ := t.rpcEnds.Get().(*rpcSpanEnd)
	if e == nil {
		e = &rpcSpanEnd{pool: &t.rpcEnds}
		e.fn = e.end
	}
	e.span = span
	e.service, e.method, _ = strings.Cut(name, "/")
	return ctx, e.fn
}

// rpcSpanEnd is serverSpanEnd for a gRPC call: the end function's state,
// recycled through a pool once the span has ended, so a sampled call
// allocates neither a closure nor the attribute array. The end function
// must be called exactly once.
type rpcSpanEnd struct {
	span            trace.Span
	service, method string
	attrs           [4]attribute.KeyValue
	fn              func(code uint32, msg string) // e.end, bound once per pooled value
	pool            *sync.Pool
}

func (e *rpcSpanEnd) end(code uint32, msg string) {
	span := e.span
	e.attrs = [4]attribute.KeyValue{
		attribute.String("rpc.system", "grpc"),
		attribute.String("rpc.service", e.service),
		attribute.String("rpc.method", e.method),
		attribute.Int("rpc.grpc.status_code", int(code)),
	}
	span.SetAttributes(e.attrs[:]...) // the SDK copies them into the span
	// The semantic conventions mark these server codes as errors.
	switch code {
	case 2, 4, 12, 13, 14, 15: // Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss
		span.SetStatus(codes.Error, msg)
	}
	// Nothing of the call stays reachable from the pool.
	*e = rpcSpanEnd{fn: e.fn, pool: e.pool}
	e.pool.Put(e)
	span.End()
}

func noRPCEnd(uint32, string) {}

func (t *Telemetry) hasTraceMetadata(get func(string) string) bool {
	for _, k := range t.metadataKeys {
		if get(k) != "" {
			return true
		}
	}
	return false
}

// getCarrier reads metadata through a lookup function; Set and Keys are
// not used by extraction.
type getCarrier func(string) string

var _ propagation.TextMapCarrier = getCarrier(nil)

func (g getCarrier) Get(key string) string { return g(strings.ToLower(key)) }
func (g getCarrier) Set(string, string)    {}
func (g getCarrier) Keys() []string        { return nil }
