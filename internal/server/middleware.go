package server

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/kubeskel/kubeskel/internal/logging"
)

// Observability is what the traffic middleware reports to. Every field is
// optional.
type Observability struct {
	// StartSpan starts a server span for a request to route (see
	// telemetry.Telemetry.StartServerSpan).
	StartSpan func(r *http.Request, route, spanName string) (context.Context, func(status int))
	// Route returns the metrics observer of a route and method; it is called
	// once per registered route, not per request.
	Route func(route, method string) RouteObserver
	// Panic is called for every recovered handler panic.
	Panic func()
	// Logger logs panics and, if RequestLog is set, one line per request.
	Logger     *slog.Logger
	RequestLog bool
}

// RouteObserver records finished requests of one route.
type RouteObserver interface {
	Observe(method string, status int, d time.Duration)
}

// responseWriter records the status and the route of a request, and adds
// "Connection: close" while the server drains. It is the only allocation the
// middleware makes for a request when tracing is off.
type responseWriter struct {
	http.ResponseWriter
	srv         *Server
	status      int
	wroteHeader bool
	hijacked    bool
	route       RouteObserver
	routeName   string
	ctx         context.Context
}

func (w *responseWriter) WriteHeader(code int) {
	if !w.wroteHeader && code >= 200 {
		w.wroteHeader = true
		w.status = code
		if w.srv.closeOnDrain && w.srv.draining.Load() {
			// Tell keep-alive clients and proxies to move to another pod
			// now, while this one still answers. On HTTP/1.1 net/http
			// closes the connection after this response; on HTTP/2 it drops
			// the header and sends a graceful GOAWAY instead: the other
			// streams in flight complete, new ones go to a new connection.
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush and Hijack keep streaming and WebSocket handlers working;
// Unwrap lets http.ResponseController reach the rest. A hijacked connection
// is tracked for Shutdown by the server's listener (see LongLived), whichever
// of these paths the handler took.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	// http.Flusher has no error to return: a failed flush (a closed
	// connection) surfaces on the handler's next Write.
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked = true
	}
	return conn, rw, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware counts a request in flight from arrival to completion, recovers
// panics, marks responses while draining, and records metrics and the
// request log line when the handler returns.
//
// A panic before the response began is answered 500. A panic after it began
// (status written) cannot change the status: the middleware logs and counts
// it, records the request with the status it wrote, then aborts the response
// with http.ErrAbortHandler, so net/http closes the connection without
// finishing the body and the client sees an error instead of a complete
// response. net/http does not log http.ErrAbortHandler: the panic is logged
// once. A panic after a hijack is logged and counted; the handler owns the
// connection.
func (s *Server) middleware(next http.Handler, o Observability, unmatched RouteObserver) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.arrivals.Add(1)
		s.inFlight.Add(1)
		// On HTTP/2 the deadline counts cut streams, so each connection
		// counts its own; HTTP/1.1 serves one request per connection at a
		// time and does not pay for the lookup.
		var h2 *conn
		if r.ProtoMajor == 2 {
			if h2 = requestConn(r.Context()); h2 != nil {
				h2.streams.Add(1)
			}
		}
		// A monotonic reading: the wall clock is read only for the log line.
		start := s.clock.Now()
		rw := &responseWriter{ResponseWriter: w, srv: s, ctx: r.Context()}
		defer func() {
			p := recover()
			abort := false
			if p != nil {
				// Identity, as net/http checks it: a value wrapping the sentinel
				// is an ordinary panic there (logged with a stack), so it is one
				// here too and is answered 500.
				if p == http.ErrAbortHandler { //nolint:errorlint // net/http matches this sentinel panic value by ==, not errors.Is
					s.inFlight.Add(-1)
					if h2 != nil {
						h2.streams.Add(-1)
					}
					panic(p) // net/http's own way to abort a response: let it do so.
				}
				abort = recovered(p, rw, r, o)
			}
			status := rw.status
			if status == 0 {
				status = http.StatusOK // hijacked: the handler answered outside HTTP
			}
			d := s.clock.Now() - start
			route := rw.route
			if route == nil {
				route = unmatched
			}
			if route != nil {
				route.Observe(normalizeMethod(r.Method), status, d)
			}
			if o.RequestLog && o.Logger != nil {
				logRequest(o.Logger, rw, r, status, d)
			}
			s.inFlight.Add(-1)
			if h2 != nil {
				h2.streams.Add(-1)
			}
			if abort {
				panic(http.ErrAbortHandler)
			}
		}()
		next.ServeHTTP(rw, r)
		if !rw.wroteHeader && !rw.hijacked && !connHijacked(r) {
			// The handler wrote nothing; net/http would send a bare 200.
			// Send it through WriteHeader so it too gets "Connection: close".
			rw.WriteHeader(http.StatusOK)
		}
	})
}

// recovered handles a panic p of the handler of r (not http.ErrAbortHandler):
// it counts and logs it, and answers 500 if no response began. It reports
// whether the response began, in which case the caller must abort it. The
// panic and log paths live outside the middleware's deferred function so
// that its frame, on the stack of every request, stays small.
func recovered(p any, rw *responseWriter, r *http.Request, o Observability) (abort bool) {
	if o.Panic != nil {
		o.Panic()
	}
	if o.Logger != nil {
		o.Logger.LogAttrs(rw.ctx, slog.LevelError, "handler panic",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
	}
	switch {
	case rw.hijacked || connHijacked(r):
	case rw.wroteHeader:
		return true
	default:
		http.Error(rw, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
	}
	return false
}

// logRequest writes the request log line of r.
func logRequest(l *slog.Logger, rw *responseWriter, r *http.Request, status int, d time.Duration) {
	logging.LogAttrsAt(rw.ctx, l, time.Now(), slog.LevelInfo, "request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("route", rw.routeName),
		slog.Int("status", status), slog.Float64("duration_ms", float64(d.Microseconds())/1000), slog.String("remote", r.RemoteAddr))
}

// connHijacked reports whether the handler of r hijacked its connection by a
// path that bypassed responseWriter.Hijack (through Unwrap). It is only
// called when the handler wrote nothing, so the common path does not pay
// for the context lookup.
func connHijacked(r *http.Request) bool {
	c := requestConn(r.Context())
	return c != nil && http.ConnState(c.state.Load()) == http.StateHijacked
}

// normalizeMethod bounds the cardinality of the method label.
func normalizeMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}
