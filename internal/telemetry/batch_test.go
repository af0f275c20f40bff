package telemetry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestBatchOptionsFromEnv(t *testing.T) {
	defaults := batchOptions{delay: 5 * time.Second, exportTimeout: 30 * time.Second, maxQueue: 2048, maxBatch: 512}
	tests := []struct {
		name    string
		env     map[string]string
		want    batchOptions
		wantErr string
	}{
		{"unset: the specification's defaults", nil, defaults, ""},
		{"all set", map[string]string{
			"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BSP_EXPORT_TIMEOUT": "0",
			"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100",
		}, batchOptions{delay: 200 * time.Millisecond, exportTimeout: 0, maxQueue: 100, maxBatch: 100}, ""},
		{"not an integer", map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "5s"}, batchOptions{}, `OTEL_BSP_SCHEDULE_DELAY="5s"`},
		{"zero delay", map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "0"}, batchOptions{}, "OTEL_BSP_SCHEDULE_DELAY"},
		{"negative timeout", map[string]string{"OTEL_BSP_EXPORT_TIMEOUT": "-1"}, batchOptions{}, "OTEL_BSP_EXPORT_TIMEOUT"},
		{"zero queue", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, batchOptions{}, "OTEL_BSP_MAX_QUEUE_SIZE"},
		{"zero batch", map[string]string{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, batchOptions{}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"},
		{"batch larger than the queue", map[string]string{"OTEL_BSP_MAX_QUEUE_SIZE": "10"}, batchOptions{}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512 is larger than OTEL_BSP_MAX_QUEUE_SIZE=10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := batchOptionsFromEnv(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// fakeExporter records the span names of every export. While gate is
// non-nil each export waits for a value on it (or its context).
type fakeExporter struct {
	mu       sync.Mutex
	batches  [][]string
	err      error
	shutdown bool
	gate     chan struct{}
	deaf     bool     // waiting at gate, ignore the export's context
	exported chan int // receives each batch's size, if non-nil

	inExport, concurrent atomic.Int32
}

func (e *fakeExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.inExport.Add(1) > 1 {
		e.concurrent.Add(1)
	}
	defer e.inExport.Add(-1)
	if e.gate != nil {
		done := ctx.Done()
		if e.deaf {
			done = nil
		}
		select {
		case <-e.gate:
		case <-done:
			return ctx.Err()
		}
	}
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name()
	}
	e.mu.Lock()
	e.batches = append(e.batches, names)
	err := e.err
	e.mu.Unlock()
	if e.exported != nil {
		e.exported <- len(spans)
	}
	return err
}

func (e *fakeExporter) Shutdown(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.shutdown = true
	return nil
}

func (e *fakeExporter) names() (batches [][]string, all []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		batches = append(batches, slices.Clone(b))
		all = append(all, b...)
	}
	return batches, all
}

// errorLog collects what a batcher reports.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) handle(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs = append(l.errs, err)
}

func (l *errorLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.errs)
}

// recordOnly records spans without sampling them: they reach OnEnd but
// must not be exported.
type recordOnly struct{}

func (recordOnly) ShouldSample(sdktrace.SamplingParameters) sdktrace.SamplingResult {
	return sdktrace.SamplingResult{Decision: sdktrace.RecordOnly}
}
func (recordOnly) Description() string { return "record only" }

// startBatcher returns a batcher on e and a function that ends a span
// named name through a real tracer provider (sampled unless told).
func startBatcher(t *testing.T, e *fakeExporter, o batchOptions, log *errorLog) (*batcher, func(name string, sampled bool)) {
	t.Helper()
	b := newBatcher(e, o, log.handle)
	sampled := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithSampler(sdktrace.AlwaysSample())).Tracer("test")
	unsampled := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b), sdktrace.WithSampler(recordOnly{})).Tracer("test")
	t.Cleanup(func() {
		if e.gate != nil {
			close(e.gate)
		}
		_ = b.Shutdown(context.Background())
	})
	return b, func(name string, s bool) {
		tr := sampled
		if !s {
			tr = unsampled
		}
		_, span := tr.Start(context.Background(), name)
		span.End()
	}
}

// release lets one export waiting at gate go on.
func release(t *testing.T, gate chan<- struct{}) {
	t.Helper()
	select {
	case gate <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("no export waiting at the gate within 10s")
	}
}

// waitExports waits for n exports to be reported on e.exported.
func waitExports(t *testing.T, e *fakeExporter, n int) {
	t.Helper()
	for range n {
		select {
		case <-e.exported:
		case <-time.After(10 * time.Second):
			batches, _ := e.names()
			t.Fatalf("no export within 10s; exports so far %q", batches)
		}
	}
}

func spanNames(prefix string, n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("%s%d", prefix, i))
	}
	return s
}

func TestBatcherExportsFullBatchesWithoutWaitingForTheDelay(t *testing.T) {
	e := &fakeExporter{exported: make(chan int, 10)}
	_, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 16, maxBatch: 4}, &errorLog{})
	for _, n := range spanNames("s", 9) {
		end(n, true)
	}
	waitExports(t, e, 2)
	batches, _ := e.names()
	if want := [][]string{spanNames("s", 4), {"s4", "s5", "s6", "s7"}}; !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("exports %q, want two full batches in order %q (s8 waits for the delay)", batches, want)
	}
}

func TestBatcherExportsAfterTheDelay(t *testing.T) {
	e := &fakeExporter{exported: make(chan int, 10)}
	_, end := startBatcher(t, e, batchOptions{delay: 20 * time.Millisecond, maxQueue: 16, maxBatch: 4}, &errorLog{})
	end("lonely", true)
	end("not sampled", false)
	waitExports(t, e, 1)
	if batches, _ := e.names(); !slices.EqualFunc(batches, [][]string{{"lonely"}}, slices.Equal) {
		t.Fatalf("exports %q, want the sampled span alone", batches)
	}
}

func TestBatcherForceFlush(t *testing.T) {
	exportErr := errors.New("collector said no")
	e := &fakeExporter{err: exportErr}
	log := &errorLog{}
	b, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 16, maxBatch: 4}, log)
	for _, n := range spanNames("s", 6) {
		end(n, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.ForceFlush(ctx)
	if !errors.Is(err, exportErr) {
		t.Fatalf("ForceFlush: %v, want the export's error", err)
	}
	if _, all := e.names(); !slices.Equal(all, spanNames("s", 6)) {
		t.Fatalf("exported %q after ForceFlush, want every span that ended before it", all)
	}
	if !strings.Contains(log.String(), "collector said no") {
		t.Errorf("reported %s, want the export error", log)
	}
	ended, cancelEnded := context.WithCancel(context.Background())
	cancelEnded()
	if err := b.ForceFlush(ended); !errors.Is(err, context.Canceled) {
		t.Errorf("ForceFlush with an ended context: %v, want context.Canceled", err)
	}
}

// A flush under a steady stream of spans returns once what ended before
// it is exported; it does not wait for the queue to empty.
func TestBatcherForceFlushUnderLoad(t *testing.T) {
	e := &fakeExporter{}
	b, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 1 << 20, maxBatch: 64}, &errorLog{})
	end("before", true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				end("load", true)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := b.ForceFlush(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("ForceFlush under load: %v", err)
	}
	if _, all := e.names(); !slices.Contains(all, "before") {
		t.Fatalf("the span that ended before ForceFlush was not exported")
	}
}

func TestBatcherDropsWhenTheQueueIsFull(t *testing.T) {
	e := &fakeExporter{gate: make(chan struct{}), exported: make(chan int, 10)}
	log := &errorLog{}
	_, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 4, maxBatch: 4}, log)
	for _, n := range spanNames("a", 4) {
		end(n, true) // a full batch: taken by the export, which waits at the gate
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.inExport.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the full batch was not handed to the exporter")
		}
		time.Sleep(time.Millisecond)
	}
	for _, n := range spanNames("b", 6) {
		end(n, true) // four fill the queue again, two are dropped
	}
	gate := e.gate
	release(t, gate)
	waitExports(t, e, 1)
	release(t, gate) // the queue had a full batch again: exported at once
	waitExports(t, e, 1)
	batches, _ := e.names()
	if want := [][]string{spanNames("a", 4), spanNames("b", 4)}; !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("exports %q, want %q", batches, want)
	}
	if !strings.Contains(log.String(), "dropped 2 spans") {
		t.Errorf("reported %s, want the two dropped spans", log)
	}
}

// A full batch that queued up while an export ran, without a signal of its
// own (the queue never reached exactly one batch), is exported at once, not
// after the delay.
func TestBatcherExportsABatchThatQueuedDuringAnExport(t *testing.T) {
	e := &fakeExporter{gate: make(chan struct{}), exported: make(chan int, 10)}
	_, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 64, maxBatch: 4}, &errorLog{})
	waitInExport := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for e.inExport.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no export started")
			}
			time.Sleep(time.Millisecond)
		}
	}
	endAll := func(prefix string) {
		for _, n := range spanNames(prefix, 4) {
			end(n, true)
		}
	}
	gate := e.gate
	endAll("a") // a full batch: its export waits at the gate
	waitInExport()
	endAll("b") // signals: the next pass takes b and c
	endAll("c")
	release(t, gate)
	waitExports(t, e, 1) // a
	waitInExport()       // b, in the pass that took the signal
	endAll("d")          // queues behind c: the queue never holds exactly 4
	for range 3 {
		release(t, gate)
		waitExports(t, e, 1) // b, c, d
	}
	batches, _ := e.names()
	if want := [][]string{spanNames("a", 4), spanNames("b", 4), spanNames("c", 4), spanNames("d", 4)}; !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("exports %q, want %q", batches, want)
	}
}

func TestBatcherShutdown(t *testing.T) {
	e := &fakeExporter{}
	b, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 16, maxBatch: 4}, &errorLog{})
	for _, n := range spanNames("s", 6) {
		end(n, true)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_, all := e.names()
	if !slices.Equal(all, spanNames("s", 6)) {
		t.Fatalf("exported %q by Shutdown, want every queued span", all)
	}
	if !e.shutdown {
		t.Error("the exporter was not shut down")
	}
	end("late", true)
	if err := b.ForceFlush(context.Background()); err != nil {
		t.Errorf("ForceFlush after Shutdown: %v, want nil", err)
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v, want nil", err)
	}
	if _, after := e.names(); len(after) != len(all) {
		t.Errorf("exported %q after Shutdown", after[len(all):])
	}
}

func TestBatcherShutdownBoundedByItsContext(t *testing.T) {
	t.Run("returns when its context ends", func(t *testing.T) {
		e := &fakeExporter{gate: make(chan struct{}), deaf: true} // the export hangs whatever its context
		b, end := startBatcher(t, e, batchOptions{delay: time.Hour, maxQueue: 16, maxBatch: 4}, &errorLog{})
		end("stuck", true)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := b.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown with a hanging exporter: %v, want its context's deadline", err)
		}
	})
	t.Run("its context cancels the last exports", func(t *testing.T) {
		e := &fakeExporter{gate: make(chan struct{})} // the export waits for its context
		log := &errorLog{}
		b, end := startBatcher(t, e, batchOptions{delay: time.Hour, exportTimeout: time.Hour, maxQueue: 16, maxBatch: 4}, log)
		end("stuck", true)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_ = b.Shutdown(ctx)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the export goroutine did not return once Shutdown's context ended")
		}
		if !strings.Contains(log.String(), "context deadline exceeded") {
			t.Errorf("reported %s, want the cancelled export", log)
		}
	})
}

// Many goroutines ending spans at once: every sampled span is exported
// exactly once, no batch is larger than the limit, and the exporter is
// never called concurrently (run with -race).
func TestBatcherConcurrentEnds(t *testing.T) {
	e := &fakeExporter{}
	b, end := startBatcher(t, e, batchOptions{delay: time.Millisecond, maxQueue: 1 << 16, maxBatch: 7}, &errorLog{})
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				end(fmt.Sprintf("g%d-%d", g, i), true)
				if i%5 == 0 {
					end("unsampled", false)
				}
			}
		})
	}
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.ForceFlush(ctx); err != nil {
			t.Errorf("ForceFlush among the spans: %v", err)
		}
	})
	wg.Wait()
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	batches, all := e.names()
	seen := map[string]bool{}
	for _, n := range all {
		if seen[n] || n == "unsampled" {
			t.Fatalf("span %q exported twice or unsampled", n)
		}
		seen[n] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d spans exported, want %d", len(seen), goroutines*each)
	}
	for _, batch := range batches {
		if len(batch) > 7 {
			t.Fatalf("a batch of %d spans, limit 7", len(batch))
		}
	}
	if n := e.concurrent.Load(); n != 0 {
		t.Errorf("ExportSpans called concurrently %d times", n)
	}
}
