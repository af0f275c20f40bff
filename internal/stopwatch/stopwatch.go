// Package stopwatch times requests with one monotonic clock read at each
// end. time.Now reads the wall clock and the monotonic clock (two vDSO
// calls on linux/amd64; BenchmarkClock, run by make bench, prints both
// costs); a duration needs only the monotonic one, and time.Since of a time
// that carries a monotonic reading makes exactly that one read.
package stopwatch

import "time"

// Epoch is a fixed instant that readings are offsets from. Create it with
// New: the zero Epoch has no monotonic reading, and Now would then read the
// wall clock as well (correct, but no cheaper than time.Now).
type Epoch struct{ t time.Time }

// New returns an Epoch at the current instant.
func New() Epoch { return Epoch{t: time.Now()} }

// Now is the monotonic time elapsed since the epoch. The difference of two
// readings is the time between them, unaffected by changes to the wall
// clock.
func (e Epoch) Now() time.Duration { return time.Since(e.t) }
