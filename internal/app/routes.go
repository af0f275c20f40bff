// Package app is the example application served on the traffic port. Start
// your own service here: add your routes to AddRoutes.
package app

import (
	"log/slog"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

// Deps are what the handlers need, passed explicitly.
type Deps struct {
	Version string        // build version, shown by GET /
	Host    string        // pod or host name, shown by GET /
	SlowMax time.Duration // cap for GET /slow
	Logger  *slog.Logger
}

// AddRoutes registers every URL the application serves. Patterns use
// http.ServeMux syntax; the path (without the method) is the route label in
// metrics and traces, so keep it free of IDs: use {placeholders}.
func AddRoutes(mux *server.Mux, d Deps) {
	mux.Handle("GET /{$}", handleHello(d.Version, d.Host))
	mux.Handle("POST /echo", handleEcho(1<<20))
	mux.Handle("GET /slow", handleSlow(d.SlowMax))
	// The long-lived example: a Server-Sent Events stream that ends with a
	// final event when shutdown begins (see handleEvents).
	mux.Handle("GET /events", handleEvents(d.Host))
	// The same for WebSocket: an echo that closes with 1001 "going away"
	// when shutdown begins (see handleWebSocket).
	mux.Handle("GET /ws", handleWebSocket())
}
