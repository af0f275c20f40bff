package lifecycle

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// TestRunTwoTrafficServers checks that every phase reaches both traffic
// servers, that they shut down concurrently under the one deadline, that
// their cuts are summed, and that either one failing to serve is exit 1.
func TestRunTwoTrafficServers(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(a, b *fakeServer, p *Plan)
		during   func(a, b *fakeServer) // once both are draining
		wantExit int
		wantCut  int
	}{
		{name: "both drain", wantExit: ExitOK},
		{name: "one cuts", wantExit: ExitRequestsCut, wantCut: 3,
			setup: func(a, _ *fakeServer, p *Plan) { a.hold, a.cut, p.ShutdownTimeout = time.Hour, 3, 200*time.Millisecond }},
		{name: "both cut: summed", wantExit: ExitRequestsCut, wantCut: 5,
			setup: func(a, b *fakeServer, p *Plan) {
				a.hold, a.cut, b.hold, b.cut, p.ShutdownTimeout = time.Hour, 2, time.Hour, 3, 200*time.Millisecond
			}},
		{name: "one fails to serve", wantExit: ExitFailure,
			setup:  func(_, _ *fakeServer, p *Plan) { p.PrestopDelay = time.Hour },
			during: func(_, b *fakeServer) { b.fail <- errors.New("accept: broken") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			a, b, admin := newFake("http", rec), newFake("grpc", rec), newFake("admin", rec)
			gotCut := -1
			var grpcShutdownAt time.Time
			plan := Plan{
				Traffic: []Traffic{{"http", a}, {"grpc", timed{b, &grpcShutdownAt}}}, Admin: admin,
				ShutdownTimeout: 5 * time.Second, FlushTimeout: time.Second, AdminStopTimeout: time.Second,
				Drained: func(_ time.Duration, cut int) { gotCut = cut },
			}
			if tt.setup != nil {
				tt.setup(a, b, &plan)
			}
			c := New(quietLogger(), nil)
			stop, signal := context.WithCancelCause(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(stop, plan) }()
			waitPhase(t, c, Ready)
			for _, f := range []*fakeServer{a, b} {
				select {
				case <-f.serving:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s not serving once ready", f.name)
				}
			}
			start := time.Now()
			signal(errors.New("test"))
			waitPhase(t, c, Draining)
			if tt.during != nil {
				tt.during(a, b)
			}
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				t.Fatalf("Run did not return; steps %v", rec.get())
			}
			took := time.Since(start)
			if got, want := ExitCode(err), tt.wantExit; got != want {
				t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
			}
			steps := rec.get()
			if tt.during == nil {
				for _, s := range []string{"http.drain", "grpc.drain", "http.shutdown", "grpc.shutdown"} {
					if !slices.Contains(steps, s) {
						t.Errorf("steps %v lack %q", steps, s)
					}
				}
				if gotCut != tt.wantCut {
					t.Errorf("Drained cut = %d, want %d", gotCut, tt.wantCut)
				}
				// Concurrent: the second Shutdown starts while the first
				// is still held by its requests, not after the deadline.
				if tt.wantCut > 0 {
					if at := grpcShutdownAt.Sub(start); at >= plan.ShutdownTimeout {
						t.Errorf("grpc Shutdown began %s after the signal, want before the %s deadline: shut down one after the other?", at, plan.ShutdownTimeout)
					}
				}
			} else {
				// The failure ends the pre-stop delay (an hour) at once.
				if took > 10*time.Second {
					t.Errorf("Run took %s after the failure: the pre-stop delay was not ended", took)
				}
				if !errors.Is(err, ErrServerStopped) {
					t.Errorf("Run = %v, want ErrServerStopped", err)
				}
			}
		})
	}
}

// The quiet period counts arrivals on every traffic server: requests on the
// second one alone keep the pre-stop delay going.
func TestRunQuietPeriodSumsArrivals(t *testing.T) {
	rec := &recorder{}
	a, b, admin := newFake("http", rec), newFake("grpc", rec), newFake("admin", rec)
	c := New(quietLogger(), nil)
	stop, signal := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", a}, {"grpc", b}}, Admin: admin,
			PrestopDelay: 400 * time.Millisecond, QuietPeriod: 100 * time.Millisecond,
			ShutdownTimeout: time.Second, FlushTimeout: time.Second})
	}()
	waitPhase(t, c, Ready)
	arrivalsDone := make(chan struct{})
	go func() {
		defer close(arrivalsDone)
		for c.Phase() != ShuttingDown && c.Phase() != Stopped {
			b.arrivals.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start := time.Now()
	signal(errors.New("test"))
	waitPhase(t, c, ShuttingDown)
	took := time.Since(start)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	<-arrivalsDone
	if took < 400*time.Millisecond {
		t.Errorf("pre-stop delay ended after %s although the second server kept receiving requests", took)
	}
}

// timed records when Shutdown was called (read once Run has returned).
type timed struct {
	*fakeServer
	at *time.Time
}

func (t timed) Shutdown(ctx context.Context, margin time.Duration) (int, error) {
	*t.at = time.Now()
	return t.fakeServer.Shutdown(ctx, margin)
}
