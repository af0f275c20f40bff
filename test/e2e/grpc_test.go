//go:build e2e

package e2e

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
)

//go:embed grpc_haproxy.cfg.tmpl
var grpcHAProxyText string

var grpcHAProxyConfig = template.Must(template.New("grpc_haproxy.cfg").Parse(grpcHAProxyText))

// streamCount and streamInterval shape the streaming calls of the load: each
// stays open half a second, so restarts always find some open.
const (
	streamCount    = 5
	streamInterval = 100 * time.Millisecond
)

// TestGRPCRollingRestart is the gRPC proof: HAProxy (h2 to the backends,
// health checks on /ready) in front of three instances, an open-loop load of
// unary and server-streaming calls, ≥ 6 restarts, and not one failed RPC;
// every old process exits 0.
func TestGRPCRollingRestart(t *testing.T) {
	total := envInt("E2E_GRPC_REQUESTS", 16000)
	sc := scenario{model: model{name: "grpc-health-checked", healthCheck: true}, prestop: prestopFor(model{healthCheck: true}),
		total: total, rate: envInt("E2E_GRPC_RATE", 400), minRounds: 2}
	out := runGRPCScenario(t, sc)
	reportGRPC(t, out)
	if out.failed != 0 {
		t.Errorf("%d of %d RPCs failed: %s", out.failed, out.calls, out.failures)
	}
	if got, want := len(out.restarts), sc.minRounds*instances; got < want {
		t.Errorf("restarts = %d, want ≥ %d (load too short?)", got, want)
	}
	for _, r := range out.restarts {
		if r.exitCode != 0 {
			t.Errorf("restart %d.%d: old process exited %d, want 0", r.round, r.index, r.exitCode)
		}
	}
}

// TestGRPCNaiveControl is the same harness with APP_PRESTOP_DELAY=0: the
// listener closes while HAProxy still routes to the instance. It must see
// failed RPCs, or the harness cannot see one and the zero above means
// nothing.
func TestGRPCNaiveControl(t *testing.T) {
	sc := scenario{model: model{name: "grpc-health-checked", healthCheck: true}, prestop: 0,
		total: envInt("E2E_GRPC_CONTROL_REQUESTS", 6000), rate: envInt("E2E_GRPC_RATE", 400), minRounds: 1, maxRounds: 1}
	out := runGRPCScenario(t, sc)
	reportGRPC(t, out)
	if out.failed == 0 {
		t.Errorf("naive configuration (APP_PRESTOP_DELAY=0) failed no RPC: the harness cannot see a failed RPC")
	}
}

type grpcOutcome struct {
	sc               scenario
	calls, failed    int64
	unary, streams   int64
	failures         string
	restarts         []restart
	wall             time.Duration
	p50, p99, maxLat time.Duration
}

func runGRPCScenario(t *testing.T, sc scenario) grpcOutcome {
	t.Helper()
	began := time.Now()
	lb := startGRPCHAProxy(t, checkInter, instances+1)
	env := sc.env()
	env["APP_GRPC_ADDR"] = "127.0.0.1:0"

	live := make([]*instance, instances)
	for i := range live {
		live[i] = startGRPCInstance(t, env)
		lb.add(t, live[i])
	}
	for _, inst := range live {
		lb.waitUp(t, inst, 10*time.Second)
	}

	ld := newGRPCLoad(t, lb.addr, sc.rate, sc.total)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(sc.total/sc.rate)*time.Second+time.Minute)
	defer cancel()
	go ld.run(ctx)
	t.Cleanup(func() { cancel(); <-ld.finished })
	for ld.done.Load() < int64(sc.rate) { // one second of warm-up
		select {
		case <-ld.finished:
			t.Fatal("load finished during warm-up")
		case <-time.After(10 * time.Millisecond):
		}
	}

	perRestart := sc.prestop + 2*time.Second
	var restarts []restart
	for round := 0; ; round++ {
		if sc.maxRounds > 0 && round >= sc.maxRounds {
			break
		}
		if round >= sc.minRounds && ld.remaining() < instances*perRestart+perRestart {
			break
		}
		for i := range live {
			started := time.Now()
			repl := startGRPCInstance(t, env)
			lb.add(t, repl)
			lb.waitUp(t, repl, 10*time.Second)
			old := live[i]
			r := restart{round: round + 1, index: i + 1, oldSlot: old.slot, newSlot: repl.slot, startToUp: time.Since(started)}
			r.inflightAtTerm = ld.inflight.Load()
			r.sessionsAtTerm = lb.sessions(old)
			old.sigterm(t)
			r.drain = old.waitExit(t, sc.budget()+5*time.Second)
			r.exitCode = old.exitCode
			lb.release(t, old)
			restarts = append(restarts, r)
			live[i] = repl
		}
	}
	if ld.remaining() <= 0 {
		t.Errorf("the load ended before the last restart finished; raise E2E_GRPC_REQUESTS")
	}
	select {
	case <-ld.finished:
	case <-ctx.Done():
		t.Fatal("load did not finish in time")
	}
	out := grpcOutcome{sc: sc, calls: ld.done.Load(), failed: ld.failed.Load(), unary: ld.unary.Load(), streams: ld.streams.Load(),
		failures: ld.failureLine(), restarts: restarts, wall: time.Since(began)}
	out.p50, out.p99, out.maxLat = ld.latencies()
	return out
}

var grpcListening = regexp.MustCompile(`"msg":"listening","server":"grpc","addr":"([^"]+)"`)

// startGRPCInstance starts kubeskel with the gRPC port on, waits for /ready,
// and points the instance's traffic address at the gRPC port: that is where
// the load balancer sends it traffic.
func startGRPCInstance(t *testing.T, env map[string]string) *instance {
	t.Helper()
	inst := startInstance(t, env)
	inst.waitReady(t, 10*time.Second)
	// The line was written before /ready could answer 200, but readLog
	// copies the output asynchronously: it may not be in inst.out yet.
	m := grpcListening.FindStringSubmatch(inst.out.String())
	for deadline := time.Now().Add(5 * time.Second); m == nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		m = grpcListening.FindStringSubmatch(inst.out.String())
	}
	if m == nil {
		t.Fatalf("no gRPC listening line within 5s of /ready:\n%s", inst.out.String())
	}
	inst.httpAddr = m[1]
	return inst
}

// startGRPCHAProxy is startHAProxy with the gRPC configuration.
func startGRPCHAProxy(t *testing.T, inter time.Duration, slots int) *loadBalancer {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy not found (apt-get install haproxy): %v", err)
	}
	dir := t.TempDir()
	cfg := lbConfig{Socket: filepath.Join(dir, "admin.sock"), Port: freePort(t), HealthCheck: true, Inter: inter}
	lb := &loadBalancer{cfg: cfg, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)), free: map[string]bool{}}
	for i := 1; i <= slots; i++ {
		name := fmt.Sprintf("s%d", i)
		lb.cfg.Slots = append(lb.cfg.Slots, name)
		lb.free[name] = true
	}
	var buf bytes.Buffer
	if err := grpcHAProxyConfig.Execute(&buf, lb.cfg); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-db", "-f", cfgPath)
	cmd.SysProcAttr = dieWithTest()
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := lb.cmd("show info"); err == nil {
			return lb
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited at start:\n%s\nconfig:\n%s", out.String(), buf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy admin socket did not answer within 10s:\n%s", out.String())
		}
	}
}

// grpcLoad sends calls at a fixed rate whatever the answers (open loop):
// three unary Say calls, then one Count stream of streamCount messages.
// A call fails on any error, and a stream also when it ends early.
type grpcLoad struct {
	conns    []*grpc.ClientConn
	rate     int
	total    int
	done     atomic.Int64
	failed   atomic.Int64
	unary    atomic.Int64
	streams  atomic.Int64
	inflight atomic.Int64
	finished chan struct{}

	mu    sync.Mutex
	kinds map[string]int
	lat   []time.Duration
}

func newGRPCLoad(t *testing.T, addr string, rate, total int) *grpcLoad {
	t.Helper()
	ld := &grpcLoad{rate: rate, total: total, finished: make(chan struct{}), kinds: map[string]int{}}
	// Several client connections, as several client pods would have.
	for range 8 {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		ld.conns = append(ld.conns, cc)
	}
	return ld
}

func (ld *grpcLoad) remaining() time.Duration {
	left := ld.total - int(ld.done.Load())
	return time.Duration(left) * time.Second / time.Duration(ld.rate)
}

func (ld *grpcLoad) run(ctx context.Context) {
	defer close(ld.finished)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range ld.total {
		at := start.Add(time.Duration(i) * time.Second / time.Duration(ld.rate))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				wg.Wait()
				return
			}
		}
		cc := ld.conns[i%len(ld.conns)]
		wg.Go(func() { ld.call(ctx, cc, i%4 == 3, at) })
	}
	wg.Wait()
}

func (ld *grpcLoad) call(ctx context.Context, cc *grpc.ClientConn, stream bool, scheduled time.Time) {
	ld.inflight.Add(1)
	defer ld.inflight.Add(-1)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	echo := echov1.NewEchoClient(cc)
	var err error
	if stream {
		ld.streams.Add(1)
		err = countStream(ctx, echo)
	} else {
		ld.unary.Add(1)
		var r *echov1.SayResponse
		r, err = echo.Say(ctx, &echov1.SayRequest{Message: "hi"})
		if err == nil && r.GetMessage() != "hi" {
			err = fmt.Errorf("wrong answer %q", r.GetMessage())
		}
	}
	if err != nil {
		ld.failed.Add(1)
		kind := status.Code(err).String() + ": " + status.Convert(err).Message()
		if len(kind) > 120 {
			kind = kind[:120]
		}
		ld.mu.Lock()
		ld.kinds[kind]++
		ld.mu.Unlock()
	} else if !stream {
		ld.mu.Lock()
		ld.lat = append(ld.lat, time.Since(scheduled))
		ld.mu.Unlock()
	}
	ld.done.Add(1)
}

// countStream reads one Count stream and fails unless it ends with OK after
// every message: a stream cut short is a failed call.
func countStream(ctx context.Context, echo echov1.EchoClient) error {
	st, err := echo.Count(ctx, &echov1.CountRequest{Count: streamCount, IntervalMs: uint32(streamInterval / time.Millisecond)}) //nolint:gosec // G115: 100
	if err != nil {
		return err
	}
	n := 0
	for {
		_, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		n++
	}
	if n != streamCount {
		return status.Errorf(0, "stream ended cleanly after %d of %d messages", n, streamCount)
	}
	return nil
}

func (ld *grpcLoad) failureLine() string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if len(ld.kinds) == 0 {
		return "none"
	}
	var parts []string
	for k, n := range ld.kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func (ld *grpcLoad) latencies() (p50, p99, maxLat time.Duration) {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if len(ld.lat) == 0 {
		return
	}
	s := append([]time.Duration(nil), ld.lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

func reportGRPC(t *testing.T, o grpcOutcome) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "\n== gRPC model %s (HAProxy proto h2, health checks GET /ready every %v), APP_PRESTOP_DELAY=%v, %d calls/s, wall %v\n",
		o.sc.name, checkInter, o.sc.prestop, o.sc.rate, o.wall.Round(time.Millisecond))
	fmt.Fprintf(&b, "calls %d (unary %d, streams of %d messages %d)  failed %d  restarts %d\n", o.calls, o.unary, streamCount, o.streams, o.failed, len(o.restarts))
	fmt.Fprintf(&b, "failures: %s\n", o.failures)
	fmt.Fprintf(&b, "unary latency from scheduled send: p50 %v  p99 %v  max %v\n", o.p50.Round(time.Microsecond), o.p99.Round(time.Microsecond), o.maxLat.Round(time.Microsecond))
	fmt.Fprintf(&b, "%-8s %-9s %-10s %-13s %-13s %-9s %s\n", "restart", "slot", "start→UP", "old sessions", "client in-fl", "drain", "exit")
	for _, r := range o.restarts {
		fmt.Fprintf(&b, "%-8s %-9s %-10v %-13d %-13d %-9v %d\n", fmt.Sprintf("%d.%d", r.round, r.index), r.oldSlot+"→"+r.newSlot,
			r.startToUp.Round(time.Millisecond), r.sessionsAtTerm, r.inflightAtTerm, r.drain.Round(time.Millisecond), r.exitCode)
	}
	t.Log(b.String())
}
