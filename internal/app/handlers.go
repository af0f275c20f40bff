package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// handleHello answers with the version and the host, computed once.
func handleHello(version, host string) http.Handler {
	body := []byte(fmt.Sprintf("kubeskel %s on %s\n", version, host))
	length := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{length}
		_, _ = w.Write(body) // a failed write means the client left; there is no one to tell
	})
}

// handleEcho answers with the request body, up to limit bytes (413 beyond).
func handleEcho(limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body) // a failed write means the client left; there is no one to tell
	})
}

// handleSlow holds the request for ?d= (a Go duration, default 1s, at most
// max), then answers 200. It returns 503 early if the request context is
// cancelled: the client left, or the shutdown deadline is near.
func handleSlow(max time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := time.Second
		if q := r.URL.Query().Get("d"); q != "" {
			var err error
			if d, err = time.ParseDuration(q); err != nil || d < 0 {
				http.Error(w, "d must be a non-negative Go duration such as 250ms", http.StatusBadRequest)
				return
			}
		}
		d = min(d, max)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			// G705: d is a time.Duration, formatted as digits and units.
			_, _ = fmt.Fprintf(w, "slept %s\n", d) //nolint:gosec // the client left if this fails
		case <-r.Context().Done():
			http.Error(w, "cancelled: "+context.Cause(r.Context()).Error(), http.StatusServiceUnavailable)
		}
	})
}
