package health_test

import (
	"errors"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubeskel/kubeskel/internal/health"
)

// Ready agrees with GET /ready, including a failing liveness check, which
// fails readiness too.
func TestReadyMatchesReadyEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name              string
		readyErr, liveErr error
	}{
		{"all pass", nil, nil},
		{"readiness fails", errors.New("draining"), nil},
		{"liveness fails", nil, errors.New("wedged")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := health.New(prometheus.NewRegistry())
			p.AddReadiness("r", func() error { return tc.readyErr })
			p.AddLiveness("l", func() error { return tc.liveErr })
			endpointOK := do(t, p.Handler(), http.MethodGet, "/ready").Code == http.StatusOK
			if got := p.Ready() == nil; got != endpointOK {
				t.Errorf("Ready() == nil is %v, GET /ready 200 is %v", got, endpointOK)
			}
			if want := tc.readyErr == nil && tc.liveErr == nil; endpointOK != want {
				t.Errorf("GET /ready 200 = %v, want %v", endpointOK, want)
			}
		})
	}
}
