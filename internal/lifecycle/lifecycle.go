// Package lifecycle drives the service from start-up to exit: it reports
// readiness only once start-up is complete, and on the stop signal drains
// traffic in the order Kubernetes and load balancers need so that no request
// is dropped during a rolling update.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Phase is a stage of the service's life. Phases only move forward.
type Phase string

// The phases, in order.
const (
	Starting     Phase = "starting"
	Ready        Phase = "ready"
	Draining     Phase = "draining"
	ShuttingDown Phase = "shutting_down"
	Flushing     Phase = "flushing"
	Stopped      Phase = "stopped"
)

// Exit codes, as documented in the README. Configuration errors (2) are
// decided before the lifecycle starts.
const (
	ExitOK           = 0
	ExitFailure      = 1
	ExitConfig       = 2
	ExitRequestsCut  = 3
	ExitSecondSignal = 4
)

// ErrRequestsCut is returned by Run when a traffic server's Shutdown
// reported requests it cut: at the deadline, or dropped by net/http after
// shutdown began (see server.Server.Shutdown).
var ErrRequestsCut = errors.New("shutdown cut requests")

// ErrServerStopped is returned by Run when a server's Serve returned before
// Run stopped it, at any phase: its listener is gone, so connections were
// refused.
var ErrServerStopped = errors.New("server stopped unexpectedly")

// ExitCode maps an error returned by Run to the process exit code. A server
// that stopped on its own is a failure (1) even if requests were also cut.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrServerStopped):
		return ExitFailure
	case errors.Is(err, ErrRequestsCut):
		return ExitRequestsCut
	}
	return ExitFailure
}

// Server is a server whose listener is already bound (server.Server and
// grpcserver.Server implement it). Serve must return nil once Shutdown or
// Close has been called, also when it is called after them (it then closes
// the listener and returns at once), and an error if it stops for any other
// reason. StartDraining tells clients to move elsewhere while the listener
// still accepts; Shutdown stops accepting, waits for requests in flight until
// ctx ends (cancelling their contexts cancelMargin before that) and returns
// how many it cut; Arrivals counts requests received so far.
type Server interface {
	Serve() error
	StartDraining()
	Shutdown(ctx context.Context, cancelMargin time.Duration) (cut int, err error)
	Close() error
	Arrivals() uint64
}

// Traffic is a server of the application's traffic and the name its log
// lines and errors use ("http", "grpc").
type Traffic struct {
	Name string
	Server
}

// Plan is everything Run drives. Zero durations mean "skip that step";
// nil functions are skipped.
type Plan struct {
	// Traffic are the application's ports, one per protocol: all served
	// once ready, drained together under the one ShutdownTimeout.
	Traffic []Traffic
	Admin   Server // probes and metrics: stopped last

	// WaitReady blocks until dependencies that must be up before traffic
	// (a mesh sidecar) are; an error aborts start-up.
	WaitReady func(ctx context.Context) error
	// Flush exports buffered telemetry; Quit tells a sidecar to exit.
	Flush, Quit func(ctx context.Context) error

	PrestopDelay    time.Duration // serve, not ready, this long after the signal
	QuietPeriod     time.Duration // end PrestopDelay early after this long without a request
	ShutdownTimeout time.Duration // deadline for requests in flight
	CancelMargin    time.Duration // cancel request contexts this long before that deadline
	FlushTimeout    time.Duration
	QuitTimeout     time.Duration
	// AdminStopTimeout bounds the admin server's graceful stop; zero closes
	// it at once.
	AdminStopTimeout time.Duration

	// Drained is told how long the drain took from the signal, and how many
	// requests the deadline cut, summed over the traffic servers.
	Drained func(d time.Duration, cut int)
}

// Controller tracks the current phase. Create it with New as early as
// possible: "since_start" durations count from then.
type Controller struct {
	log     *slog.Logger
	onPhase func(prev, next string, prevDuration time.Duration)

	mu         sync.Mutex
	phase      Phase
	start      time.Time
	phaseStart time.Time
}

// New returns a controller in phase Starting. onPhase, if not nil, is called
// on every phase change (for metrics).
func New(log *slog.Logger, onPhase func(prev, next string, prevDuration time.Duration)) *Controller {
	now := time.Now()
	c := &Controller{log: log, onPhase: onPhase, phase: Starting, start: now, phaseStart: now}
	log.Info("phase", "phase", Starting, "since_start_ms", 0, "previous_phase_ms", 0)
	if onPhase != nil {
		onPhase("", string(Starting), 0)
	}
	return c
}

// Phase returns the current phase.
func (c *Controller) Phase() Phase {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase
}

// Ready is the readiness check: nil only in phase Ready. Liveness must not
// use it.
func (c *Controller) Ready() error {
	if p := c.Phase(); p != Ready {
		return fmt.Errorf("lifecycle phase is %s", p)
	}
	return nil
}

func (c *Controller) enter(p Phase, attrs ...any) {
	c.mu.Lock()
	now := time.Now()
	prev, prevDuration := c.phase, now.Sub(c.phaseStart)
	c.phase, c.phaseStart = p, now
	c.mu.Unlock()
	args := append([]any{"phase", p, "since_start_ms", ms(now.Sub(c.start)), "previous_phase_ms", ms(prevDuration)}, attrs...)
	c.log.Info("phase", args...)
	if c.onPhase != nil {
		c.onPhase(string(prev), string(p), prevDuration)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Run serves until stop is done (the first SIGTERM or SIGINT) and then shuts
// down in order. The admin server serves from the start, so probes answer
// "not ready" during start-up; the traffic server serves only once WaitReady
// has succeeded (its bound listener queues connections until then). The
// traffic servers go through each phase together. It returns nil after a
// clean drain, an error wrapping ErrRequestsCut if the shutdown of any
// traffic server cut requests, one wrapping ErrServerStopped if a server
// stopped on its own at any time, and any other error if start-up failed.
// Every path out of Run goes through the same teardown (see teardown). All
// servers must be bound before Run is called, and none may be used after
// it returns.
func (c *Controller) Run(stop context.Context, p Plan) (err error) {
	w := c.watch(1 + len(p.Traffic))
	w.serve("admin", p.Admin)
	var at progress
	defer func() { err = c.teardown(p, w, at, err) }()

	// A mesh proxy must be up before we take traffic, or our first
	// outgoing calls fail.
	if p.WaitReady != nil {
		if err := p.WaitReady(stop); err != nil && stop.Err() == nil {
			return fmt.Errorf("start-up: %w", err)
		}
	}
	if at.signalled = stop.Err() != nil; at.signalled {
		return nil // stopped while starting: nothing was served, nothing to drain
	}
	for _, t := range p.Traffic {
		w.serve(t.Name, t)
	}
	at.serving = true
	c.enter(Ready)

	// Serve until the first signal; a server that stops on its own is fatal.
	select {
	case <-stop.Done():
	case <-w.failed:
		return nil // teardown reports the server's error
	}
	at.signalled = true
	start := time.Now()

	// Fail readiness at once so endpoint controllers and load balancers
	// stop routing new requests here. Liveness stays OK: a failing liveness
	// probe would get the container restarted in the middle of its drain.
	c.enter(Draining, "reason", context.Cause(stop).Error(), "prestop_delay", p.PrestopDelay.String())
	for _, t := range p.Traffic {
		t.StartDraining()
	}

	// Keep serving normally while the pod's removal propagates to
	// kube-proxy, ingress controllers and cloud load balancers, which happens
	// in parallel with our SIGTERM and takes seconds. Closing the listener
	// now would refuse requests still routed here. Each protocol now tells
	// its pooled connections to move elsewhere (HTTP responses carry
	// "Connection: close", gRPC connections get GOAWAY).
	c.waitPrestop(p, w.failed)

	// Stop accepting and let requests in flight finish. The deadline starts
	// only now, so the drain gets the whole ShutdownTimeout; the servers
	// drain concurrently, each under that same deadline.
	c.enter(ShuttingDown, "in_flight_deadline", p.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), p.ShutdownTimeout)
	cut, shutdownErr := c.shutdownAll(ctx, p)
	cancel()
	at.drained = true
	drain := time.Since(start)
	if p.Drained != nil {
		p.Drained(drain, cut)
	}
	c.enter(Flushing, "drain_ms", ms(drain), "requests_cut", cut)
	// Only requests really lost make exit 3; a shutdown error without a
	// cut (closing the listener failed) is an ordinary failure.
	switch {
	case cut > 0:
		c.log.Error("shutdown cut requests", "requests_cut", cut, "err", shutdownErr)
		return fmt.Errorf("%w: %d: %w", ErrRequestsCut, cut, shutdownErr)
	case shutdownErr != nil:
		return shutdownErr
	}
	return nil
}

// shutdownAll shuts the traffic servers down concurrently and returns the
// sum of their cuts and their errors joined, each naming its server.
func (c *Controller) shutdownAll(ctx context.Context, p Plan) (cut int, err error) {
	cuts := make([]int, len(p.Traffic))
	errs := make([]error, len(p.Traffic))
	var wg sync.WaitGroup
	for i, t := range p.Traffic {
		wg.Go(func() {
			cuts[i], errs[i] = t.Shutdown(ctx, p.CancelMargin)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("shut down %s server: %w", t.Name, errs[i])
			}
			if cuts[i] > 0 {
				c.log.Error("shutdown cut requests", "server", t.Name, "requests_cut", cuts[i])
			}
		})
	}
	wg.Wait()
	for _, n := range cuts {
		cut += n
	}
	return cut, errors.Join(errs...)
}

// arrivals is the number of requests received by all traffic servers.
func (p Plan) arrivals() uint64 {
	var n uint64
	for _, t := range p.Traffic {
		n += t.Arrivals()
	}
	return n
}

// progress is how far Run got before teardown.
type progress struct {
	signalled bool // the pod is terminating
	serving   bool // the traffic servers' Serve were started
	drained   bool // the traffic servers were shut down
}

// teardown ends every path out of Run, whatever err is; each step is bounded
// by its Plan timeout.
func (c *Controller) teardown(p Plan, w *watcher, at progress, err error) error {
	switch {
	case c.Phase() == Flushing: // after the drain
	case at.signalled:
		c.enter(Flushing, "reason", "stopped during start-up")
	default:
		c.enter(Flushing, "reason", "start-up or serve failure")
	}
	// Servers we did not drain are closed: on a failure there is nothing
	// worth waiting for. Serve after Close closes a listener never served.
	if !at.drained {
		for _, t := range p.Traffic {
			if cerr := t.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("close %s server: %w", t.Name, cerr))
			}
			if !at.serving {
				w.serve(t.Name, t)
			}
		}
	}
	// Flush telemetry after the drain, so the spans of the last requests
	// are exported, and on a failure too, so the spans around it are. A
	// flush failure is logged, not fatal.
	c.bounded("flush telemetry", p.Flush, p.FlushTimeout)
	// Only after a signal may a sidecar proxy exit: the pod is terminating
	// and we no longer need the network. After a start-up or serve failure
	// without a signal the kubelet restarts only this container, and a
	// native sidecar must stay up for the restarted one.
	if at.signalled {
		c.bounded("ask sidecar to quit", p.Quit, p.QuitTimeout)
	}
	// Probes and metrics stay up until the very end, so the drain can be
	// observed; stop them last.
	c.bounded("stop admin server", func(ctx context.Context) error {
		if p.AdminStopTimeout <= 0 {
			return p.Admin.Close()
		}
		_, err := p.Admin.Shutdown(ctx, 0)
		return err
	}, p.AdminStopTimeout)
	// A server that stopped on its own at any phase refused connections:
	// that is a failure even if the rest went well.
	err = errors.Join(err, w.wait())
	c.enter(Stopped, "exit_code", ExitCode(err))
	return err
}

// watcher runs the servers' Serve and keeps their results until the end of
// Run, so that a server failing in any phase is logged at once and counted.
type watcher struct {
	log     *slog.Logger
	results chan error
	failed  chan struct{} // closed on the first failure
	once    sync.Once
	started int
}

func (c *Controller) watch(servers int) *watcher {
	return &watcher{log: c.log, results: make(chan error, servers), failed: make(chan struct{})}
}

// serve runs srv.Serve in a goroutine. It is called once per server.
func (w *watcher) serve(name string, srv Server) {
	w.started++
	go func() {
		err := srv.Serve()
		if err != nil {
			w.log.Error("server stopped unexpectedly", "server", name, "err", err)
			err = fmt.Errorf("%w: %s: %w", ErrServerStopped, name, err)
			w.once.Do(func() { close(w.failed) })
		}
		w.results <- err
	}()
}

// wait returns once every started Serve has returned (they do once their
// server is shut down or closed), joining their failures.
func (w *watcher) wait() error {
	var errs []error
	for range w.started {
		errs = append(errs, <-w.results)
	}
	return errors.Join(errs...)
}

// waitPrestop waits PrestopDelay, or less once no request has arrived for
// QuietPeriod, or until failed is closed: a server that stopped on its own
// refuses connections already, so waiting longer serves nobody.
func (c *Controller) waitPrestop(p Plan, failed <-chan struct{}) {
	if p.PrestopDelay <= 0 {
		return
	}
	delay := time.NewTimer(p.PrestopDelay)
	defer delay.Stop()
	if p.QuietPeriod <= 0 {
		select {
		case <-delay.C:
		case <-failed:
		}
		return
	}
	tick := time.NewTicker(min(max(p.QuietPeriod/10, time.Millisecond), 25*time.Millisecond))
	defer tick.Stop()
	seen, lastArrival := p.arrivals(), time.Now()
	for {
		select {
		case <-delay.C:
			return
		case <-failed:
			return
		case now := <-tick.C:
			if n := p.arrivals(); n != seen {
				seen, lastArrival = n, now
			} else if now.Sub(lastArrival) >= p.QuietPeriod {
				c.log.Info("pre-stop delay ended early: no request during the quiet period", "quiet_period", p.QuietPeriod.String())
				return
			}
		}
	}
}

// bounded runs f with a timeout and logs its failure.
func (c *Controller) bounded(what string, f func(context.Context) error, timeout time.Duration) {
	if f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := f(ctx); err != nil {
		c.log.Warn(what+" failed", "err", err)
	}
}
