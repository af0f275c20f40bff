// Package admin assembles the admin port: probes and metrics, never traced,
// never counted in flight and never affected by the drain.
package admin

import "net/http"

// Routes returns the admin handler: GET|HEAD /live and /ready from probes,
// GET /metrics from metrics. (GET patterns match HEAD too.)
func Routes(probes, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /live", probes)
	mux.Handle("GET /ready", probes)
	mux.Handle("GET /metrics", metrics)
	return mux
}
