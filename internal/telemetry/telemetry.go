// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables and starts server spans for HTTP requests. It is the
// only package that configures the OpenTelemetry SDK, and Setup is the one
// place where OpenTelemetry globals are set.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel"
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
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
}

// Setup reads the standard variables: OTEL_TRACES_EXPORTER (otlp, console or
// none; none when unset, so a default run makes no network calls), every
// OTEL_EXPORTER_OTLP_* variable, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_* and OTEL_PROPAGATORS (default W3C
// tracecontext and baggage). It sets the global tracer provider, propagator
// and error handler. Call Shutdown to flush spans before exiting.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	logger := o.Logger
	otel.SetLogger(logr.FromSlogHandler(logger.Handler()))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry error", "err", err)
	}))

	// autoprop's own constructor only logs an unknown OTEL_PROPAGATORS entry;
	// ask it by name so a typo is a start-up error instead.
	propagator := autoprop.NewTextMapPropagator()
	if names := os.Getenv("OTEL_PROPAGATORS"); names != "" {
		p, err := autoprop.TextMapPropagator(strings.Split(names, ",")...)
		if err != nil {
			return nil, fmt.Errorf("OTEL_PROPAGATORS: %w", err)
		}
		propagator = p
	}
	otel.SetTextMapPropagator(propagator)

	exporter, err := autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(
		func(context.Context) (sdktrace.SpanExporter, error) { return nil, nil }))
	if err != nil {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER: create span exporter: %w", err)
	}
	t := &Telemetry{propagator: propagator}
	if exporter == nil || autoexport.IsNoneSpanExporter(exporter) {
		t.tracer = noop.NewTracerProvider().Tracer("")
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
	// The SDK reads OTEL_TRACES_SAMPLER and OTEL_BSP_* itself.
	t.provider = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	t.tracer = t.provider.Tracer("github.com/kubeskel/kubeskel/internal/telemetry")
	otel.SetTracerProvider(t.provider)
	return t, nil
}

// Enabled reports whether spans are recorded and exported.
func (t *Telemetry) Enabled() bool { return t.provider != nil }

// Shutdown exports the spans still buffered and stops the exporter. It
// returns when done or when ctx ends, whichever is first. It is a no-op when
// tracing is disabled.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.provider == nil {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("shut down tracer provider: %w", err)
	}
	return nil
}

// noEnd is returned when no span was started, so unsampled requests allocate
// nothing here.
func noEnd(int) {}

// StartServerSpan extracts the caller's trace context from r and, when
// tracing is enabled, starts a server span named "METHOD route". It returns
// the request context to use and a function to call with the response status
// when the request is done. With tracing disabled no span is created, but a
// remote trace context is still carried so logs and outgoing calls keep the
// caller's trace id.
func (t *Telemetry) StartServerSpan(r *http.Request, route, spanName string) (context.Context, func(status int)) {
	ctx := r.Context()
	if r.Header != nil && (len(r.Header["Traceparent"]) > 0 || len(r.Header["Baggage"]) > 0 || t.provider != nil) {
		ctx = t.propagator.Extract(ctx, headerCarrier(r.Header))
	}
	if t.provider == nil {
		return ctx, noEnd
	}
	// The attributes known at the start are passed to Start, so samplers can
	// use them; only those the semantic conventions require or that identify
	// the route, since every attribute costs allocations on every span.
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ctx, span := t.tracer.Start(ctx, spanName, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		semconv.HTTPRequestMethodKey.String(r.Method),
		semconv.HTTPRoute(route),
		semconv.URLPath(r.URL.Path),
		semconv.URLScheme(scheme),
	))
	if !span.IsRecording() {
		return ctx, func(int) { span.End() }
	}
	return ctx, func(status int) {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		span.End()
	}
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
