package loadgen

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestFreshEvery checks that one request in FreshEvery goes out on a new
// connection of its own and the others share the keep-alive pool, by
// counting the connections the server accepted.
func TestFreshEvery(t *testing.T) {
	for _, tc := range []struct {
		name       string
		freshEvery int
		total      int
		wantFresh  int
	}{
		{"none", 0, 40, 0},
		{"one in four", 4, 40, 10},
		{"every request", 1, 20, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepted atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/echo" {
					// Read before writing: an HTTP/1 handler cannot read the
					// body once its response has begun.
					b, _ := io.ReadAll(r.Body)
					w.Write(b)
					return
				}
				io.WriteString(w, "kubeskel test on pod-a\n")
			}))
			srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
				if st == http.StateNew {
					accepted.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()

			const conns = 2
			l := New(Config{URL: srv.URL, Rate: 200, Total: tc.total, Conns: conns,
				Timeout: 5 * time.Second, SlowEvery: 1 << 30, EchoEvery: 1 << 30, FreshEvery: tc.freshEvery})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l.Run(ctx)
			s := l.Summarize()
			if s.Failed() != 0 {
				t.Fatalf("%d failed: %s", s.Failed(), s.FailureLine())
			}
			if s.Fresh != tc.wantFresh || s.FreshFailed != 0 {
				t.Errorf("Summary: %d fresh (%d failed), want %d (0)", s.Fresh, s.FreshFailed, tc.wantFresh)
			}
			// The pool opens 1..conns connections (none if every request is
			// fresh); each fresh request one more.
			minPooled := 1
			if tc.wantFresh == tc.total {
				minPooled = 0
			}
			if got := int(accepted.Load()); got < tc.wantFresh+minPooled || got > tc.wantFresh+conns {
				t.Errorf("server accepted %d connections, want %d fresh plus 1..%d pooled", got, tc.wantFresh, conns)
			}
			for i, r := range l.results {
				want := tc.freshEvery > 0 && i%tc.freshEvery == tc.freshEvery-1
				if r.Fresh != want || (r.Kind == Root && r.Pod != "pod-a") {
					t.Fatalf("request %d (kind %d): Fresh %v, pod %q; want %v, pod-a", i, r.Kind, r.Fresh, r.Pod, want)
				}
			}
		})
	}
}
