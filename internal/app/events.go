package app

import (
	"fmt"
	"net/http"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

// Bounds of GET /events?every=.
const (
	eventsEveryDefault = time.Second
	eventsEveryMin     = time.Millisecond
	eventsEveryMax     = time.Minute
)

// handleEvents streams Server-Sent Events, the long-lived example to copy: a
// "tick" event at once and then every ?every= (a Go duration, default 1s,
// from 1ms to 1m), each with an increasing id and "data: <n> <host>".
//
// When the server's Shutdown begins (after the pre-stop delay, when load
// balancers have stopped sending new requests here) it sends one final
// "event: shutdown" with "data: <host>" and ends the response, so the
// client's stream ends cleanly (end of the chunked body on HTTP/1.1,
// END_STREAM on HTTP/2) and an EventSource reconnects, to another pod. It
// also returns when the request context ends (the client left, or the
// shutdown deadline is APP_HANDLER_CANCEL_MARGIN away), without the final
// event. A write that blocks (a client that stopped reading) holds the
// stream until the shutdown deadline, which cuts and counts it.
func handleEvents(host string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		every := eventsEveryDefault
		if q := r.URL.Query().Get("every"); q != "" {
			d, err := time.ParseDuration(q)
			if err != nil || d < eventsEveryMin || d > eventsEveryMax {
				http.Error(w, "every must be a Go duration from 1ms to 1m, such as 500ms", http.StatusBadRequest)
				return
			}
			every = d
		}
		// shutdown is nil outside a kubeskel server (httptest): the stream
		// then ends only with its request context.
		shutdown, done := server.LongLived(r.Context())
		defer done()

		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		rc := http.NewResponseController(w)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for id := 1; ; id++ {
			// A failed write or flush means the client left: nobody to tell.
			if _, err := fmt.Fprintf(w, "id: %d\nevent: tick\ndata: %d %s\n\n", id, id, host); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			select {
			case <-tick.C:
			case <-shutdown:
				if _, err := fmt.Fprintf(w, "event: shutdown\ndata: %s\n\n", host); err == nil {
					_ = rc.Flush() // the stream ends here either way
				}
				return
			case <-r.Context().Done():
				return
			}
		}
	})
}
