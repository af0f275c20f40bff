package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder collects the steps of a run in order.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.steps)
}

// fakeServer is a Server whose Serve blocks until Shutdown or Close.
type fakeServer struct {
	name     string
	rec      *recorder
	stopped  chan struct{}
	once     sync.Once
	arrivals atomic.Uint64
	cut      int           // what Shutdown reports
	closeErr error         // returned by Shutdown, with no cut, if set
	hold     time.Duration // how long Shutdown takes unless ctx ends first
	serveErr error         // returned by Serve at once if set
	fail     chan error    // an error sent here makes Serve return it
	serving  chan struct{} // closed when Serve is called
}

func newFake(name string, rec *recorder) *fakeServer {
	return &fakeServer{name: name, rec: rec, stopped: make(chan struct{}), fail: make(chan error, 1), serving: make(chan struct{})}
}

func (f *fakeServer) Serve() error {
	close(f.serving)
	if f.serveErr != nil {
		return f.serveErr
	}
	select {
	case <-f.stopped:
		return nil
	case err := <-f.fail:
		return err
	}
}
func (f *fakeServer) StartDraining() { f.rec.add(f.name + ".drain") }
func (f *fakeServer) Shutdown(ctx context.Context, margin time.Duration) (int, error) {
	f.rec.add(f.name + ".shutdown")
	defer f.once.Do(func() { close(f.stopped) })
	select {
	case <-time.After(f.hold):
		return 0, f.closeErr
	case <-ctx.Done():
		return f.cut, ctx.Err()
	}
}
func (f *fakeServer) Close() error {
	f.rec.add(f.name + ".close")
	f.once.Do(func() { close(f.stopped) })
	return nil
}
func (f *fakeServer) Arrivals() uint64 { return f.arrivals.Load() }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestRunOrder(t *testing.T) {
	rec := &recorder{}
	traffic, admin := newFake("traffic", rec), newFake("admin", rec)
	var phases []string
	c := New(quietLogger(), func(prev, next string, _ time.Duration) { phases = append(phases, next) })
	stop, signal := context.WithCancelCause(context.Background())
	plan := Plan{
		Traffic: []Traffic{{"http", traffic}}, Admin: admin,
		WaitReady: func(context.Context) error { rec.add("wait-ready"); return nil },
		Flush:     func(context.Context) error { rec.add("flush"); return nil },
		Quit:      func(context.Context) error { rec.add("quit"); return nil },
		Drained:   func(d time.Duration, cut int) { rec.add(fmt.Sprintf("drained cut=%d", cut)) },

		PrestopDelay: 50 * time.Millisecond, ShutdownTimeout: time.Second, FlushTimeout: time.Second, QuitTimeout: time.Second,
		AdminStopTimeout: time.Second,
	}
	done := make(chan error)
	go func() { done <- c.Run(stop, plan) }()
	waitPhase(t, c, Ready)
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready() in phase ready = %v", err)
	}
	signal(errors.New("test signal"))
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	want := []string{"wait-ready", "traffic.drain", "traffic.shutdown", "drained cut=0", "flush", "quit", "admin.shutdown"}
	if got := rec.get(); !slices.Equal(got, want) {
		t.Errorf("steps = %v\nwant    %v", got, want)
	}
	wantPhases := []string{"starting", "ready", "draining", "shutting_down", "flushing", "stopped"}
	if !slices.Equal(phases, wantPhases) {
		t.Errorf("phases = %v, want %v", phases, wantPhases)
	}
	if c.Ready() == nil {
		t.Errorf("Ready() after stop = nil, want an error")
	}
}

func TestRunPrestopDelay(t *testing.T) {
	tests := []struct {
		name      string
		delay     time.Duration
		quiet     time.Duration
		traffic   bool // keep requests arriving during the delay
		wantAtMin time.Duration
		wantAtMax time.Duration
	}{
		{"no delay", 0, 0, false, 0, 500 * time.Millisecond},
		{"full delay", 300 * time.Millisecond, 0, false, 300 * time.Millisecond, 2 * time.Second},
		{"quiet period ends it early", 5 * time.Second, 100 * time.Millisecond, false, 100 * time.Millisecond, 2 * time.Second},
		{"traffic holds it to the end", 400 * time.Millisecond, 100 * time.Millisecond, true, 400 * time.Millisecond, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			traffic, admin := newFake("traffic", rec), newFake("admin", rec)
			c := New(quietLogger(), nil)
			stop, signal := context.WithCancelCause(context.Background())
			done := make(chan error)
			go func() {
				done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, PrestopDelay: tt.delay, QuietPeriod: tt.quiet,
					ShutdownTimeout: time.Second, FlushTimeout: time.Second})
			}()
			waitPhase(t, c, Ready)
			trafficDone := make(chan struct{})
			go func() {
				defer close(trafficDone)
				for tt.traffic && c.Phase() != ShuttingDown && c.Phase() != Stopped {
					traffic.arrivals.Add(1)
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
			<-trafficDone
			if took < tt.wantAtMin || took > tt.wantAtMax {
				t.Errorf("shutdown began %s after the signal, want between %s and %s", took, tt.wantAtMin, tt.wantAtMax)
			}
		})
	}
}

func TestRunDeadlineCutsRequests(t *testing.T) {
	rec := &recorder{}
	traffic, admin := newFake("traffic", rec), newFake("admin", rec)
	traffic.hold, traffic.cut = time.Hour, 2
	c := New(quietLogger(), nil)
	stop, signal := context.WithCancelCause(context.Background())
	var gotCut int
	done := make(chan error)
	go func() {
		done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, ShutdownTimeout: 100 * time.Millisecond, FlushTimeout: time.Second,
			Drained: func(_ time.Duration, cut int) { gotCut = cut }})
	}()
	waitPhase(t, c, Ready)
	signal(errors.New("test"))
	err := <-done
	if !errors.Is(err, ErrRequestsCut) {
		t.Fatalf("Run = %v, want ErrRequestsCut", err)
	}
	if got, want := ExitCode(err), ExitRequestsCut; got != want {
		t.Errorf("ExitCode = %d, want %d", got, want)
	}
	if gotCut != 2 {
		t.Errorf("Drained got cut = %d, want 2", gotCut)
	}
}

func TestRunStartupFailures(t *testing.T) {
	t.Run("sidecar never ready", func(t *testing.T) {
		rec := &recorder{}
		traffic, admin := newFake("traffic", rec), newFake("admin", rec)
		c := New(quietLogger(), nil)
		err := c.Run(context.Background(), Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin,
			WaitReady: func(context.Context) error { return errors.New("sidecar timeout") }})
		if err == nil || ExitCode(err) != ExitFailure {
			t.Fatalf("Run = %v, want a start-up failure (exit 1)", err)
		}
		if slices.Contains(rec.get(), "traffic.drain") {
			t.Errorf("drained a server that never became ready")
		}
	})
	t.Run("server fails while serving", func(t *testing.T) {
		rec := &recorder{}
		traffic, admin := newFake("traffic", rec), newFake("admin", rec)
		traffic.serveErr = errors.New("accept: too many open files")
		c := New(quietLogger(), nil)
		err := c.Run(context.Background(), Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin})
		if err == nil || ExitCode(err) != ExitFailure {
			t.Fatalf("Run = %v, want a serve failure (exit 1)", err)
		}
	})
	t.Run("signal during start-up skips the delay", func(t *testing.T) {
		rec := &recorder{}
		traffic, admin := newFake("traffic", rec), newFake("admin", rec)
		c := New(quietLogger(), nil)
		stop, signal := context.WithCancelCause(context.Background())
		ran := make(chan error, 1)
		go func() {
			ran <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, PrestopDelay: time.Hour, ShutdownTimeout: time.Second, FlushTimeout: time.Second,
				WaitReady: func(ctx context.Context) error { signal(errors.New("test")); <-ctx.Done(); return ctx.Err() }})
		}()
		// The delay is an hour: returning within seconds means it was skipped.
		select {
		case err := <-ran:
			if err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Run still running 10s after a signal during start-up (phase %s): it is waiting out the 1h pre-stop delay although never ready", c.Phase())
		}
	})
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{fmt.Errorf("wrapped: %w", ErrRequestsCut), ExitRequestsCut},
		{errors.Join(errors.New("x"), ErrRequestsCut), ExitRequestsCut},
		{errors.New("bind"), ExitFailure},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func waitPhase(t *testing.T, c *Controller, p Phase) {
	t.Helper()
	order := []Phase{Starting, Ready, Draining, ShuttingDown, Flushing, Stopped}
	want := slices.Index(order, p)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if slices.Index(order, c.Phase()) >= want {
			return
		}
	}
	t.Fatalf("phase %s not reached; at %s", p, c.Phase())
}
