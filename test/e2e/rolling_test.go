//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/test/loadgen"
)

// model is one way a load balancer learns that an instance is going away.
type model struct {
	name string
	// healthCheck: HAProxy polls /ready on the admin port every checkInter
	// and takes the instance out after one failure (fall 1).
	healthCheck bool
	// lag (endpoint-lag model, no health checks): the harness puts the old
	// instance in maintenance this long after SIGTERM, like kube-proxy
	// programming the endpoint removal while the kubelet already signalled.
	lag time.Duration
	// h2: clients speak HTTP/2 with prior knowledge to HAProxy, and HAProxy
	// speaks it to the instances (proto h2): multiplexed connections on
	// both sides, drained by GOAWAY.
	h2 bool
}

const checkInter = 200 * time.Millisecond

// sseStreams is the number of SSE clients connected through every run.
const sseStreams = 6

// scenario is one run: a model, an app configuration and a load size.
type scenario struct {
	model
	prestop   time.Duration // APP_PRESTOP_DELAY
	total     int           // requests
	rate      int           // requests per second
	minRounds int           // each round restarts every instance once
	maxRounds int           // 0: keep rolling while the load lasts
}

// Fixed app settings; the drain budget follows from them.
const (
	shutdownTimeout = 5 * time.Second
	flushTimeout    = 1 * time.Second
	instances       = 3
	slowMax         = time.Second // longest /slow request; well inside shutdownTimeout
	exitSlack       = time.Second // process teardown after the last phase
)

func (sc scenario) env() map[string]string {
	return map[string]string{
		"APP_PRESTOP_DELAY":            sc.prestop.String(),
		"APP_SHUTDOWN_TIMEOUT":         shutdownTimeout.String(),
		"APP_TELEMETRY_FLUSH_TIMEOUT":  flushTimeout.String(),
		"APP_TERMINATION_GRACE_PERIOD": (sc.prestop + shutdownTimeout + flushTimeout + 2*time.Second).String(),
		// Above HAProxy's keep-alive (10s) and server pool purge (5s)
		// timeouts: the LB must be the side that closes idle connections.
		"APP_IDLE_TIMEOUT": "60s",
		"APP_SLOW_MAX":     "5s",
		"APP_LOG_LEVEL":    "info",
	}
}

// budget is how long an old instance may take from SIGTERM to exit.
func (sc scenario) budget() time.Duration {
	return sc.prestop + shutdownTimeout + flushTimeout + exitSlack
}

// restart records one replacement of an instance.
type restart struct {
	round, index     int
	oldSlot, newSlot string
	inflightAtTerm   int64         // client requests in flight, all backends
	sessionsAtTerm   int           // HAProxy sessions on the old instance (scur)
	drain            time.Duration // SIGTERM → exit
	exitCode         int
	startToUp        time.Duration // replacement exec → UP in HAProxy
	streamsAtTerm    int           // SSE streams open on the old instance at SIGTERM
	streamsFinal     int           // of those, ended cleanly after its final event
}

// outcome is what a scenario run measured.
type outcome struct {
	sc       scenario
	sum      loadgen.Summary
	streams  streamSummary
	frames   *loadgen.H2Frames
	restarts []restart
	wall     time.Duration
}

func short() bool { return testing.Short() || os.Getenv("E2E_SHORT") != "" }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func models() []model {
	return []model{
		{name: "health-checked", healthCheck: true},
		{name: "endpoint-lag", lag: envDuration("E2E_LAG", time.Second)},
		{name: "h2-health-checked", healthCheck: true, h2: true},
		{name: "h2-endpoint-lag", lag: envDuration("E2E_LAG", time.Second), h2: true},
	}
}

// prestopFor is the APP_PRESTOP_DELAY that covers a model's deregistration
// time with a margin: the check interval (plus one in-flight check), or the lag.
func prestopFor(m model) time.Duration {
	if m.healthCheck {
		return 5 * checkInter
	}
	return m.lag + time.Second
}

// TestRollingRestart is the proof: with a prestop delay that covers the
// deregistration time, rolling restarts under load drop nothing and every old
// process exits 0 within its budget.
func TestRollingRestart(t *testing.T) {
	total := envInt("E2E_REQUESTS", 60000) // per model; 2 models → ≥ 100k
	minRounds := 2                         // 6 restarts
	if short() {
		// Fewer requests, the same ≥ 6 restarts per model: the restarts
		// are what the proof is about.
		total = envInt("E2E_REQUESTS", 30000)
	}
	for _, m := range models() {
		t.Run(m.name, func(t *testing.T) {
			sc := scenario{model: m, prestop: prestopFor(m), total: total, rate: envInt("E2E_RATE", 1000), minRounds: minRounds}
			out := runScenario(t, sc)
			report(t, out)
			if n := out.sum.Failed(); n != 0 {
				t.Errorf("%d of %d requests failed: %s", n, out.sum.Requests, out.sum.FailureLine())
			}
			if out.frames != nil && out.frames.RSTOther.Load() != 0 {
				t.Errorf("HAProxy reset %d streams with a code other than REFUSED_STREAM: a retry after it may not be safe", out.frames.RSTOther.Load())
			}
			for _, f := range out.streams.failures {
				t.Errorf("SSE %s", f)
			}
			if got, want := len(out.restarts), minRounds*instances; got < want {
				t.Errorf("restarts = %d, want ≥ %d (load too short?)", got, want)
			}
			for _, r := range out.restarts {
				if r.exitCode != 0 {
					t.Errorf("restart %d.%d: old process exited %d, want 0", r.round, r.index, r.exitCode)
				}
				if r.drain > sc.budget() {
					t.Errorf("restart %d.%d: drain took %v, budget %v", r.round, r.index, r.drain, sc.budget())
				}
				if r.streamsFinal != r.streamsAtTerm {
					t.Errorf("restart %d.%d: %d of the %d SSE streams open at SIGTERM ended cleanly with the final event; want all",
						r.round, r.index, r.streamsFinal, r.streamsAtTerm)
				}
			}
		})
	}
}

// TestNaiveControl runs the same harness with APP_PRESTOP_DELAY=0 (Shutdown
// the instant SIGTERM arrives, anti-pattern 1 in STYLE.md). It must see
// failures in at least one model; if it does not, the harness is blind and
// TestRollingRestart's zero proves nothing.
func TestNaiveControl(t *testing.T) {
	total := envInt("E2E_CONTROL_REQUESTS", 8000)
	failed := map[bool]int{} // by model.h2
	for _, m := range models() {
		t.Run(m.name, func(t *testing.T) {
			sc := scenario{model: m, prestop: 0, total: total, rate: envInt("E2E_RATE", 1000), minRounds: 1, maxRounds: 1}
			out := runScenario(t, sc)
			report(t, out)
			failed[m.h2] += out.sum.Failed()
		})
	}
	// The HTTP/2 models have their own control: their load generator and
	// HAProxy set-up differ, so each must be shown to see a dropped request.
	for _, h2 := range []bool{false, true} {
		if failed[h2] == 0 {
			t.Errorf("naive configuration (APP_PRESTOP_DELAY=0) dropped no request in any model with h2=%v: the harness cannot see a dropped request", h2)
		}
	}
}

// runScenario starts HAProxy and three instances, runs the load, and rolls
// every instance (maxSurge 1, maxUnavailable 0) while the load runs.
func runScenario(t *testing.T, sc scenario) outcome {
	t.Helper()
	began := time.Now()
	lb := startHAProxy(t, sc.healthCheck, sc.h2, checkInter, instances+1)
	env := sc.env()

	live := make([]*instance, instances)
	for i := range live {
		live[i] = startInstance(t, env)
		live[i].waitReady(t, 10*time.Second)
		lb.add(t, live[i])
	}
	for _, inst := range live {
		lb.waitUp(t, inst, 10*time.Second)
	}

	conns := 64
	if sc.h2 {
		conns = 8 // multiplexed: 8 connections carry the same load
	}
	ld := loadgen.New(loadgen.Config{
		URL:       "http://" + lb.addr,
		Rate:      sc.rate,
		Total:     sc.total,
		Conns:     conns,
		H2:        sc.h2,
		Timeout:   10 * time.Second,
		SlowMax:   slowMax,
		SlowEvery: 20,
		EchoEvery: 4,
		Debug:     os.Getenv("E2E_DEBUG") != "",
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(sc.total/sc.rate)*time.Second+time.Minute)
	defer cancel()
	go ld.Run(ctx)
	t.Cleanup(func() { cancel(); <-ld.Finished() })

	// Warm up: one second of traffic through every connection before the
	// first SIGTERM.
	for ld.Done() < int64(sc.rate) {
		select {
		case <-ld.Finished():
			t.Fatal("load finished during warm-up")
		case <-time.After(10 * time.Millisecond):
		}
	}

	// SSE clients that stay connected through every restart.
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	sw := watchStreams(sctx, "http://"+lb.addr, sc.h2, sseStreams)

	// Stop rolling when less than about three restarts' worth of load is
	// left, so every SIGTERM happens under traffic.
	perRestart := sc.prestop + 2*time.Second
	var restarts []restart
	for round := 0; ; round++ {
		if sc.maxRounds > 0 && round >= sc.maxRounds {
			break
		}
		if round >= sc.minRounds && ld.Remaining() < instances*perRestart+perRestart {
			break
		}
		for i := range live {
			r, repl := replace(t, lb, live[i], env, sc, ld, sw)
			r.round, r.index = round+1, i+1
			restarts = append(restarts, r)
			live[i] = repl
		}
	}
	if ld.Remaining() <= 0 {
		t.Errorf("the load ended before the last restart finished; raise E2E_REQUESTS")
	}

	select {
	case <-ld.Finished():
	case <-ctx.Done():
		t.Fatal("load did not finish in time")
	}
	stopStreams()
	sw.wait()
	return outcome{sc: sc, sum: ld.Summarize(), streams: sw.summarize(), frames: ld.Frames(), restarts: restarts, wall: time.Since(began)}
}

// replace performs one surge step: start a replacement, wait until HAProxy
// has it UP, then SIGTERM the old instance and wait for its exit.
func replace(t *testing.T, lb *loadBalancer, old *instance, env map[string]string, sc scenario, ld *loadgen.Load, sw *streamWatch) (restart, *instance) {
	t.Helper()
	started := time.Now()
	repl := startInstance(t, env)
	repl.waitReady(t, 10*time.Second)
	lb.add(t, repl)
	lb.waitUp(t, repl, 10*time.Second)
	r := restart{oldSlot: old.slot, newSlot: repl.slot, startToUp: time.Since(started)}

	r.inflightAtTerm = ld.InFlight()
	r.sessionsAtTerm = lb.sessions(old)
	streams := sw.openOn(old.name)
	r.streamsAtTerm = len(streams)
	old.sigterm(t)
	if !sc.healthCheck {
		// Endpoint lag: the LB keeps routing to the old instance for a while
		// after SIGTERM. This sleep is the modelled propagation delay, not a
		// wait for a condition.
		time.Sleep(sc.lag)
		lb.disable(t, old)
	}
	r.drain = old.waitExit(t, sc.budget()+5*time.Second)
	r.exitCode = old.exitCode
	// The streams' ends were sent before the exit (see sseStream.ok); the
	// wait only lets the client goroutines read them.
	r.streamsFinal = sw.settled(streams, 5*time.Second)
	// The slot is free again; in the health-checked model HAProxy already
	// marked it DOWN on its own.
	lb.release(t, old)
	return r, repl
}

// report prints the per-model summary table.
func report(t *testing.T, o outcome) {
	t.Helper()
	var b strings.Builder
	s := o.sum
	mode := "health checks GET /ready every " + checkInter.String()
	if !o.sc.healthCheck {
		mode = "no health checks, disabled " + o.sc.lag.String() + " after SIGTERM"
	}
	if o.sc.h2 {
		mode += "; HTTP/2 (h2c) client→HAProxy→instances"
	}
	fmt.Fprintf(&b, "\n== model %s (%s), APP_PRESTOP_DELAY=%v, %d req/s, wall %v\n", o.sc.name, mode, o.sc.prestop, o.sc.rate, o.wall.Round(time.Millisecond))
	fmt.Fprintf(&b, "requests %d  failed %d  restarts %d\n", s.Requests, s.Failed(), len(o.restarts))
	fmt.Fprintf(&b, "failures: %s\n", s.FailureLine())
	if o.sc.h2 {
		fmt.Fprintf(&b, "HTTP/2 requests retried by Go's client, then 200 (not failures): %d;  HAProxy sent the clients RST_STREAM REFUSED_STREAM %d, other RST_STREAM %d, GOAWAY %d\n",
			s.H2Retry, o.frames.RSTRefused.Load(), o.frames.RSTOther.Load(), o.frames.GoAway.Load())
	}
	fmt.Fprintf(&b, "SSE streams (%d clients): opened %d  ended with the final event %d  failed %d  open at the end %d\n",
		sseStreams, o.streams.opened, o.streams.final, len(o.streams.failures), o.streams.stopped)
	fmt.Fprintf(&b, "latency (GET / and POST /echo, from scheduled send): p50 %v  p99 %v;  /slow p99 %v;  max %v\n",
		s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.SlowP99.Round(time.Microsecond), s.Max.Round(time.Microsecond))
	if len(o.restarts) > 0 {
		var drains []time.Duration
		for _, r := range o.restarts {
			drains = append(drains, r.drain)
		}
		fmt.Fprintf(&b, "drain SIGTERM→exit over %d restarts: min %v  median %v  max %v  (budget %v)\n", len(drains),
			slices.Min(drains).Round(time.Millisecond), loadgen.Percentile(drains, 50).Round(time.Millisecond),
			slices.Max(drains).Round(time.Millisecond), o.sc.budget())
	}
	fmt.Fprintf(&b, "%-8s %-9s %-10s %-13s %-13s %-11s %-9s %-5s %s\n", "restart", "slot", "start→UP", "old sessions", "client in-fl", "SSE final", "drain", "exit", "budget")
	for _, r := range o.restarts {
		fmt.Fprintf(&b, "%-8s %-9s %-10v %-13d %-13d %-11s %-9v %-5d %v\n",
			fmt.Sprintf("%d.%d", r.round, r.index), r.oldSlot+"→"+r.newSlot, r.startToUp.Round(time.Millisecond),
			r.sessionsAtTerm, r.inflightAtTerm, fmt.Sprintf("%d/%d", r.streamsFinal, r.streamsAtTerm),
			r.drain.Round(time.Millisecond), r.exitCode, o.sc.budget())
	}
	fmt.Fprintf(&b, "(old sessions: HAProxy scur of the old instance at SIGTERM; client in-fl: all requests in flight then;\n SSE final: streams open on the old instance at SIGTERM that ended cleanly after its final event)\n")
	t.Log(b.String())
}
