package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// batchOptions are the OTEL_BSP_* settings of a batcher.
type batchOptions struct {
	delay         time.Duration // OTEL_BSP_SCHEDULE_DELAY: longest a span waits for export
	exportTimeout time.Duration // OTEL_BSP_EXPORT_TIMEOUT: 0 means none
	maxQueue      int           // OTEL_BSP_MAX_QUEUE_SIZE: spans held; more are dropped
	maxBatch      int           // OTEL_BSP_MAX_EXPORT_BATCH_SIZE: spans per export
}

// batchOptionsFromEnv reads the OTEL_BSP_* variables, in milliseconds and
// span counts as the specification has them, with its defaults (5000 ms,
// 30000 ms, 2048, 512). A value that is not an integer, a delay, queue or
// batch size below 1, a negative timeout, or a batch larger than the queue
// is an error naming the variable (the SDK would log it and use its
// default).
func batchOptionsFromEnv(getenv func(string) string) (batchOptions, error) {
	vars := []struct {
		name string
		def  int
		min  int
	}{
		{"OTEL_BSP_SCHEDULE_DELAY", sdktrace.DefaultScheduleDelay, 1},
		{"OTEL_BSP_EXPORT_TIMEOUT", sdktrace.DefaultExportTimeout, 0},
		{"OTEL_BSP_MAX_QUEUE_SIZE", sdktrace.DefaultMaxQueueSize, 1},
		{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", sdktrace.DefaultMaxExportBatchSize, 1},
	}
	vals := make([]int, len(vars))
	for i, v := range vars {
		vals[i] = v.def
		s := getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < v.min {
			return batchOptions{}, fmt.Errorf("%s=%q: want an integer of at least %d", v.name, s, v.min)
		}
		vals[i] = n
	}
	o := batchOptions{
		delay:         time.Duration(vals[0]) * time.Millisecond,
		exportTimeout: time.Duration(vals[1]) * time.Millisecond,
		maxQueue:      vals[2],
		maxBatch:      vals[3],
	}
	if o.maxBatch > o.maxQueue {
		return batchOptions{}, fmt.Errorf("OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%d is larger than OTEL_BSP_MAX_QUEUE_SIZE=%d", o.maxBatch, o.maxQueue)
	}
	return o, nil
}

// batcher is the span processor: it exports sampled spans in batches from
// one goroutine, as the SDK's BatchSpanProcessor does, with the same
// settings and the same behaviour at the edges (a full queue drops the
// span; ForceFlush exports what ended before it; Shutdown exports the rest
// and shuts the exporter down). The difference is the hand-off: the SDK's
// processor sends every span on a channel to its goroutine, which wakes
// for each one (a goroutine switch per request, BENCHMARKS.md); here a span
// is appended to a slice under a mutex and the goroutine is woken only when
// a batch is full, a flush is asked for, or the delay has passed.
//
// ExportSpans is only ever called from that goroutine, so never
// concurrently, as the SpanExporter contract requires.
type batcher struct {
	exporter sdktrace.SpanExporter
	opts     batchOptions
	handle   func(error) // export errors and drop counts: otel.Handle in Setup

	mu       sync.Mutex
	queue    []sdktrace.ReadOnlySpan
	dropped  int
	stopped  bool
	stopCtx  context.Context //nolint:containedctx // Shutdown's context, handed to the goroutine's last exports
	flushers []chan error    // ForceFlush calls waiting for the next export pass

	wake     chan struct{} // capacity 1: a batch is full or a flush is waiting
	stop     chan struct{} // closed by Shutdown
	done     chan struct{} // closed when the goroutine has exported everything and returned
	stopOnce sync.Once
}

var _ sdktrace.SpanProcessor = (*batcher)(nil)

// newBatcher starts the export goroutine; Shutdown stops it. Failed
// exports and dropped spans are reported to handle.
func newBatcher(exporter sdktrace.SpanExporter, o batchOptions, handle func(error)) *batcher {
	b := &batcher{
		exporter: exporter,
		opts:     o,
		handle:   handle,
		queue:    make([]sdktrace.ReadOnlySpan, 0, o.maxBatch),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go b.run()
	return b
}

// OnStart does nothing: spans are handed over when they end.
func (*batcher) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span for export, or drops it when the queue holds
// OTEL_BSP_MAX_QUEUE_SIZE spans already (counted, and reported to handle
// after the next export) or Shutdown has begun. It never waits for an
// export.
func (b *batcher) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return
	}
	if len(b.queue) >= b.opts.maxQueue {
		b.dropped++
		b.mu.Unlock()
		return
	}
	b.queue = append(b.queue, s)
	full := len(b.queue) == b.opts.maxBatch
	b.mu.Unlock()
	if full {
		b.signal()
	}
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default: // already signalled: the goroutine will see the queue
	}
}

// ForceFlush exports every span that ended before it was called and
// returns the errors of the exports that did so, or ctx's error if ctx ends
// first. After Shutdown it does nothing.
func (b *batcher) ForceFlush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.flushers = append(b.flushers, ch)
	b.mu.Unlock()
	b.signal()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops taking spans, exports those queued, then shuts the
// exporter down. It returns when that is done or ctx ends, whichever is
// first (then with ctx's error; the last exports are cancelled with ctx).
// Only the first call does anything.
func (b *batcher) Shutdown(ctx context.Context) error {
	var err error
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.stopCtx = ctx
		b.mu.Unlock()
		close(b.stop)
		select {
		case <-b.done:
			err = b.exporter.Shutdown(ctx)
		case <-ctx.Done():
			err = ctx.Err()
		}
	})
	return err
}

// run exports when woken (a full batch, a flush), when the delay has
// passed since the last export, and once more after Shutdown.
func (b *batcher) run() {
	defer close(b.done)
	timer := time.NewTimer(b.opts.delay)
	defer timer.Stop()
	for {
		all, stopping := true, false
		select {
		case <-timer.C:
		case <-b.wake:
			all = false // a full batch, unless a flush is waiting
		case <-b.stop:
			stopping = true
		}
		ctx := context.Background()
		if stopping {
			b.mu.Lock()
			ctx = b.stopCtx
			b.mu.Unlock()
		}
		for again := true; again; {
			again = b.exportQueued(ctx, all)
		}
		if stopping {
			return // no span is queued after Shutdown began
		}
		timer.Reset(b.opts.delay)
	}
}

// exportQueued exports spans queued when it is called, in batches of
// OTEL_BSP_MAX_EXPORT_BATCH_SIZE: all of them if all is set or a ForceFlush
// is waiting (the last batch then may be smaller), else only full batches,
// the rest waiting for the delay or for more spans. It then answers the
// ForceFlush calls that were waiting when it was called, with the errors
// of those exports. Export errors also go to handle, as the SDK's
// processor reports them to the OpenTelemetry error handler. It reports
// whether another pass is due at once: a full batch queued up meanwhile
// (its signal may have been taken by this pass), or a flush is waiting.
func (b *batcher) exportQueued(ctx context.Context, all bool) (again bool) {
	b.mu.Lock()
	flushers := b.flushers
	b.flushers = nil
	todo := len(b.queue)
	if !all && len(flushers) == 0 {
		todo -= todo % b.opts.maxBatch
	}
	b.mu.Unlock()

	var errs []error
	for todo > 0 {
		b.mu.Lock()
		n := min(todo, b.opts.maxBatch)
		batch := make([]sdktrace.ReadOnlySpan, n)
		copy(batch, b.queue)
		rest := copy(b.queue, b.queue[n:])
		clear(b.queue[rest:]) // let the GC have the exported spans
		b.queue = b.queue[:rest]
		b.mu.Unlock()
		todo -= n
		if err := b.export(ctx, batch); err != nil {
			b.handle(err)
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	for _, ch := range flushers {
		ch <- err
	}

	b.mu.Lock()
	dropped := b.dropped
	b.dropped = 0
	again = len(b.queue) >= b.opts.maxBatch || len(b.flushers) > 0
	b.mu.Unlock()
	if dropped > 0 {
		b.handle(fmt.Errorf("dropped %d spans: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE=%d)", dropped, b.opts.maxQueue))
	}
	return again
}

func (b *batcher) export(ctx context.Context, batch []sdktrace.ReadOnlySpan) error {
	if b.opts.exportTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.opts.exportTimeout)
		defer cancel()
	}
	if err := b.exporter.ExportSpans(ctx, batch); err != nil {
		return fmt.Errorf("export %d spans: %w", len(batch), err)
	}
	return nil
}
