package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// openConns is the number of connections the server still tracks.
func (s *Server) openConns() int {
	s.conns.mu.Lock()
	defer s.conns.mu.Unlock()
	return len(s.conns.open)
}

// poll waits for cond, failing the test after 10s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestH2CConnAfterGoAwaySweep covers golang/go#81153: an HTTP/2 connection
// accepted before Shutdown but whose preface arrives after the shutdown's
// GOAWAY sweep gets no GOAWAY from net/http. It must not be left open after
// Shutdown returns, and its stream must be served or counted as cut.
func TestH2CConnAfterGoAwaySweep(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream bool // the late connection sends a request
	}{
		// net/http sends the GOAWAY it missed once the stream ends (it
		// disables keep-alives while shutting down): Shutdown returns early.
		{"with a stream", true},
		// No response, so no GOAWAY: Shutdown holds until its deadline (the
		// bug), then closes the connection, which lost nothing.
		{"preface only", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "late") })
			s := listenAndServe(t, h, Options{H2C: true, Traffic: &Observability{}}, nil)

			raw, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			poll(t, "the connection to be accepted", func() bool { return s.openConns() == 1 })

			const timeout = 5 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			type result struct {
				cut      int
				err      error
				returned time.Time
			}
			shutDone := make(chan result, 1)
			began := time.Now()
			go func() {
				cut, err := s.Shutdown(ctx, 0)
				shutDone <- result{cut, err, time.Now()}
			}()
			// Let the shutdown hooks, the HTTP/2 GOAWAY sweep among them,
			// run before the connection becomes an HTTP/2 one.
			poll(t, "Shutdown to begin", s.conns.shutdownBegan.Load)
			time.Sleep(200 * time.Millisecond)

			var got <-chan error
			if tc.stream {
				got = lateRequest(t, raw)
			} else {
				// The preface and an empty SETTINGS frame: a valid HTTP/2
				// connection that opens no stream.
				if _, err := io.WriteString(raw, http2Preface+"\x00\x00\x00\x04\x00\x00\x00\x00\x00"); err != nil {
					t.Fatal(err)
				}
			}

			var r result
			select {
			case r = <-shutDone:
			case <-time.After(timeout + 10*time.Second):
				t.Fatal("Shutdown did not return")
			}
			if tc.stream {
				err := <-got
				if err == nil && (r.cut != 0 || r.err != nil) {
					t.Errorf("late stream was served; Shutdown() = %d, %v; want 0, nil", r.cut, r.err)
				}
				if held := r.returned.Sub(began); err == nil && held > timeout-time.Second {
					t.Errorf("Shutdown returned after %v, want before the deadline %v (the GOAWAY after the stream ends the wait)", held, timeout)
				}
				if err != nil && r.cut != 1 {
					t.Errorf("late stream failed (%v) but Shutdown cut %d, want 1", err, r.cut)
				}
			} else {
				if r.cut != 0 || r.err != nil {
					t.Errorf("Shutdown() = %d, %v; want 0, nil (the connection lost nothing)", r.cut, r.err)
				}
				// The control: net/http missed the connection
				// (golang/go#81153), so only the deadline ended the wait.
				if held := r.returned.Sub(began); held < timeout-100*time.Millisecond {
					t.Errorf("Shutdown returned after %v, want the deadline %v (net/http sent no GOAWAY on the late connection)", held, timeout)
				}
				// The server closed it: the client reads what the server
				// wrote, then EOF, not a timeout.
				if err := raw.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
					t.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, raw); err != nil {
					t.Errorf("reading the late connection after Shutdown: %v, want EOF (closed by the server)", err)
				}
			}
			if n := s.openConns(); n != 0 {
				t.Errorf("%d connections still open after Shutdown returned, want 0", n)
			}
		})
	}
}

// lateRequest sends one h2c request over the already dialed raw connection
// and delivers nil if it got a whole 200 response.
func lateRequest(t *testing.T, raw net.Conn) <-chan error {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DialContext: func(context.Context, string, string) (net.Conn, error) {
		return raw, nil
	}}
	t.Cleanup(tr.CloseIdleConnections)
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+raw.RemoteAddr().String()+"/", nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := tr.RoundTrip(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || string(b) != "late") {
			err = errors.New("unexpected response " + resp.Status + " " + string(b))
		}
		done <- err
	}()
	return done
}
