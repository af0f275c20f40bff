package server

import (
	"net/http"
	"testing"
)

// listenAndServe listens on 127.0.0.1:0, calls prepare (if not nil) with the
// server before Serve, serves h in the background and closes the server
// when the test ends.
func listenAndServe(tb testing.TB, h http.Handler, o Options, prepare func(*Server)) *Server {
	tb.Helper()
	s, err := Listen("http", "127.0.0.1:0", h, o)
	if err != nil {
		tb.Fatal(err)
	}
	if prepare != nil {
		prepare(s)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	tb.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			tb.Errorf("Serve returned %v, want nil after Close", err)
		}
	})
	return s
}
