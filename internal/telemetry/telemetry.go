// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and starts server spans for HTTP requests. It is the
// only package that configures the OpenTelemetry SDK, and Setup is the one
// place where OpenTelemetry globals are set.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Options configure Setup.
type Options struct {
	// ServiceName is used when neither OTEL_SERVICE_NAME nor
	// OTEL_RESOURCE_ATTRIBUTES name the service.
	ServiceName string
	// ServiceVersion becomes the service.version resource attribute.
	ServiceVersion string
	// Logger receives OpenTelemetry's internal errors and messages.
	Logger *slog.Logger
}

// Telemetry holds the tracer provider and propagator. The zero value is not
// usable; create it with Setup.
type Telemetry struct {
	provider   *sdktrace.TracerProvider // nil when the exporter is "none"
	exporter   *flushExporter
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// serverKind holds the one option of every server span, made once:
	// converting it to a trace.SpanStartOption on every request would
	// allocate, and so would the variadic slice of a call that lists it
	// (Start is an interface method, so its arguments escape); passed as
	// serverKind... the slice is this one.
	serverKind []trace.SpanStartOption
	// ends recycles the state of StartServerSpan's end function (see
	// serverSpanEnd), so a sampled request allocates none of it.
	ends sync.Pool
	// rpcEnds does the same for StartRPCSpan (see rpcSpanEnd).
	rpcEnds sync.Pool
	// fields are the canonical header names the propagator reads. With
	// tracing disabled a request is only extracted from when one of them is
	// present, so a request without trace headers costs a few map lookups.
	fields []string
	// metadataKeys are fields in lower case, as gRPC metadata keys are.
	metadataKeys []string
}

// Setup reads the standard variables: OTEL_TRACES_EXPORTER (otlp, console or
// none; none when unset, so a default run makes no network calls), every
// OTEL_EXPORTER_OTLP_* variable, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* (see batchOptionsFromEnv: a bad
// value is an error) and OTEL_PROPAGATORS (default W3C tracecontext and
// baggage). It sets the global tracer provider, propagator
// and error handler. Call Shutdown to flush spans before exiting.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	logger := o.Logger
	otel.SetLogger(logr.FromSlogHandler(logger.Handler()))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry error", "err", err)
	}))

	propagator, err := propagatorFromEnv(os.Getenv("OTEL_PROPAGATORS"))
	if err != nil {
		return nil, err
	}
	otel.SetTextMapPropagator(propagator)

	batch, err := batchOptionsFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	exporter, err := spanExporterFromEnv(ctx)
	if err != nil {
		return nil, err
	}
	t := newTelemetry(propagator)
	if exporter == nil {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return t, nil
	}

	// The service name from the environment wins over our default: Merge
	// prefers its second argument.
	res, err := resource.Merge(
		resource.NewSchemaless(semconv.ServiceName(o.ServiceName), semconv.ServiceVersion(o.ServiceVersion)),
		resource.Environment(),
	)
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: build resource: %w", err)
	}
	res, err = resource.Merge(resource.Default(), res)
	if err != nil {
		return nil, fmt.Errorf("build resource: %w", err)
	}
	// The SDK reads OTEL_TRACES_SAMPLER itself.
	t.exporter = &flushExporter{SpanExporter: exporter}
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(newBatcher(t.exporter, batch, otel.Handle)), sdktrace.WithResource(res))
	t.tracer = t.provider.Tracer("github.com/kubeskel/kubeskel/internal/telemetry")
	otel.SetTracerProvider(t.provider)
	return t, nil
}

// newTelemetry returns a Telemetry with tracing off that carries trace
// context with propagator; Setup turns tracing on.
func newTelemetry(propagator propagation.TextMapPropagator) *Telemetry {
	t := &Telemetry{propagator: propagator, fields: extractFields(propagator), serverKind: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}}
	for _, f := range t.fields {
		t.metadataKeys = append(t.metadataKeys, strings.ToLower(f))
	}
	t.tracer = noop.NewTracerProvider().Tracer("")
	return t
}

// propagatorFromEnv builds the propagator named by value, a comma-separated
// OTEL_PROPAGATORS list. Spaces around each name are ignored and empty names
// skipped, as other OpenTelemetry SDKs do; an empty list means the default,
// W3C tracecontext and baggage. An unknown name is an error naming the
// variable. The variable is parsed here only: autoprop.NewTextMapPropagator
// would parse it again and log its own warning for a bad value.
func propagatorFromEnv(value string) (propagation.TextMapPropagator, error) {
	var names []string
	for name := range strings.SplitSeq(value, ",") {
		if name = strings.TrimSpace(name); name != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}), nil
	}
	p, err := autoprop.TextMapPropagator(names...)
	if err != nil {
		return nil, fmt.Errorf("OTEL_PROPAGATORS: %w", err)
	}
	return p, nil
}

// extractFields returns the canonical names of the headers whose presence
// means p may find a trace context, from its Fields, computed once so the
// request path does no string work. Two corrections to Fields: tracestate is
// left out, since it means nothing without traceparent (one map lookup less
// on every request); and the b3 propagator lists only the single "b3" header
// it writes, but it also reads the X-B3-* headers, of which X-B3-TraceId is
// required.
func extractFields(p propagation.TextMapPropagator) []string {
	var fields []string
	for _, f := range p.Fields() {
		switch f {
		case "tracestate":
			continue
		case "b3":
			fields = append(fields, textproto.CanonicalMIMEHeaderKey("x-b3-traceid"))
		}
		fields = append(fields, textproto.CanonicalMIMEHeaderKey(f))
	}
	slices.Sort(fields)
	return slices.Compact(fields)
}

// hasTraceHeader reports whether h carries any header the propagator reads.
func (t *Telemetry) hasTraceHeader(h http.Header) bool {
	for _, f := range t.fields {
		if len(h[f]) > 0 {
			return true
		}
	}
	return false
}

// Enabled reports whether spans are recorded and exported.
func (t *Telemetry) Enabled() bool { return t.provider != nil }

// Shutdown exports the spans still buffered and stops the exporter. It
// returns when done or when ctx ends, whichever is first, and its error
// includes a failed export of those last spans (which the SDK alone would
// only pass to the global error handler). It is a no-op when tracing is
// disabled.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	t.exporter.startFlush()
	err := t.provider.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("shut down tracer provider: %w", err)
	}
	if exportErr := t.exporter.flushErr(); exportErr != nil {
		err = errors.Join(err, fmt.Errorf("export the last spans: %w", exportErr))
	}
	return err
}

// flushExporter keeps the errors of exports made once Shutdown has begun,
// so Shutdown can return them; before that, errors go to the SDK as usual.
type flushExporter struct {
	sdktrace.SpanExporter
	mu       sync.Mutex
	flushing bool
	err      error
}

func (e *flushExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	if err == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.flushing {
		return err
	}
	e.err = errors.Join(e.err, err)
	return nil
}

func (e *flushExporter) startFlush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.flushing = true
}

func (e *flushExporter) flushErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// noEnd is returned when no span was started, so unsampled requests allocate
// nothing here.
func noEnd(int) {}

// StartServerSpan extracts the caller's trace context from r and, when
// tracing is enabled, starts a server span named "METHOD route". It returns
// the request context to use and a function to call with the response status
// when the request is done, exactly once (its state is recycled after the
// call). With tracing disabled no span is created, but a
// remote trace context is still carried so logs and outgoing calls keep the
// caller's trace id.
func (t *Telemetry) StartServerSpan(r *http.Request, route, spanName string) (context.Context, func(status int)) {
	ctx := r.Context()
	if t.provider != nil || t.hasTraceHeader(r.Header) {
		ctx = t.propagator.Extract(ctx, headerCarrier(r.Header))
	}
	if t.provider == nil {
		return ctx, noEnd
	}
	ctx, span := t.tracer.Start(ctx, spanName, t.serverKind...)
	if !span.IsRecording() {
		return ctx, func(int) { span.End() }
	}
	// Only the attributes the semantic conventions require, since every
	// attribute costs allocations on every span, all set in one call when
	// the request ends: the SDK then allocates the span's attribute slice
	// once, at its final size. Passed to Start instead (and the status
	// appended at the end), they cost the option's and the config's copies
	// of the slice and its regrowth for the status: with the span-kind
	// option made once, 21–23 → 13–16 allocations per span, export included
	// (BENCHMARKS.md, "Go benchmarks").
	// The price: a sampler cannot read them. None of the samplers
	// OTEL_TRACES_SAMPLER names does; a service that adds an
	// attribute-based sampler passes them to Start with
	// trace.WithAttributes.
	e, _ := t.ends.Get().(*serverSpanEnd)
	if e == nil {
		e = &serverSpanEnd{pool: &t.ends}
		e.fn = e.end
	}
	e.span, e.method, e.path, e.route, e.scheme = span, r.Method, r.URL.Path, route, "http"
	if r.TLS != nil {
		e.scheme = "https"
	}
	return ctx, e.fn
}

// serverSpanEnd is what the end function of a recorded server span needs.
// It is recycled through a pool once the span has ended: a closure over
// these fields, and the attribute array that SetAttributes' variadic
// argument would put on the heap, cost two allocations per sampled request.
// The price is the contract that StartServerSpan's caller already keeps:
// the end function is called exactly once.
type serverSpanEnd struct {
	span                        trace.Span
	method, path, route, scheme string
	attrs                       [5]attribute.KeyValue
	fn                          func(status int) // e.end, bound once per pooled value
	pool                        *sync.Pool
}

func (e *serverSpanEnd) end(status int) {
	span := e.span
	e.attrs = [5]attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(e.method),
		semconv.HTTPRoute(e.route),
		semconv.URLPath(e.path),
		semconv.URLScheme(e.scheme),
		semconv.HTTPResponseStatusCode(status),
	}
	span.SetAttributes(e.attrs[:]...) // the SDK copies them into the span
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	// Nothing of the request stays reachable from the pool.
	*e = serverSpanEnd{fn: e.fn, pool: e.pool}
	e.pool.Put(e)
	span.End()
}

// headerCarrier is propagation.HeaderCarrier without its per-lookup cost:
// propagators ask for lower-case keys, which http.Header.Get canonicalizes
// into a new string on every call. The W3C keys are mapped to their
// canonical form here; any other key takes the ordinary path.
type headerCarrier http.Header

func (h headerCarrier) Get(key string) string {
	var v []string
	switch key {
	case "traceparent":
		v = h["Traceparent"]
	case "tracestate":
		v = h["Tracestate"]
	case "baggage":
		v = h["Baggage"]
	default:
		return http.Header(h).Get(key)
	}
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (h headerCarrier) Set(key, value string) { http.Header(h).Set(key, value) }

func (h headerCarrier) Keys() []string { return propagation.HeaderCarrier(h).Keys() }
