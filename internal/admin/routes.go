// Package admin assembles the admin port: probes and metrics, never traced,
// never counted in flight and never affected by the drain.
package admin

import (
	"net/http"
	"net/http/pprof"
)

// Routes returns the admin handler: GET|HEAD /live and /ready from probes,
// GET /metrics from metrics. (GET patterns match HEAD too.) With profiling,
// it also serves net/http/pprof under /debug/pprof/: the index, every named
// runtime profile (heap, allocs, goroutine, mutex, block, threadcreate),
// CPU profiles (/debug/pprof/profile?seconds=N), execution traces
// (/debug/pprof/trace?seconds=N), cmdline and symbol. Without it those paths
// are 404.
func Routes(probes, metrics http.Handler, profiling bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /live", probes)
	mux.Handle("GET /ready", probes)
	mux.Handle("GET /metrics", metrics)
	if profiling {
		// The handlers are mounted on this mux; importing net/http/pprof
		// also registers them on http.DefaultServeMux, which kubeskel never
		// serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}
