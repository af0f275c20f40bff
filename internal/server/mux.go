package server

import (
	"net/http"
	"strings"
)

// Mux is an http.ServeMux whose routes are instrumented: each request to a
// route gets a server span named after the route and is counted under the
// route's metrics, resolved once when the route is added.
type Mux struct {
	mux *http.ServeMux
	obs Observability
}

// NewMux returns an empty Mux reporting to obs.
func NewMux(obs Observability) *Mux {
	return &Mux{mux: http.NewServeMux(), obs: obs}
}

// Handle registers h for pattern, in http.ServeMux syntax ("GET /items/{id}").
// The route label (metrics, span name, http.route) is the pattern without its
// method and without a trailing "{$}": "GET /{$}" is route "/".
func (m *Mux) Handle(pattern string, h http.Handler) {
	method, route, ok := strings.Cut(pattern, " ")
	if !ok {
		method, route = "", pattern
	}
	route = strings.TrimSuffix(route, "{$}")
	spanName := strings.TrimSpace(method + " " + route)
	var observer RouteObserver
	if m.obs.Route != nil {
		observer = m.obs.Route(route, method)
	}
	startSpan := m.obs.StartSpan
	m.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw, ok := w.(*responseWriter)
		if ok {
			rw.route, rw.routeName = observer, route
		}
		if startSpan == nil {
			h.ServeHTTP(w, r)
			return
		}
		ctx, end := startSpan(r, route, spanName)
		panicked := true
		defer func() {
			status := http.StatusOK // returned without writing: net/http sends 200
			switch {
			case ok && rw.wroteHeader:
				status = rw.status
			case panicked:
				status = http.StatusInternalServerError // the middleware answers 500
			}
			end(status)
		}()
		if ctx != r.Context() {
			r = r.WithContext(ctx)
			if ok {
				rw.ctx = ctx
			}
		}
		h.ServeHTTP(w, r)
		panicked = false
	}))
}

// HandleFunc registers f for pattern; see Handle.
func (m *Mux) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// ServeHTTP dispatches the request to the handler whose pattern matches.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }
