package app_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/app"
	"github.com/kubeskel/kubeskel/internal/server"
)

// sseEvent is one Server-Sent Event as a client parses it.
type sseEvent struct{ id, event, data string }

// readEvent reads one event (up to its blank line); io.EOF at a clean end of
// stream between events.
func readEvent(rd *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	started := false
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if err == io.EOF && !started && line == "" {
				return ev, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the stream ended inside an event
			}
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev, nil
		}
		started = true
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "id":
			ev.id = v
		case "event":
			ev.event = v
		case "data":
			ev.data = v
		}
	}
}

// TestEventsEndWithShutdown: a stream open when Shutdown begins gets the
// final "shutdown" event and a clean end of stream, over HTTP/1.1 and h2c,
// and Shutdown returns without a cut.
func TestEventsEndWithShutdown(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := "HTTP/1.1"
		if h2c {
			name = "h2c"
		}
		t.Run(name, func(t *testing.T) {
			mux := server.NewMux(server.Observability{})
			app.AddRoutes(mux, app.Deps{Version: "v1", Host: "pod-a", SlowMax: time.Second})
			s, err := server.Listen("http", "127.0.0.1:0", mux, server.Options{H2C: h2c, Traffic: &server.Observability{}})
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

			tr := &http.Transport{}
			if h2c {
				var p http.Protocols
				p.SetUnencryptedHTTP2(true)
				tr.Protocols = &p
			}
			t.Cleanup(tr.CloseIdleConnections)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.Addr().String()+"/events?every=10ms", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got, want := resp.Header.Get("Content-Type"), "text/event-stream"; resp.StatusCode != http.StatusOK || got != want {
				t.Fatalf("GET /events = %d %q, want 200 %q", resp.StatusCode, got, want)
			}
			if h2c != (resp.ProtoMajor == 2) {
				t.Fatalf("response protocol %s, h2c=%v", resp.Proto, h2c)
			}
			rd := bufio.NewReader(resp.Body)
			for i := 1; i <= 3; i++ {
				ev, err := readEvent(rd)
				if err != nil {
					t.Fatalf("tick %d: %v", i, err)
				}
				if want := (sseEvent{id: strconv.Itoa(i), event: "tick", data: strconv.Itoa(i) + " pod-a"}); ev != want {
					t.Fatalf("event %d = %+v, want %+v", i, ev, want)
				}
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shut := make(chan error, 1)
			go func() { _, err := s.Shutdown(ctx, time.Second); shut <- err }()

			var last sseEvent
			for {
				ev, err := readEvent(rd)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("stream ended with %v after %+v; want the shutdown event and a clean end", err, last)
				}
				if last.event == "shutdown" {
					t.Fatalf("event %+v after the shutdown event", ev)
				}
				last = ev
			}
			if want := (sseEvent{event: "shutdown", data: "pod-a"}); last != want {
				t.Errorf("last event = %+v, want %+v", last, want)
			}
			if err := <-shut; err != nil {
				t.Errorf("Shutdown: %v, want nil (the stream ended before the deadline)", err)
			}
		})
	}
}

// Outside a kubeskel server the stream ends with its request context, with
// no final event; a bad ?every= is 400.
func TestEventsRequestEnds(t *testing.T) {
	h := newHandler(t, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	w := serveHTTP(h, httptest.NewRequestWithContext(ctx, http.MethodGet, "/events?every=1m", nil))
	if got, want := w.Body.String(), "id: 1\nevent: tick\ndata: 1 pod-abc\n\n"; w.Code != http.StatusOK || got != want {
		t.Errorf("GET /events until the context ends = %d %q, want 200 %q", w.Code, got, want)
	}
	for _, q := range []string{"every=0s", "every=500us", "every=2m", "every=1", "every=x"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		w := serveHTTP(h, httptest.NewRequestWithContext(ctx, http.MethodGet, "/events?"+q, nil))
		cancel()
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "every") {
			t.Errorf("GET /events?%s = %d %q, want 400 naming every", q, w.Code, w.Body)
		}
	}
}
