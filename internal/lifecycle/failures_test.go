package lifecycle

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A Shutdown error without a cut (closing the listener failed) is a
// failure, exit 1, not exit 3: no request was lost.
func TestRunShutdownErrorWithoutCutIsNotExit3(t *testing.T) {
	rec := &recorder{}
	traffic, admin := newFake("traffic", rec), newFake("admin", rec)
	traffic.closeErr = errors.New("close listener: broken")
	c := New(quietLogger(), nil)
	stop, signal := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, ShutdownTimeout: time.Second, FlushTimeout: time.Second})
	}()
	waitPhase(t, c, Ready)
	signal(errors.New("test"))
	err := <-done
	if errors.Is(err, ErrRequestsCut) {
		t.Errorf("Run = %v, want no ErrRequestsCut without a cut", err)
	}
	if got, want := ExitCode(err), ExitFailure; got != want {
		t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
	}
}

// A traffic server that stops on its own during the pre-stop delay ends the
// delay: its listener is gone, so waiting serves nobody.
func TestRunServeFailureEndsPrestopDelay(t *testing.T) {
	for _, quiet := range []time.Duration{0, time.Hour} {
		rec := &recorder{}
		traffic, admin := newFake("traffic", rec), newFake("admin", rec)
		c := New(quietLogger(), nil)
		stop, signal := context.WithCancelCause(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.Run(stop, Plan{Traffic: []Traffic{{"http", traffic}}, Admin: admin, PrestopDelay: time.Hour, QuietPeriod: quiet,
				ShutdownTimeout: time.Second, FlushTimeout: time.Second})
		}()
		waitPhase(t, c, Ready)
		signal(errors.New("test"))
		waitPhase(t, c, Draining)
		traffic.fail <- errors.New("accept: broken")
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerStopped) {
				t.Errorf("quiet period %s: Run = %v, want ErrServerStopped", quiet, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("quiet period %s: Run still waiting out the 1h pre-stop delay 10s after the traffic server failed", quiet)
		}
	}
}
