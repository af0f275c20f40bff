package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/kubeskel/kubeskel/internal/app"
	"github.com/kubeskel/kubeskel/internal/server"
)

// TestWebSocketEchoThenGoingAway: GET /ws echoes text and binary messages;
// when Shutdown begins the client gets a close frame with status 1001, and
// Shutdown returns once the connection is closed, without a cut.
func TestWebSocketEchoThenGoingAway(t *testing.T) {
	mux := server.NewMux(server.Observability{})
	app.AddRoutes(mux, app.Deps{Version: "v1", Host: "pod-a", SlowMax: time.Second})
	// h2c on, as by default: the WebSocket client still speaks HTTP/1.1.
	s, err := server.Listen("http", "127.0.0.1:0", mux, server.Options{H2C: true, Traffic: &server.Observability{}})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		_ = s.Close() // teardown: a Close error changes nothing
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+s.Addr().String()+"/ws", nil) //nolint:bodyclose // coder/websocket: the caller never closes resp.Body
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	defer func() { _ = c.CloseNow() }() // the close status is checked below; this only frees the connection
	for _, m := range []struct {
		typ websocket.MessageType
		msg string
	}{{websocket.MessageText, "hello"}, {websocket.MessageBinary, "\x00\x01\x02"}} {
		if err := c.Write(ctx, m.typ, []byte(m.msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil || typ != m.typ || string(got) != m.msg {
			t.Fatalf("echo of %v %q = %v %q, %v", m.typ, m.msg, typ, got, err)
		}
	}

	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	shut := make(chan error, 1)
	go func() { _, err := s.Shutdown(sctx, time.Second); shut <- err }()
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("client read after Shutdown began: %v (close status %d), want a close frame with status %d", err, got, websocket.StatusGoingAway)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v, want nil (the connection closed before the deadline)", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}
