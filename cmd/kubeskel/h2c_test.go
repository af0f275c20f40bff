package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// h2cClient is a client that speaks cleartext HTTP/2 with prior knowledge
// only, and the number of TCP connections it has dialed.
func h2cClient(t *testing.T) (*http.Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	d := &net.Dialer{}
	tr := &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, &dials
}

// h2cReply is a whole response, or the error that ended the request, and
// the local address of the connection it used.
type h2cReply struct {
	status int
	proto  string
	err    error
	conn   string
}

// h2cGet sends a GET in the background and delivers the whole response.
func h2cGet(t *testing.T, c *http.Client, url string) <-chan h2cReply {
	done := make(chan h2cReply, 1)
	go func() {
		var conn atomic.Value
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			conn.Store(info.Conn.LocalAddr().String())
		}}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, url, nil)
		if err != nil {
			done <- h2cReply{err: err}
			return
		}
		resp, err := c.Do(req)
		if err != nil {
			done <- h2cReply{err: err}
			return
		}
		defer resp.Body.Close()
		_, err = io.Copy(io.Discard, resp.Body)
		local, _ := conn.Load().(string)
		done <- h2cReply{resp.StatusCode, resp.Proto, err, local}
	}()
	return done
}

// awaitReply waits for a reply, failing the test after 20s.
func awaitReply(t *testing.T, what string, ch <-chan h2cReply) h2cReply {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return h2cReply{}
	}
}

// TestH2CDrain: during the pre-stop delay a multiplexed h2c connection gets
// a GOAWAY, its stream in flight completes, later requests succeed on a new
// connection, and the exit is clean.
func TestH2CDrain(t *testing.T) {
	p := start(t, "APP_PRESTOP_DELAY=6s", "APP_TERMINATION_GRACE_PERIOD=60s")
	c, dials := h2cClient(t)

	if r := awaitReply(t, "the first h2c response", h2cGet(t, c, p.url(false, "/"))); r.err != nil || r.status != http.StatusOK || r.proto != "HTTP/2.0" {
		t.Fatalf("h2c GET / before the signal: %d %s, %v; want 200 HTTP/2.0", r.status, r.proto, r.err)
	}
	slow := h2cGet(t, c, p.url(false, "/slow?d=2s"))
	waitInFlight(t, p, 1)

	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	// A second stream on the same connection while the first is in flight:
	// its response carries the GOAWAY.
	fast := awaitReply(t, "the response while draining", h2cGet(t, c, p.url(false, "/")))
	if fast.err != nil || fast.status != http.StatusOK {
		t.Fatalf("h2c GET / while draining: %d, %v; want 200", fast.status, fast.err)
	}
	slowReply := awaitReply(t, "the slow response", slow)
	if slowReply.err != nil || slowReply.status != http.StatusOK {
		t.Fatalf("stream in flight across the GOAWAY: %d, %v; want 200", slowReply.status, slowReply.err)
	}
	if fast.conn == "" || fast.conn != slowReply.conn {
		t.Fatalf("the request while draining used connection %q, the slow stream %q; want the same (multiplexed)", fast.conn, slowReply.conn)
	}
	after := awaitReply(t, "the response after the GOAWAY", h2cGet(t, c, p.url(false, "/")))
	if after.err != nil || after.status != http.StatusOK || after.proto != "HTTP/2.0" {
		t.Fatalf("h2c GET / after the GOAWAY: %d %s, %v; want 200 HTTP/2.0", after.status, after.proto, after.err)
	}
	if after.conn == "" || after.conn == slowReply.conn {
		t.Errorf("the request after the GOAWAY used connection %q, the drained one was %q; want a new one", after.conn, slowReply.conn)
	}
	if got := dials.Load(); got < 2 {
		t.Errorf("%d connections dialed, want at least 2 (a new one after the GOAWAY)", got)
	}
	// Still inside the pre-stop delay: the drain had not reached Shutdown.
	if recs := p.logs.all(func(r map[string]any) bool { return r["phase"] == "shutting_down" }); len(recs) > 0 {
		t.Errorf("the requests above ran after the pre-stop delay; want them inside it")
	}

	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0\n%s", got, p.logs)
	}
}

// TestH2COff is the control: with APP_HTTP2=off the traffic port speaks
// HTTP/1.1 only, so an h2c client fails while HTTP/1.1 still works.
func TestH2COff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     []string
		wantErr bool
	}{
		{"default", nil, false},
		{"off", []string{"APP_HTTP2=off"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := start(t, append([]string{"APP_PRESTOP_DELAY=0s"}, tc.env...)...)
			c, _ := h2cClient(t)
			r := awaitReply(t, "the h2c response", h2cGet(t, c, p.url(false, "/")))
			if tc.wantErr && r.err == nil {
				t.Errorf("h2c GET / with APP_HTTP2=off got %d %s, want an error", r.status, r.proto)
			}
			if !tc.wantErr && (r.err != nil || r.status != http.StatusOK || r.proto != "HTTP/2.0") {
				t.Errorf("h2c GET /: %d %s, %v; want 200 HTTP/2.0", r.status, r.proto, r.err)
			}
			if status, _, _ := get(t, p.url(false, "/")); status != http.StatusOK {
				t.Errorf("HTTP/1.1 GET / = %d, want 200", status)
			}
			// The admin port is HTTP/1.1 only, whatever APP_HTTP2 says.
			if r := awaitReply(t, "the admin h2c response", h2cGet(t, c, p.url(true, "/live"))); r.err == nil {
				t.Errorf("h2c GET /live on the admin port got %d %s, want an error (HTTP/1.1 only)", r.status, r.proto)
			}
			p.signal(syscall.SIGTERM)
			if got := p.wait(30 * time.Second); got != 0 {
				t.Errorf("exit code = %d, want 0", got)
			}
		})
	}
}

// TestH2CBadValue: a bad APP_HTTP2 is a configuration error, exit 2.
func TestH2CBadValue(t *testing.T) {
	p := launch(t, baseEnv("APP_HTTP2=on"))
	if got, want := p.wait(10*time.Second), 2; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	stderr := p.stderrString()
	for _, w := range []string{"APP_HTTP2", `"on"`, "h2c or off"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr does not contain %q:\n%s", w, stderr)
		}
	}
}
