package stopwatch

import (
	"strings"
	"testing"
	"time"
)

func TestReadingsMeasureElapsedTime(t *testing.T) {
	e := New()
	wall := time.Now()
	r0 := e.Now()
	time.Sleep(20 * time.Millisecond)
	r1 := e.Now()
	elapsed := time.Since(wall)
	if d := r1 - r0; d < 20*time.Millisecond || d > elapsed {
		t.Errorf("readings 20 ms apart differ by %v; want between 20ms and %v", d, elapsed)
	}
	if r0 < 0 || r1 < r0 {
		t.Errorf("readings %v then %v: want non-negative and non-decreasing", r0, r1)
	}
}

// TestEpochCarriesMonotonicReading checks what makes a reading one clock
// read: the epoch's monotonic reading (without it, time.Since falls back to
// time.Now, which reads both clocks). A time with one prints "m=+".
func TestEpochCarriesMonotonicReading(t *testing.T) {
	if s := New().t.String(); !strings.Contains(s, " m=+") {
		t.Fatalf("epoch %q has no monotonic reading", s)
	}
}

// The reading against time.Now, which reads both clocks (make bench prints
// both).
func BenchmarkClock(b *testing.B) {
	e := New()
	var d time.Duration
	var t time.Time
	b.Run("Epoch.Now", func(b *testing.B) {
		for b.Loop() {
			d += e.Now()
		}
	})
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			t = time.Now()
		}
	})
	_, _ = d, t
}
