package app

import (
	"context"
	"net/http"

	"github.com/coder/websocket"

	"github.com/kubeskel/kubeskel/internal/server"
)

// handleWebSocket is the WebSocket example: it echoes every message back
// (text as text, binary as binary), at most 64 KiB each. When the server's
// Shutdown begins (after the pre-stop delay) it closes the connection with
// status 1001 "going away" and the close handshake, so the client
// reconnects, to another pod. The connection is hijacked: Shutdown waits for
// it until the handshake is done (at most about 10s with a peer that never
// answers: 5s to write the close frame, 5s for the peer's), and closes and
// counts it at the shutdown deadline. A client that closes first ends it
// too. WebSocket runs over HTTP/1.1 only here (no RFC 8441 over HTTP/2).
func handleWebSocket() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the request with the reason
		}
		shutdown, done := server.LongLived(r.Context())
		defer done()
		c.SetReadLimit(64 << 10)
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		go func() {
			select {
			case <-shutdown:
				// Read below returns once the handshake is over. A failed
				// handshake has closed the connection: nothing else to do.
				_ = c.Close(websocket.StatusGoingAway, "server shutting down")
			case <-ctx.Done():
			}
		}()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				// The peer closed, the close handshake above ended, or the
				// request context ended (shutdown deadline near): the
				// connection is closed either way.
				_ = c.CloseNow()
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				_ = c.CloseNow()
				return
			}
		}
	})
}
