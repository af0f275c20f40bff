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

// ErrRequestsCut is returned by Run when the shutdown deadline closed
// connections that still had requests in flight.
var ErrRequestsCut = errors.New("shutdown deadline reached: requests cut")

// ExitCode maps an error returned by Run to the process exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrRequestsCut):
		return ExitRequestsCut
	}
	return ExitFailure
}

// Server is an HTTP server whose listener is already bound
// (server.Server implements it).
type Server interface {
	Serve() error
	StartDraining()
	Shutdown(ctx context.Context, cancelMargin time.Duration) (cut int, err error)
	Close() error
	Arrivals() uint64
}

// Plan is everything Run drives. Zero durations mean "skip that step";
// nil functions are skipped.
type Plan struct {
	Traffic Server // the application's port: drained
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

	// Drained is told how long the drain took from the signal, and how many
	// requests the deadline cut.
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
// down in order. It returns nil after a clean drain, an error wrapping
// ErrRequestsCut if the shutdown deadline cut requests, and any other error
// if start-up or serving failed. Both servers must be bound before Run is
// called, and neither may be used after it returns.
func (c *Controller) Run(stop context.Context, p Plan) (err error) {
	serveErr := make(chan error, 2)
	go func() { serveErr <- p.Admin.Serve() }()
	go func() { serveErr <- p.Traffic.Serve() }()
	defer func() { c.enter(Stopped, "exit_code", ExitCode(err)) }()

	// A mesh proxy must be up before we take traffic, or our first
	// outgoing calls fail.
	if p.WaitReady != nil {
		if err := p.WaitReady(stop); err != nil && stop.Err() == nil {
			return errors.Join(fmt.Errorf("start-up: %w", err), p.Traffic.Close(), p.Admin.Close())
		}
	}
	wasReady := stop.Err() == nil
	if wasReady {
		c.enter(Ready)
	}

	// Serve until the first signal; a server that stops on its own is fatal.
	select {
	case <-stop.Done():
	case err := <-serveErr:
		return errors.Join(fmt.Errorf("server stopped unexpectedly: %w", err), p.Traffic.Close(), p.Admin.Close())
	}
	signalled := time.Now()

	// Fail readiness at once so endpoint controllers and load balancers
	// stop routing new requests here. Liveness stays OK: a failing liveness
	// probe would get the container restarted in the middle of its drain.
	c.enter(Draining, "reason", context.Cause(stop).Error(), "prestop_delay", p.PrestopDelay.String())
	p.Traffic.StartDraining()

	// Keep serving normally while the pod's removal propagates to
	// kube-proxy, ingress controllers and cloud load balancers, which happens
	// in parallel with our SIGTERM and takes seconds. Closing the listener
	// now would refuse requests still routed here. Responses now carry
	// "Connection: close" so pooled keep-alive connections move elsewhere.
	if wasReady {
		c.waitPrestop(p)
	}

	// Stop accepting and let requests in flight finish. The deadline starts
	// only now, so the drain gets the whole ShutdownTimeout.
	c.enter(ShuttingDown, "in_flight_deadline", p.ShutdownTimeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), p.ShutdownTimeout)
	cut, shutdownErr := p.Traffic.Shutdown(ctx, p.CancelMargin)
	cancel()
	drain := time.Since(signalled)
	if p.Drained != nil {
		p.Drained(drain, cut)
	}
	if shutdownErr != nil {
		c.log.Error("shutdown deadline reached", "requests_cut", cut, "err", shutdownErr)
		shutdownErr = fmt.Errorf("%w: %d in flight: %w", ErrRequestsCut, cut, shutdownErr)
	}

	// Flush telemetry only after the drain, so the spans of the last
	// requests are exported too. A failure here is logged, not fatal: the
	// requests themselves were served.
	c.enter(Flushing, "drain_ms", ms(drain), "requests_cut", cut)
	c.bounded("flush telemetry", p.Flush, p.FlushTimeout)
	// Only now may a sidecar proxy exit: we no longer need the network.
	c.bounded("ask sidecar to quit", p.Quit, p.QuitTimeout)

	// Probes and metrics stay up until the very end, so the drain can be
	// observed; stop them last.
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := p.Admin.Shutdown(ctx, 0); err != nil {
		c.log.Warn("stop admin server", "err", err)
	}
	return shutdownErr
}

// waitPrestop waits PrestopDelay, or less once no request has arrived for
// QuietPeriod.
func (c *Controller) waitPrestop(p Plan) {
	if p.PrestopDelay <= 0 {
		return
	}
	delay := time.NewTimer(p.PrestopDelay)
	defer delay.Stop()
	if p.QuietPeriod <= 0 {
		<-delay.C
		return
	}
	tick := time.NewTicker(min(max(p.QuietPeriod/10, time.Millisecond), 25*time.Millisecond))
	defer tick.Stop()
	seen, lastArrival := p.Traffic.Arrivals(), time.Now()
	for {
		select {
		case <-delay.C:
			return
		case now := <-tick.C:
			if n := p.Traffic.Arrivals(); n != seen {
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
