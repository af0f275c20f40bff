package lifecycle

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRunTeardownOnEveryPath checks that every way out of Run flushes
// telemetry and stops the admin server, that the sidecar is asked to quit
// only when a signal says the pod is terminating, and that a server which
// stops on its own at any time gives exit code 1.
func TestRunTeardownOnEveryPath(t *testing.T) {
	serveFailure := errors.New("accept: too many open files")
	tests := []struct {
		name     string
		setup    func(traffic, admin *fakeServer, p *Plan)
		signal   bool                                                          // send the stop signal once ready
		during   func(t *testing.T, traffic, admin *fakeServer, c *Controller) // after the signal
		wantExit int
		wantQuit bool
	}{
		{name: "wait ready fails", wantExit: ExitFailure,
			setup: func(_, _ *fakeServer, p *Plan) {
				p.WaitReady = func(context.Context) error { return errors.New("sidecar timeout") }
			}},
		{name: "serve fails before the signal", wantExit: ExitFailure,
			setup: func(traffic, _ *fakeServer, _ *Plan) { traffic.fail <- serveFailure }},
		{name: "traffic serve fails during the pre-stop delay", signal: true, wantExit: ExitFailure, wantQuit: true,
			setup: func(_, _ *fakeServer, p *Plan) { p.PrestopDelay = time.Second },
			during: func(t *testing.T, traffic, _ *fakeServer, c *Controller) {
				waitPhase(t, c, Draining)
				traffic.fail <- serveFailure
			}},
		{name: "admin serve fails during the drain", signal: true, wantExit: ExitFailure, wantQuit: true,
			setup: func(traffic, _ *fakeServer, _ *Plan) { traffic.hold = time.Second },
			during: func(t *testing.T, _, admin *fakeServer, c *Controller) {
				waitPhase(t, c, ShuttingDown)
				admin.fail <- serveFailure
			}},
		{name: "normal drain", signal: true, wantExit: ExitOK, wantQuit: true},
		{name: "deadline cuts requests", signal: true, wantExit: ExitRequestsCut, wantQuit: true,
			setup: func(traffic, _ *fakeServer, p *Plan) {
				traffic.hold, traffic.cut, p.ShutdownTimeout = time.Hour, 1, 100*time.Millisecond
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			traffic, admin := newFake("traffic", rec), newFake("admin", rec)
			plan := Plan{
				Traffic: []Traffic{{"http", traffic}}, Admin: admin,
				Flush:           func(context.Context) error { rec.add("flush"); return nil },
				Quit:            func(context.Context) error { rec.add("quit"); return nil },
				ShutdownTimeout: 5 * time.Second, FlushTimeout: time.Second, QuitTimeout: time.Second, AdminStopTimeout: time.Second,
			}
			if tt.setup != nil {
				tt.setup(traffic, admin, &plan)
			}
			c := New(quietLogger(), nil)
			stop, signal := context.WithCancelCause(context.Background())
			defer signal(nil)
			done := make(chan error, 1)
			go func() { done <- c.Run(stop, plan) }()
			if tt.signal {
				waitPhase(t, c, Ready)
				signal(errors.New("test signal"))
			}
			if tt.during != nil {
				tt.during(t, traffic, admin, c)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("Run did not return; steps %v", rec.get())
			}
			if got, want := ExitCode(err), tt.wantExit; got != want {
				t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
			}
			steps := rec.get()
			for _, step := range []string{"flush", "admin.shutdown"} {
				if !slices.Contains(steps, step) {
					t.Errorf("steps %v lack %q", steps, step)
				}
			}
			if got := slices.Contains(steps, "quit"); got != tt.wantQuit {
				t.Errorf("sidecar quit called = %v, want %v (steps %v)", got, tt.wantQuit, steps)
			}
			if i, j := slices.Index(steps, "flush"), slices.Index(steps, "admin.shutdown"); i > j {
				t.Errorf("admin stopped before the flush: %v", steps)
			}
			if got, want := c.Phase(), Stopped; got != want {
				t.Errorf("phase after Run = %s, want %s", got, want)
			}
		})
	}
}

// TestRunServesTrafficOnlyWhenReady checks that the admin server serves from
// the start (probes answer "not ready") while the traffic server's Serve is
// called only after WaitReady succeeds.
func TestRunServesTrafficOnlyWhenReady(t *testing.T) {
	rec := &recorder{}
	traffic, admin := newFake("traffic", rec), newFake("admin", rec)
	release := make(chan struct{})
	c := New(quietLogger(), nil)
	stop, signal := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, ShutdownTimeout: time.Second, FlushTimeout: time.Second,
			AdminStopTimeout: time.Second,
			WaitReady:        func(context.Context) error { <-release; return nil }})
	}()
	select {
	case <-admin.serving:
	case <-time.After(10 * time.Second):
		t.Fatal("admin server not serving during WaitReady")
	}
	select {
	case <-traffic.serving:
		t.Fatal("traffic server serving before WaitReady returned")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	waitPhase(t, c, Ready)
	select {
	case <-traffic.serving:
	case <-time.After(10 * time.Second):
		t.Fatal("traffic server not serving once ready")
	}
	signal(errors.New("test"))
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
