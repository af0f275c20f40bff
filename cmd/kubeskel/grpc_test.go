package main

import (
	"bytes"
	"context"
	binenc "encoding/binary"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
)

// startGRPC starts kubeskel with the gRPC port on and returns its address.
func startGRPC(t *testing.T, extraEnv ...string) (*process, string) {
	t.Helper()
	p := start(t, append([]string{"APP_GRPC_ADDR=127.0.0.1:0"}, extraEnv...)...)
	return p, p.waitLog(10*time.Second, "listening", "server", "grpc")["addr"].(string)
}

// grpcClient dials addr and counts the TCP connections it opens.
func grpcClient(t *testing.T, addr string) (*grpc.ClientConn, *atomic.Int32) {
	t.Helper()
	var dials atomic.Int32
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, &dials
}

// TestGRPCDrain follows one client through SIGTERM: the health Watch sees
// NOT_SERVING at once, unary calls during the pre-stop delay succeed, the
// client's connection gets GOAWAY so its next calls go over a new
// connection, a stream open across the drain ends cleanly when its context
// is cancelled before the deadline, and the exit is 0.
func TestGRPCDrain(t *testing.T) {
	p, addr := startGRPC(t, "APP_PRESTOP_DELAY=1500ms", "APP_SHUTDOWN_TIMEOUT=2s", "APP_HANDLER_CANCEL_MARGIN=500ms")
	cc, dials := grpcClient(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	echo := echov1.NewEchoClient(cc)
	if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(cc).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health before SIGTERM = %v, %v; want SERVING", r, err)
	}
	stream, err := echo.Count(ctx, &echov1.CountRequest{Count: 10000, IntervalMs: 50})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	var streamErr error
	var streamMsgs int
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if _, streamErr = stream.Recv(); streamErr != nil {
				return
			}
			streamMsgs++
		}
	})

	signalled := time.Now()
	p.signal(syscall.SIGTERM)
	r, err := watch.Recv()
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after SIGTERM = %v, %v; want NOT_SERVING", r, err)
	}
	if d := time.Since(signalled); d > time.Second {
		t.Errorf("Watch saw NOT_SERVING %s after SIGTERM, want at once", d)
	}
	stopWatch()
	// Calls during the delay succeed; after the GOAWAY they go over a new
	// connection, which the port still accepts.
	calls := 0
	for time.Since(signalled) < 1200*time.Millisecond {
		if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "during"}); err != nil {
			t.Fatalf("unary call %s after SIGTERM: %v", time.Since(signalled), err)
		}
		calls++
		time.Sleep(50 * time.Millisecond)
	}
	if got := dials.Load(); got < 2 {
		t.Errorf("client opened %d connection(s) during the delay, want a second one after GOAWAY", got)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	wg.Wait()
	if !errors.Is(streamErr, io.EOF) {
		t.Errorf("stream open across the drain ended with %v after %d messages, want a clean end (EOF)", streamErr, streamMsgs)
	}
	t.Logf("%d unary calls during the delay, %d connections, stream got %d messages", calls, dials.Load(), streamMsgs)
}

// stalledStream opens Echo.Count on a raw HTTP/2 connection that advertises
// a 1-byte window and never reads: the handler blocks in Send and cannot
// return, whatever its context says, so the deadline must cut it.
func stalledStream(t *testing.T, addr string) {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	noErr(t, fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}))
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/kubeskel.echo.v1.Echo/Count"},
		{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		noErr(t, enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}))
	}
	noErr(t, fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}))
	msg, err := proto.Marshal(&echov1.CountRequest{Count: 10000, IntervalMs: 0})
	noErr(t, err)
	body := binenc.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) //nolint:gosec // G115: a few bytes
	body = append(body, msg...)
	noErr(t, fr.WriteData(1, true, body))
	go func() { // ack settings and pings, never update the window
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck() // a write error ends the read loop next
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = fr.WritePing(true, f.Data)
				}
			}
		}
	}()
}

// TestGRPCStreamCutAtDeadline: a stream whose handler cannot finish is cut
// at the shutdown deadline, counted, and the exit is 3.
func TestGRPCStreamCutAtDeadline(t *testing.T) {
	p, addr := startGRPC(t, "APP_PRESTOP_DELAY=0s", "APP_SHUTDOWN_TIMEOUT=1s", "APP_HANDLER_CANCEL_MARGIN=200ms")
	stalledStream(t, addr)
	p.waitMetric(t, "grpc_server_rpcs_in_flight", "1")
	p.signal(syscall.SIGTERM)
	if got, want := p.wait(20*time.Second), 3; got != want {
		t.Errorf("exit code = %d, want %d", got, want)
	}
	rec := p.waitLog(time.Second, "shutdown cut requests", "server", "grpc")
	if got, want := rec["requests_cut"], float64(1); got != want {
		t.Errorf("requests_cut = %v, want %v", got, want)
	}
}

// waitMetric polls /metrics until a sample line "name value" appears.
func (p *process) waitMetric(t *testing.T, name, value string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		_, _, body := get(t, p.url(true, "/metrics"))
		if strings.Contains(body, "\n"+name+" "+value+"\n") {
			return
		}
	}
	t.Fatalf("metric %s never reached %s", name, value)
}

func TestGRPCPortInUse(t *testing.T) {
	addr := busyPort(t)
	p := launch(t, baseEnv("APP_GRPC_ADDR="+addr))
	if code := p.wait(10 * time.Second); code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if took := p.exitedAt.Sub(p.started); took > time.Second {
		t.Errorf("exited %s after start, want within 1s", took)
	}
	if !strings.Contains(p.stderrString(), addr) {
		t.Errorf("stderr %q does not name the address %s", p.stderrString(), addr)
	}
}

// TestGRPCHealthProbe uses grpc-health-probe, an independent client, built
// by hack/tools.sh from the module proxy: SERVING (exit 0) when ready,
// NOT_SERVING (exit 4) once SIGTERM arrived.
func TestGRPCHealthProbe(t *testing.T) {
	out, err := exec.Command("../../hack/tools.sh", "grpc-health-probe").Output()
	probe := strings.TrimSpace(string(out))
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("grpc-health-probe cannot be built (%v); CI=true makes this a failure", err)
		}
		t.Fatalf("build grpc-health-probe: %v", err)
	}
	p, addr := startGRPC(t, "APP_PRESTOP_DELAY=3s")
	run := func() int {
		cmd := exec.Command(probe, "-addr="+addr, "-connect-timeout=2s", "-rpc-timeout=2s")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Logf("grpc-health-probe: %s", out)
			return exit.ExitCode()
		}
		noErr(t, err)
		return 0
	}
	if got := run(); got != 0 {
		t.Errorf("grpc-health-probe while ready exited %d, want 0 (SERVING)", got)
	}
	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	if got := run(); got != 4 {
		t.Errorf("grpc-health-probe while draining exited %d, want 4 (NOT_SERVING)", got)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

// TestGRPCRequestLogTraceID: the gRPC request log line carries the trace id
// of the caller's traceparent metadata. With tracing off the caller's span
// context is still extracted (telemetry.StartRPCSpan does so when trace
// metadata is present), so span_id is the caller's; with tracing on it is
// the server span's, a child in the same trace.
func TestGRPCRequestLogTraceID(t *testing.T) {
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	collector := httptest.NewServer(&otlpReceiver{})
	defer collector.Close()
	for _, tt := range []struct {
		name         string
		env          []string
		wantParentID bool // span_id is the caller's
	}{
		{"tracing off", nil, true},
		{"tracing on", []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, addr := startGRPC(t, append([]string{"APP_REQUEST_LOG=true"}, tt.env...)...)
			cc, _ := grpcClient(t, addr)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+parentID+"-01")
			if _, err := echov1.NewEchoClient(cc).Say(ctx, &echov1.SayRequest{Message: "traced"}); err != nil {
				t.Fatal(err)
			}
			rec := p.waitLog(5*time.Second, "rpc", "method", "/kubeskel.echo.v1.Echo/Say")
			if got := rec["trace_id"]; got != traceID {
				t.Errorf("rpc log trace_id = %v, want %s from traceparent (record %v)", got, traceID, rec)
			}
			spanID, _ := rec["span_id"].(string)
			switch {
			case tt.wantParentID && spanID != parentID:
				t.Errorf("rpc log span_id = %q, want the caller's %s", spanID, parentID)
			case !tt.wantParentID && (len(spanID) != 16 || spanID == parentID):
				t.Errorf("rpc log span_id = %q, want a server span's, not the caller's %s", spanID, parentID)
			}
			if got, want := rec["code"], "OK"; got != want {
				t.Errorf("rpc log code = %v, want %s", got, want)
			}
		})
	}
}
