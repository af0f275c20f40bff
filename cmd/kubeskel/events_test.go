package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// sseEvent is one Server-Sent Event as a client parses it.
type sseEvent struct{ id, event, data string }

// readEvent reads one event up to its blank line; io.EOF only at a clean end
// of stream between events (end of the chunked body on HTTP/1.1,
// END_STREAM on HTTP/2): a connection closed or reset under the stream is
// another error.
func readEvent(rd *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	started := false
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && (started || line != "") {
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

// stream is an open GET /events and what its reader saw.
type stream struct {
	name   string
	proto  string
	events chan sseEvent // every event, in order
	end    chan error    // then the error that ended the stream (io.EOF: clean)
}

// openStream starts GET /events on client and reads it in the background.
func openStream(t *testing.T, name string, c *http.Client, url string) *stream {
	t.Helper()
	resp, err := httpGetWith(t.Context(), c, url) //nolint:bodyclose // closed by the reading goroutine below
	if err != nil {
		t.Fatalf("%s: GET /events: %v", name, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("%s: GET /events = %d %q, want 200 text/event-stream", name, resp.StatusCode, ct)
	}
	s := &stream{name: name, proto: resp.Proto, events: make(chan sseEvent, 1<<16), end: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		for {
			ev, err := readEvent(rd)
			if err != nil {
				s.end <- err
				return
			}
			s.events <- ev
		}
	}()
	return s
}

// TestEventsEndCleanlyOnShutdown: SSE streams open across SIGTERM, over
// HTTP/1.1 and over one multiplexed h2c connection, keep ticking through the
// pre-stop delay, then get the final "shutdown" event and a clean end of
// stream (which only the live process can send: a stream closed by the exit
// ends with an error instead); nothing is cut and the exit is 0.
func TestEventsEndCleanlyOnShutdown(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=1s", "APP_SHUTDOWN_TIMEOUT=10s", "POD_NAME=pod-events")
	h2c, _ := h2cClient(t)
	h1 := &http.Client{Transport: &http.Transport{}}
	url := p.url(false, "/events?every=20ms")
	streams := []*stream{
		openStream(t, "HTTP/1.1", h1, url),
		openStream(t, "h2c stream 1", h2c, url),
		openStream(t, "h2c stream 2", h2c, url),
	}
	for _, s := range streams {
		want := map[string]string{"HTTP/1.1": "HTTP/1.1"}[s.name]
		if want == "" {
			want = "HTTP/2.0"
		}
		if s.proto != want {
			t.Fatalf("%s: response protocol %s, want %s", s.name, s.proto, want)
		}
		select {
		case ev := <-s.events:
			if ev.event != "tick" || ev.id != "1" || ev.data != "1 pod-events" {
				t.Fatalf("%s: first event %+v, want tick 1 from pod-events", s.name, ev)
			}
		case err := <-s.end:
			t.Fatalf("%s: stream ended before its first event: %v", s.name, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no first event within 10s", s.name)
		}
	}

	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	for _, s := range streams {
		var ticks int
		var last sseEvent
		take := func(ev sseEvent) {
			if last.event == "shutdown" {
				t.Errorf("%s: event %+v after the shutdown event", s.name, ev)
			}
			if ev.event == "tick" {
				ticks++
			}
			last = ev
		}
		var end error
	read:
		for {
			select {
			case ev := <-s.events:
				take(ev)
			case end = <-s.end:
				// The reader queued every event before it reported the end.
				for len(s.events) > 0 {
					take(<-s.events)
				}
				break read
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: stream still open 20s after SIGTERM", s.name)
			}
		}
		if !errors.Is(end, io.EOF) {
			t.Errorf("%s: stream ended with %v, want a clean end of stream", s.name, end)
		}
		if want := (sseEvent{event: "shutdown", data: "pod-events"}); last != want {
			t.Errorf("%s: last event %+v, want %+v", s.name, last, want)
		}
		// The 1s pre-stop delay at one tick per 20ms: the stream kept
		// serving through it rather than ending at the signal.
		if ticks < 10 {
			t.Errorf("%s: %d ticks after SIGTERM, want ≥ 10 (the stream should last through the pre-stop delay)", s.name, ticks)
		}
	}
	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
	if got := p.waitLog(time.Second, "phase", "phase", "flushing")["requests_cut"]; got != float64(0) {
		t.Errorf("requests_cut = %v, want 0", got)
	}
}

// TestEventsStuckStreamCut is the control: an h2c client that stops reading
// (its stream window is 1 KiB) blocks the handler's write, so the stream can
// neither send the final event nor end; the shutdown deadline cuts it, counts
// it and the exit code is 3.
func TestEventsStuckStreamCut(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=2s", "APP_HANDLER_CANCEL_MARGIN=500ms")
	var proto http.Protocols
	proto.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &proto, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1024}}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := httpGetWith(t.Context(), &http.Client{Transport: tr}, p.url(false, "/events?every=1ms"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("response protocol %s, want HTTP/2.0", resp.Proto)
	}
	// Read nothing: at one event a millisecond the 1 KiB window is full
	// after some 25 events, well within this second.
	time.Sleep(time.Second)

	p.signal(syscall.SIGTERM)
	if got, want := p.wait(20*time.Second), 3; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	if got, want := p.waitLog(time.Second, "shutdown cut requests", "", "")["requests_cut"], float64(1); got != want {
		t.Errorf("requests_cut = %v, want %v", got, want)
	}
	// What the client still gets is the ticks it had not read, and then an
	// error, never the final event and a clean end.
	rd := bufio.NewReader(resp.Body)
	for {
		ev, err := readEvent(rd)
		if err != nil {
			if errors.Is(err, io.EOF) {
				t.Errorf("the stuck stream ended cleanly; want it cut")
			}
			break
		}
		if ev.event != "tick" {
			t.Errorf("the stuck stream got %+v, want only ticks", ev)
		}
	}
}

// TestWebSocketGoingAwayOnShutdown: a WebSocket open across SIGTERM keeps
// echoing through the pre-stop delay, then gets a close frame with status
// 1001 "going away" before the process exits; nothing is cut, exit 0.
func TestWebSocketGoingAwayOnShutdown(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=1s", "APP_SHUTDOWN_TIMEOUT=15s")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.httpAddr+"/ws", nil) //nolint:bodyclose // coder/websocket: the caller never closes resp.Body
	if err != nil {
		t.Fatalf("dial /ws: %v", err)
	}
	defer func() { _ = c.CloseNow() }() // the test's own close status is checked; this only frees the connection
	echo := func(msg string) error {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return err
		}
		_, got, err := c.Read(ctx)
		if err == nil && string(got) != msg {
			t.Errorf("echo of %q = %q", msg, got)
		}
		return err
	}
	if err := echo("before"); err != nil {
		t.Fatalf("echo before SIGTERM: %v", err)
	}
	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	if err := echo("during the pre-stop delay"); err != nil {
		t.Fatalf("echo during the pre-stop delay: %v", err)
	}
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("read after the pre-stop delay: %v (close status %d), want a close frame with status %d", err, got, websocket.StatusGoingAway)
	}
	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
	if got := p.waitLog(time.Second, "phase", "phase", "flushing")["requests_cut"]; got != float64(0) {
		t.Errorf("requests_cut = %v, want 0", got)
	}
}
