package main

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// silentListener accepts connections and never answers on them: a collector
// that hangs.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestCollectorDown: with tracing on and the OTLP collector unreachable,
// the service serves normally, stops within its budget after SIGTERM, exits
// 0 (the requests were served) and logs that the flush failed.
func TestCollectorDown(t *testing.T) {
	const (
		prestop = 500 * time.Millisecond
		flush   = time.Second
		slack   = 3 * time.Second
	)
	tests := []struct {
		name     string
		endpoint func(t *testing.T) string
		wantErr  string // in the logged flush error
	}{
		{"connection refused", closedPort, "connection refused"},
		{"accepts and never answers", silentListener, "deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, "APP_PRESTOP_DELAY="+prestop.String(), "APP_TELEMETRY_FLUSH_TIMEOUT="+flush.String(),
				"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+tt.endpoint(t), "OTEL_BSP_SCHEDULE_DELAY=600000")
			for i := range 5 {
				if code, _, _ := get(t, p.url(false, "/")); code != http.StatusOK {
					t.Fatalf("GET / #%d with the collector down = %d, want 200", i+1, code)
				}
			}
			signalled := time.Now()
			p.signal(syscall.SIGTERM)
			budget := prestop + flush + slack
			if got := p.wait(budget + 10*time.Second); got != 0 {
				t.Errorf("exit code = %d, want 0: the requests were served, only the export failed", got)
			}
			if took := p.exitedAt.Sub(signalled); took > budget {
				t.Errorf("exited %s after SIGTERM, want within pre-stop %s + flush timeout %s + %s slack", took.Round(time.Millisecond), prestop, flush, slack)
			}
			rec := p.waitLog(time.Second, "flush telemetry failed", "", "")
			if err, _ := rec["err"].(string); !strings.Contains(err, tt.wantErr) {
				t.Errorf("flush failure logged with err %q, want it to say %q", err, tt.wantErr)
			}
			if rec["level"] != "WARN" {
				t.Errorf("flush failure logged at %v, want WARN", rec["level"])
			}
		})
	}
}

// TestB3TraceIDInRequestLog: with tracing off and OTEL_PROPAGATORS=b3, the
// caller's b3 trace id reaches the request log line.
func TestB3TraceIDInRequestLog(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		name   string
		header http.Header
	}{
		{"single header", http.Header{"B3": {traceID + "-00f067aa0ba902b7-1"}}},
		{"multiple headers", http.Header{"X-B3-Traceid": {traceID}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-B3-Sampled": {"1"}}},
	}
	p := start(t, "APP_REQUEST_LOG=true", "OTEL_PROPAGATORS=tracecontext, b3")
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.url(false, "/"), nil)
			req.Header = tt.header
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// The requests are sequential: this one's line is the i+1th.
			seen := 0
			rec, ok := p.logs.wait(5*time.Second, func(r map[string]any) bool {
				if r["msg"] != "request" {
					return false
				}
				seen++
				return seen == i+1
			})
			if !ok {
				t.Fatalf("no request log line for request %d", i+1)
			}
			if got := rec["trace_id"]; got != traceID {
				t.Errorf("request log trace_id = %v, want %s from the %s", got, traceID, tt.name)
			}
		})
	}
}
