package metrics_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubeskel/kubeskel/internal/metrics"
)

// scrape returns the Prometheus text exposition served by r.Handler().
func scrape(t *testing.T, r *metrics.Registry) string {
	t.Helper()
	w := httptest.NewRecorder()
	r.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics = %d: %s", w.Code, w.Body)
	}
	body, _ := io.ReadAll(w.Body)
	return string(body)
}

// wantLines fails the test for each line missing from the exposition.
func wantLines(t *testing.T, exposition string, lines ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(exposition, "\n") {
		have[l] = true
	}
	for _, l := range lines {
		if !have[l] {
			t.Errorf("metrics lack line %q", l)
		}
	}
}

// lacks fails the test if any line of the exposition starts with prefix.
func lacks(t *testing.T, exposition, prefix string) {
	t.Helper()
	for _, l := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(l, prefix) {
			t.Errorf("metrics have unexpected line %q", l)
		}
	}
}

func TestRouteObserve(t *testing.T) {
	r := metrics.New()
	x := r.Route("/x", "GET")
	for range 2 {
		x.Observe("GET", 200, 2*time.Millisecond)
	}
	x.Observe("GET", 500, 2*time.Millisecond)
	x.Observe("HEAD", 200, 2*time.Millisecond) // GET routes also serve HEAD
	x.Observe("GET", 999, 2*time.Millisecond)  // odd status code
	x.Observe("GET", 42, 2*time.Millisecond)
	r.Route("unmatched", "").Observe("GET", 404, 20*time.Second)
	// A second observer of the same route adds to the same series.
	r.Route("/x", "GET").Observe("GET", 200, 2*time.Millisecond)

	m := scrape(t, r)
	wantLines(t, m,
		`http_server_requests_total{code="200",method="GET",route="/x"} 3`,
		`http_server_requests_total{code="500",method="GET",route="/x"} 1`,
		`http_server_requests_total{code="200",method="HEAD",route="/x"} 1`,
		`http_server_requests_total{code="999",method="GET",route="/x"} 1`,
		`http_server_requests_total{code="42",method="GET",route="/x"} 1`,
		`http_server_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`http_server_request_duration_seconds_bucket{route="/x",le="0.001"} 0`,
		`http_server_request_duration_seconds_bucket{route="/x",le="0.0025"} 7`,
		`http_server_request_duration_seconds_bucket{route="/x",le="+Inf"} 7`,
		`http_server_request_duration_seconds_count{route="/x"} 7`,
		`http_server_request_duration_seconds_sum{route="/x"} 0.014`,
		`http_server_request_duration_seconds_bucket{route="unmatched",le="10"} 0`,
		`http_server_request_duration_seconds_bucket{route="unmatched",le="30"} 1`,
		`http_server_request_duration_seconds_count{route="unmatched"} 1`,
	)
	// The method label is the request's; a route registered without one
	// does not add an empty label value.
	lacks(t, m, `http_server_requests_total{code="404",method="",`)
}

func TestRouteObserveConcurrent(t *testing.T) {
	r := metrics.New()
	o := r.Route("/c", "POST")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range 500 {
				o.Observe("POST", 200+i%2, time.Millisecond) // 200 and 201
			}
		})
	}
	wg.Wait()
	wantLines(t, scrape(t, r),
		`http_server_requests_total{code="200",method="POST",route="/c"} 2000`,
		`http_server_requests_total{code="201",method="POST",route="/c"} 2000`,
		`http_server_request_duration_seconds_count{route="/c"} 4000`,
	)
}

func TestPanic(t *testing.T) {
	r := metrics.New()
	wantLines(t, scrape(t, r), `http_server_panics_total 0`)
	r.Panic()
	r.Panic()
	wantLines(t, scrape(t, r), `http_server_panics_total 2`)
}

func TestSetPhase(t *testing.T) {
	r := metrics.New()
	r.SetPhase("", "starting", 0)
	wantLines(t, scrape(t, r),
		`kubeskel_lifecycle_phase{phase="starting"} 1`,
		`kubeskel_lifecycle_phase_transitions_total{phase="starting"} 1`,
	)
	r.SetPhase("starting", "ready", 1500*time.Millisecond)
	r.SetPhase("ready", "draining", 90*time.Second)
	m := scrape(t, r)
	wantLines(t, m,
		`kubeskel_lifecycle_phase{phase="starting"} 0`,
		`kubeskel_lifecycle_phase{phase="ready"} 0`,
		`kubeskel_lifecycle_phase{phase="draining"} 1`,
		`kubeskel_lifecycle_phase_transitions_total{phase="starting"} 1`,
		`kubeskel_lifecycle_phase_transitions_total{phase="ready"} 1`,
		`kubeskel_lifecycle_phase_transitions_total{phase="draining"} 1`,
		`kubeskel_lifecycle_phase_duration_seconds{phase="starting"} 1.5`,
		`kubeskel_lifecycle_phase_duration_seconds{phase="ready"} 90`,
	)
	// The current phase has no duration yet.
	lacks(t, m, `kubeskel_lifecycle_phase_duration_seconds{phase="draining"}`)
}

func TestDrained(t *testing.T) {
	r := metrics.New()
	r.Drained(3250*time.Millisecond, 2)
	wantLines(t, scrape(t, r),
		`kubeskel_drain_duration_seconds 3.25`,
		`kubeskel_shutdown_requests_cut_total 2`,
	)
	r.Drained(time.Second, 0)
	wantLines(t, scrape(t, r),
		`kubeskel_drain_duration_seconds 1`,
		`kubeskel_shutdown_requests_cut_total 2`,
	)
}

func TestGaugeFuncAndRuntimeCollectors(t *testing.T) {
	r := metrics.New()
	n := 3.0
	r.GaugeFunc("http_server_requests_in_flight", "Requests being served.", func() float64 { return n })
	m := scrape(t, r)
	wantLines(t, m, `http_server_requests_in_flight 3`, `# TYPE go_goroutines gauge`)
	if !strings.Contains(m, "\nprocess_") {
		t.Error("metrics lack the process collector")
	}
	n = 5
	wantLines(t, scrape(t, r), `http_server_requests_in_flight 5`)
}

func TestRegistererIsScraped(t *testing.T) {
	r := metrics.New()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "extra_total", Help: "A collector added by another package."})
	r.Registerer().MustRegister(c)
	c.Inc()
	wantLines(t, scrape(t, r), `extra_total 1`)

	// Registries are independent: no package-level state.
	other := metrics.New()
	r.Panic()
	m := scrape(t, other)
	wantLines(t, m, `http_server_panics_total 0`)
	lacks(t, m, "extra_total")
}

// TestTLS: the TLS metrics exist only once TLS is registered; the expiry is
// the NotAfter in Unix seconds and reloads count by result from 0.
func TestTLS(t *testing.T) {
	r := metrics.New()
	lacks(t, scrape(t, r), "kubeskel_tls_")
	tls := r.TLS()
	wantLines(t, scrape(t, r),
		`kubeskel_tls_certificate_reloads_total{result="failure"} 0`,
		`kubeskel_tls_certificate_reloads_total{result="success"} 0`)
	tls.Loaded(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC))
	tls.Reloaded(nil)
	tls.Reloaded(nil)
	tls.Reloaded(io.ErrUnexpectedEOF)
	wantLines(t, scrape(t, r),
		"kubeskel_tls_certificate_expiry_timestamp_seconds 1.798859045e+09",
		`kubeskel_tls_certificate_reloads_total{result="failure"} 1`,
		`kubeskel_tls_certificate_reloads_total{result="success"} 2`)
}

func TestRPC(t *testing.T) {
	r := metrics.New()
	r.RPC("/kubeskel.echo.v1.Echo/Say", "OK", time.Millisecond)
	r.RPC("/kubeskel.echo.v1.Echo/Say", "OK", time.Millisecond)
	r.RPC("/kubeskel.echo.v1.Echo/Count", "Internal", time.Millisecond)
	r.RPC("/kubeskel.echo.v1.Echo/Say", "Unavailable", time.Millisecond)
	r.RPCPanic()
	wantLines(t, scrape(t, r),
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Say",grpc_service="kubeskel.echo.v1.Echo"} 2`,
		`grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Say",grpc_service="kubeskel.echo.v1.Echo"} 1`,
		`grpc_server_handling_seconds_count{grpc_method="Count",grpc_service="kubeskel.echo.v1.Echo"} 1`,
		`grpc_server_handled_total{grpc_code="Internal",grpc_method="Count",grpc_service="kubeskel.echo.v1.Echo"} 1`,
		`grpc_server_handling_seconds_count{grpc_method="Say",grpc_service="kubeskel.echo.v1.Echo"} 3`,
		`grpc_server_panics_total 1`,
	)
}
