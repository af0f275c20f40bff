// Package metrics owns the Prometheus registry: HTTP request metrics per
// route, lifecycle metrics, and the Go runtime and process collectors. It is
// the only package that knows about the Prometheus client.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Registry is a Prometheus registry with the service's metrics registered.
type Registry struct {
	reg *prometheus.Registry

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	panics   prometheus.Counter

	phase       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	phaseSecs   *prometheus.GaugeVec
	drain       prometheus.Gauge
	cut         prometheus.Counter

	rpcs        *prometheus.CounterVec
	rpcDuration *prometheus.HistogramVec
	rpcPanics   prometheus.Counter
	// rpcMethods caches each method's children of rpcs and rpcDuration
	// (fullMethod -> *rpcMethod), so an RPC costs two map loads instead of
	// two label hashes under the vectors' locks. gRPC calls the
	// interceptors only for registered methods, so the map is bounded.
	rpcMethods sync.Map
}

// rpcMethod holds one method's metrics: its duration histogram and its
// counter per status code name, each made on first use.
type rpcMethod struct {
	service, method string
	duration        prometheus.Observer
	byCode          sync.Map // code name -> prometheus.Counter
}

// New returns a registry with the Go runtime and process collectors and the
// service's own metrics. Namespace prefixes the service's metric names.
func New() *Registry {
	r := &Registry{reg: prometheus.NewRegistry()}
	r.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_server_requests_total", Help: "HTTP requests served on the traffic port, by route, method and status code.",
	}, []string{"route", "method", "code"})
	r.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "http_server_request_duration_seconds", Help: "Duration of HTTP requests on the traffic port, by route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route"})
	r.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "http_server_panics_total", Help: "Handler panics recovered on the traffic port.",
	})
	r.phase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubeskel_lifecycle_phase", Help: "1 for the current lifecycle phase, 0 for the others.",
	}, []string{"phase"})
	r.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kubeskel_lifecycle_phase_transitions_total", Help: "Times each lifecycle phase was entered.",
	}, []string{"phase"})
	r.phaseSecs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kubeskel_lifecycle_phase_duration_seconds", Help: "How long each completed lifecycle phase lasted.",
	}, []string{"phase"})
	r.drain = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kubeskel_drain_duration_seconds", Help: "Time from the shutdown signal to the end of the HTTP drain.",
	})
	r.cut = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kubeskel_shutdown_requests_cut_total", Help: "Requests still running when the shutdown deadline was reached and their connections closed.",
	})
	r.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpc_server_handled_total", Help: "RPCs completed on the gRPC port, by service, method and status code.",
	}, []string{"grpc_service", "grpc_method", "grpc_code"})
	r.rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "grpc_server_handling_seconds", Help: "Duration of RPCs on the gRPC port, by service and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"grpc_service", "grpc_method"})
	r.rpcPanics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "grpc_server_panics_total", Help: "Handler panics recovered on the gRPC port (answered with code Internal).",
	})
	r.reg.MustRegister(r.requests, r.duration, r.panics, r.phase, r.transitions, r.phaseSecs, r.drain, r.cut,
		r.rpcs, r.rpcDuration, r.rpcPanics)
	return r
}

// RPC records one finished RPC: fullMethod is "/pkg.Service/Method", code
// the status code's name ("OK").
func (r *Registry) RPC(fullMethod, code string, d time.Duration) {
	v, ok := r.rpcMethods.Load(fullMethod)
	if !ok {
		service, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
		v, _ = r.rpcMethods.LoadOrStore(fullMethod, &rpcMethod{
			service: service, method: method, duration: r.rpcDuration.WithLabelValues(service, method),
		})
	}
	m := v.(*rpcMethod)
	c, ok := m.byCode.Load(code)
	if !ok {
		c, _ = m.byCode.LoadOrStore(code, r.rpcs.WithLabelValues(m.service, m.method, code))
	}
	c.(prometheus.Counter).Inc()
	m.duration.Observe(d.Seconds())
}

// RPCPanic counts a recovered gRPC handler panic.
func (r *Registry) RPCPanic() { r.rpcPanics.Inc() }

// Registerer is where further collectors (health checks, say) register.
func (r *Registry) Registerer() prometheus.Registerer { return r.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{Registry: r.reg})
}

// GaugeFunc registers a gauge whose value is read from f at scrape time.
func (r *Registry) GaugeFunc(name, help string, f func() float64) {
	r.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Panic counts a recovered handler panic.
func (r *Registry) Panic() { r.panics.Inc() }

// Route returns the request observer of one route and method. Label values
// are resolved here, once, so observing a request costs a few atomic adds.
func (r *Registry) Route(route, method string) *RouteObserver {
	return &RouteObserver{reg: r, route: route, method: method, duration: r.duration.WithLabelValues(route)}
}

// RouteObserver records the requests of one route. It is safe for
// concurrent use.
type RouteObserver struct {
	reg           *Registry
	route, method string
	duration      prometheus.Observer
	// byCode caches the counter of each status code 100..599 on first use.
	byCode [500]atomic.Pointer[prometheus.Counter]
}

// Observe records one request with its status code and duration.
func (o *RouteObserver) Observe(method string, code int, d time.Duration) {
	o.duration.Observe(d.Seconds())
	if code < 100 || code > 599 || method != o.method {
		// Rare: an odd status code, or a route serving several methods.
		o.reg.requests.WithLabelValues(o.route, method, strconv.Itoa(code)).Inc()
		return
	}
	slot := &o.byCode[code-100]
	c := slot.Load()
	if c == nil {
		counter := o.reg.requests.WithLabelValues(o.route, o.method, strconv.Itoa(code))
		slot.CompareAndSwap(nil, &counter)
		c = slot.Load()
	}
	(*c).Inc()
}

// SetPhase records that the lifecycle entered phase after the previous phase
// lasted prevDuration.
func (r *Registry) SetPhase(prev, phase string, prevDuration time.Duration) {
	if prev != "" {
		r.phase.WithLabelValues(prev).Set(0)
		r.phaseSecs.WithLabelValues(prev).Set(prevDuration.Seconds())
	}
	r.phase.WithLabelValues(phase).Set(1)
	r.transitions.WithLabelValues(phase).Inc()
}

// Drained records the time from the signal to the end of the drain and
// the number of requests cut at the deadline.
func (r *Registry) Drained(d time.Duration, cut int) {
	r.drain.Set(d.Seconds())
	r.cut.Add(float64(cut))
}

// TLS registers the serving certificate's metrics and returns their
// recorder. Call it only when the traffic port serves TLS, so that a
// cleartext service exports no expiry of 0 (1970) to alert on; at most once
// per Registry (a second call panics, as registering twice does).
func (r *Registry) TLS() *TLSRecorder {
	t := &TLSRecorder{
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubeskel_tls_certificate_expiry_timestamp_seconds",
			Help: "Expiry time (NotAfter) of the certificate served on the traffic port, in seconds since the Unix epoch.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubeskel_tls_certificate_reloads_total",
			Help: "Reloads of changed TLS files, by result (success: now served; failure: the previous certificate is still served).",
		}, []string{"result"}),
	}
	// Both results exist from the start, so that rate() and alerts see a 0.
	t.success, t.failure = t.reloads.WithLabelValues("success"), t.reloads.WithLabelValues("failure")
	r.reg.MustRegister(t.expiry, t.reloads)
	return t
}

// TLSRecorder records the serving certificate's expiry and its reloads. It
// is safe for concurrent use.
type TLSRecorder struct {
	expiry           prometheus.Gauge
	reloads          *prometheus.CounterVec
	success, failure prometheus.Counter
}

// Loaded records the expiry of the certificate now served.
func (t *TLSRecorder) Loaded(notAfter time.Time) {
	t.expiry.Set(float64(notAfter.Unix()))
}

// Reloaded counts a reload of changed files: a success if err is nil, a
// failure otherwise.
func (t *TLSRecorder) Reloaded(err error) {
	if err != nil {
		t.failure.Inc()
		return
	}
	t.success.Inc()
}
