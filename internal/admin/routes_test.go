package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRoutesProfiling(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	tests := []struct {
		method, path string
		// want is the status with profiling off and on.
		wantOff, wantOn int
		// bodyOn is a string the body must contain with profiling on.
		bodyOn string
	}{
		{"GET", "/live", 200, 200, ""},
		{"GET", "/ready", 200, 200, ""},
		{"GET", "/metrics", 200, 200, ""},
		{"GET", "/debug/pprof/", 404, 200, "goroutine"},
		{"GET", "/debug/pprof/heap?debug=1", 404, 200, "heap profile"},
		{"GET", "/debug/pprof/goroutine?debug=1", 404, 200, "goroutine profile"},
		{"GET", "/debug/pprof/cmdline", 404, 200, ""},
		{"GET", "/debug/pprof/profile?seconds=1", 404, 200, ""},
		{"GET", "/debug/pprof/trace?seconds=0.1", 404, 200, ""},
		{"POST", "/debug/pprof/symbol", 404, 200, "num_symbols"},
		{"POST", "/debug/pprof/", 404, 405, ""},
	}
	for _, profiling := range []bool{false, true} {
		h := Routes(ok, ok, profiling)
		for _, tt := range tests {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			want := tt.wantOff
			if profiling {
				want = tt.wantOn
			}
			if w.Code != want {
				t.Errorf("profiling %v: %s %s = %d, want %d", profiling, tt.method, tt.path, w.Code, want)
			}
			if profiling && !strings.Contains(w.Body.String(), tt.bodyOn) {
				t.Errorf("profiling on: %s %s body lacks %q:\n%.300s", tt.method, tt.path, tt.bodyOn, w.Body.String())
			}
		}
	}
}
