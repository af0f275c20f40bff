//go:build bench

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
)

// grpcCallers is the number of concurrent unary callers on the one client
// connection of the throughput runs.
const grpcCallers = 32

// grpcVariant is a server under test with the environment variable that
// puts its gRPC port where the bench can reach it.
type grpcVariant struct {
	variant
	addrVar string // BARE_GRPC_ADDR or APP_GRPC_ADDR
}

func (b *bench) grpcVariants() []grpcVariant {
	tracingOnly := b.variants[2]
	tracingOnly.name = "kubeskel tracing 100% (no request log)"
	tracingOnly.env = func(hp, ap int) []string {
		return slices.DeleteFunc(b.variants[2].env(hp, ap), func(s string) bool { return strings.HasPrefix(s, "APP_REQUEST_LOG=") })
	}
	// The same two baselines as for HTTP/1.1: grpc-go's zero settings, and
	// the grpc.Server options kubeskel sets at its defaults (keepalive
	// enforcement, connection age, stream workers), so that what the
	// settings change is reported apart from what the skeleton costs.
	return []grpcVariant{
		{b.variants[0], "BARE_GRPC_ADDR"},
		{withEnv(b.variants[0], "bare, kubeskel's grpc.Server settings (BARE_SETTINGS=1)", "BARE_SETTINGS=1"), "BARE_GRPC_ADDR"},
		{b.variants[1], "APP_GRPC_ADDR"},
		{tracingOnly, "APP_GRPC_ADDR"},
	}
}

// Indexes into grpcVariants.
const (
	grpcBare = iota
	grpcBareSettings
	grpcOff
)

// grpcRun is one throughput run against one variant.
type grpcRun struct {
	cps        float64       // calls per second
	cpuPerCall time.Duration // server CPU per call
}

// grpc compares unary Echo.Say calls against a bare grpc-go server serving
// the same service (test/bench/bare with BARE_GRPC_ADDR): throughput with
// grpcCallers concurrent callers on one connection, alternating variants
// within each repetition, and user-space instructions per call under
// callgrind (sequential calls on one connection).
func (b *bench) grpc() error {
	if b.serverCPU != "" {
		// The client runs in this process: keep it off the server's CPU
		// for the section, as wrk and h2load are kept off it.
		n := runtime.NumCPU()
		if out, err := exec.Command("taskset", "-a", "-p", "-c", "0-"+strconv.Itoa(n-2), strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
			return fmt.Errorf("taskset the client: %w\n%s", err, out)
		}
		defer func() {
			_ = exec.Command("taskset", "-a", "-p", "-c", "0-"+strconv.Itoa(n-1), strconv.Itoa(os.Getpid())).Run() // best effort: later sections pin their own tools
		}()
	}
	variants := b.grpcVariants()
	results := make([][]grpcRun, len(variants))
	for rep := 0; rep < *reps; rep++ {
		for i, v := range variants {
			r, err := b.grpcThroughput(v)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			results[i] = append(results[i], r)
			fmt.Fprintf(os.Stderr, "  rep %d %s grpc: %.0f calls/s\n", rep+1, v.name, r.cps)
		}
	}
	fmt.Fprintf(b.out, "\n## gRPC unary throughput, Echo.Say (%d callers on one connection, grpc-go client, %v runs, %d repetitions alternating)\n\n", grpcCallers, *duration, *reps)
	fmt.Fprintf(b.out, "| variant | calls/s median (min–max) | × bare (median of per-repetition ratios) | server CPU µs/call median (min–max) | bare ÷ this (median of per-repetition ratios) |\n|---|---:|---:|---:|---:|\n")
	for i, v := range variants {
		cps := field(results[i], func(r grpcRun) float64 { return r.cps })
		cpu := field(results[i], func(r grpcRun) float64 { return float64(r.cpuPerCall) / 1e3 })
		var cpsRatio, cpuRatio []float64
		for rep := range results[i] {
			cpsRatio = append(cpsRatio, results[i][rep].cps/results[0][rep].cps)
			cpuRatio = append(cpuRatio, float64(results[0][rep].cpuPerCall)/float64(results[i][rep].cpuPerCall))
		}
		fmt.Fprintf(b.out, "| %s | %.0f (%.0f–%.0f) | %.2f (%.2f–%.2f) | %.1f (%.1f–%.1f) | %.2f (%.2f–%.2f) |\n", v.name,
			median(cps), slices.Min(cps), slices.Max(cps), median(cpsRatio), slices.Min(cpsRatio), slices.Max(cpsRatio),
			median(cpu), slices.Min(cpu), slices.Max(cpu), median(cpuRatio), slices.Min(cpuRatio), slices.Max(cpuRatio))
	}
	var offRatio, offSettingsRatio []float64
	for rep := range results[grpcOff] {
		offRatio = append(offRatio, results[grpcOff][rep].cps/results[grpcBare][rep].cps)
		offSettingsRatio = append(offSettingsRatio, results[grpcOff][rep].cps/results[grpcBareSettings][rep].cps)
	}
	fmt.Fprintf(b.out, "\n| target | measured | |\n|---|---:|---|\n")
	printFloor(b.out, "gRPC calls/s, tracing off ≥ 0.90× bare grpc-go (gRPC issue)", median(offRatio), 0.90)
	printFloor(b.out, "gRPC calls/s, tracing off ≥ 0.95× bare grpc-go (concurrency issue)", median(offRatio), 0.95)
	fmt.Fprintf(b.out, "| (not a target) gRPC calls/s, tracing off, × bare with kubeskel's grpc.Server settings | %.2f× | what the skeleton costs apart from its settings |\n", median(offSettingsRatio))

	per := make([][]float64, len(variants))
	cgReps := max(3, *reps/2)
	for rep := 0; rep < cgReps; rep++ {
		for i, v := range variants {
			port := b.freePort()
			// Pinned to one CPU, grpc-go's servers contend on runtime locks,
			// whose spinning reads the clock with RDTSCP, which valgrind 3.19
			// cannot run (SIGILL in runtime.cputicks): make Go use RDTSC.
			env := []string{valgrindGODEBUG, fmt.Sprintf("%s=127.0.0.1:%d", v.addrVar, port)}
			_, r, err := b.callgrindWith(v.variant, *cgRequests, env, grpcDriver(port))
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			per[i] = append(per[i], r)
			fmt.Fprintf(os.Stderr, "  rep %d %s: %.0f instr/call\n", rep+1, v.name, r)
		}
	}
	fmt.Fprintf(b.out, "\n## gRPC user-space instructions per unary call (callgrind, %s, %d sequential Echo.Say calls on one connection per run, %d runs)\n\n", valgrindGODEBUG, *cgRequests, cgReps)
	fmt.Fprintf(b.out, "| variant | instr/call median (min–max) | × bare |\n|---|---:|---:|\n")
	bare := median(per[0])
	for i, v := range variants {
		fmt.Fprintf(b.out, "| %s | %.0f (%.0f–%.0f) | %.2f |\n", v.name, median(per[i]), slices.Min(per[i]), slices.Max(per[i]), median(per[i])/bare)
	}
	return nil
}

// grpcThroughput starts v with its gRPC port, warms the connection up for a
// second and counts the calls grpcCallers callers complete in *duration.
func (b *bench) grpcThroughput(v grpcVariant) (grpcRun, error) {
	port := b.freePort()
	p, err := b.start(v.variant, []string{fmt.Sprintf("%s=127.0.0.1:%d", v.addrVar, port)})
	if err != nil {
		return grpcRun{}, err
	}
	defer p.stop(30 * time.Second)
	if _, err := p.waitOK(p.readyURL(v.variant), 10*time.Second); err != nil {
		return grpcRun{}, err
	}
	cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return grpcRun{}, err
	}
	defer cc.Close()
	echo := echov1.NewEchoClient(cc)
	if _, err := callFor(echo, time.Second); err != nil { // warm-up
		return grpcRun{}, err
	}
	cpu0 := p.cpuTime()
	calls, err := callFor(echo, *duration)
	if err != nil {
		return grpcRun{}, err
	}
	r := grpcRun{cps: float64(calls) / duration.Seconds()}
	if calls > 0 {
		r.cpuPerCall = time.Duration(float64(p.cpuTime()-cpu0) / float64(calls))
	}
	return r, nil
}

// callFor runs grpcCallers callers of Echo.Say for d and returns the calls
// completed; any failed call is an error.
func callFor(echo echov1.EchoClient, d time.Duration) (int64, error) {
	var calls atomic.Int64
	var mu sync.Mutex
	var failed error
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for range grpcCallers {
		wg.Go(func() {
			req := &echov1.SayRequest{Message: "hello"}
			for ctx.Err() == nil {
				if _, err := echo.Say(context.Background(), req); err != nil {
					mu.Lock()
					if failed == nil {
						failed = err
					}
					mu.Unlock()
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	if failed != nil {
		return 0, fmt.Errorf("Echo.Say: %w", failed)
	}
	return calls.Load(), nil
}

// grpcDriver returns a callgrind driver that sends count sequential
// Echo.Say calls on one connection to the gRPC port.
func grpcDriver(port int) func(*proc) (func(int) error, func(), error) {
	return func(*proc) (func(int) error, func(), error) {
		cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		echo := echov1.NewEchoClient(cc)
		req := &echov1.SayRequest{Message: "hello"}
		call := func(count int) error {
			for range count {
				if _, err := echo.Say(context.Background(), req); err != nil {
					return fmt.Errorf("Echo.Say: %w", err)
				}
			}
			return nil
		}
		return call, func() { _ = cc.Close() }, nil // the process is killed next
	}
}
