//go:build bench

package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// placement is where the server and wrk run during a throughput run.
type placement struct {
	name string
	// pinned: the server on the last CPU with GOMAXPROCS=1 (a one-CPU pod)
	// and wrk -t1 on the others. Unpinned: both on every CPU, the server
	// with Go's default GOMAXPROCS and wrk with two threads (a pod without a
	// CPU limit on a shared node).
	pinned bool
}

// throughputVariants are the HTTP/1.1 variants of the throughput matrix:
// two baselines (net/http's zero settings, and kubeskel's http.Server
// settings, so the cost of the settings is reported apart from the cost of
// the skeleton), then kubeskel with more and more turned on.
func (b *bench) throughputVariants() []variant {
	without := func(v variant, name, prefix string) variant {
		base := v.env
		v.name = name
		v.env = func(hp, ap int) []string {
			return slices.DeleteFunc(base(hp, ap), func(s string) bool { return strings.HasPrefix(s, prefix) })
		}
		return v
	}
	bare, defaults, all := b.variants[0], b.variants[1], b.variants[2]
	return []variant{
		bare,
		withEnv(bare, "bare, kubeskel's http.Server settings (BARE_SETTINGS=1)", "BARE_SETTINGS=1"),
		defaults,
		withEnv(defaults, "kubeskel, tracing off, APP_HTTP2=off", "APP_HTTP2=off"),
		without(all, "kubeskel, tracing 100% over OTLP/HTTP, no request log", "APP_REQUEST_LOG="),
		all,
		// GOGC guidance, not a target variant: the collector's cost over
		// kubeskel's larger live heap, halved (see the pprof section).
		withEnv(defaults, "kubeskel, tracing off, GOGC=200", "GOGC=200"),
	}
}

// withEnv is v renamed, with extra variables in its environment.
func withEnv(v variant, name string, extra ...string) variant {
	base := v.env
	v.name = name
	v.env = func(hp, ap int) []string { return append(base(hp, ap), extra...) }
	return v
}

// tpKey identifies one cell of the matrix.
type tpKey struct {
	pinned bool
	conns  int
}

// throughputMatrix measures GET / over keep-alive connections for every
// variant, connection count and CPU placement. Within one repetition of one
// cell the variants run back to back, so the ratio to a baseline within a
// repetition cancels most drift; the figure quoted is the median of those
// per-repetition ratios.
func (b *bench) throughputMatrix() error {
	var connList []int
	for _, f := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-conns: %q is not a positive integer", f)
		}
		connList = append(connList, n)
	}
	var places []placement
	for _, f := range strings.Split(*pinModes, ",") {
		switch strings.TrimSpace(f) {
		case "pinned":
			if b.serverCPU == "" {
				return fmt.Errorf("-pin pinned needs taskset and at least 2 CPUs")
			}
			places = append(places, placement{"pinned", true})
		case "unpinned":
			places = append(places, placement{"unpinned", false})
		default:
			return fmt.Errorf("-pin: %q is neither pinned nor unpinned", f)
		}
	}
	variants := b.throughputVariants()
	results := map[tpKey][][]wrkResult{}
	idle := make([]rss, len(variants))
	idleDone := false
	for _, pl := range places {
		for _, c := range connList {
			key := tpKey{pl.pinned, c}
			results[key] = make([][]wrkResult, len(variants))
			for rep := 0; rep < *reps; rep++ {
				for i, v := range variants {
					r, mem, err := b.throughputOnce(v, pl, c, !idleDone && rep == 0)
					if err != nil {
						return fmt.Errorf("%s, %s, %d connections: %w", v.name, pl.name, c, err)
					}
					if !idleDone && rep == 0 {
						idle[i] = mem
					}
					results[key][i] = append(results[key][i], r)
					fmt.Fprintf(os.Stderr, "  %s c%d rep %d %s: %.0f req/s p99 %v\n", pl.name, c, rep+1, v.name, r.rps, r.p99)
				}
				idleDone = true
			}
		}
	}
	b.printThroughput(variants, places, connList, results, idle)
	return nil
}

// throughputOnce starts v placed as pl, warms it up for a second and runs
// wrk with c connections for -duration. With measureIdle it first reads the
// idle memory (ready, a second of quiet, no request served yet).
func (b *bench) throughputOnce(v variant, pl placement, c int, measureIdle bool) (wrkResult, rss, error) {
	saved := b.serverCPU
	defer func() { b.serverCPU = saved }()
	threads := 1
	if !pl.pinned {
		b.serverCPU = ""
		base := v.env
		v.env = func(hp, ap int) []string {
			return slices.DeleteFunc(base(hp, ap), func(s string) bool { return s == "GOMAXPROCS=1" })
		}
		threads = min(2, c)
	}
	p, err := b.start(v, nil)
	if err != nil {
		return wrkResult{}, rss{}, err
	}
	if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
		p.kill()
		return wrkResult{}, rss{}, err
	}
	var mem rss
	if measureIdle {
		time.Sleep(time.Second)
		mem = p.rss()
	}
	if _, err := b.wrkThreads(p.url(), time.Second, c, threads); err != nil {
		p.kill()
		return wrkResult{}, rss{}, err
	}
	cpu0 := p.cpuTime()
	r, err := b.wrkThreads(p.url(), *duration, c, threads)
	r.rssAfter = p.rss()
	if r.requests > 0 {
		r.cpuPerReq = time.Duration(float64(p.cpuTime()-cpu0) / r.requests)
	}
	p.stop(30 * time.Second)
	return r, mem, err
}

// ratios are the per-repetition ratios of variant i's req/s to variant
// base's in one cell.
func ratios(cell [][]wrkResult, i, base int) []float64 {
	var out []float64
	for rep := range cell[i] {
		out = append(out, cell[i][rep].rps/cell[base][rep].rps)
	}
	return out
}

func (b *bench) printThroughput(variants []variant, places []placement, connList []int, results map[tpKey][][]wrkResult, idle []rss) {
	fmt.Fprintf(b.out, "\n## HTTP/1.1 throughput, GET / over keep-alive connections (wrk, %v runs after 1 s of warm-up, %d repetitions, variants alternating)\n\n", *duration, *reps)
	fmt.Fprintf(b.out, "Pinned: server on CPU %s with GOMAXPROCS=1, `wrk -t1` on the other CPUs. Unpinned: server with the default GOMAXPROCS (%d) and `wrk -t2` on every CPU. × figures are medians of per-repetition ratios (min–max).\n", b.serverCPU, runtime.NumCPU())
	for _, pl := range places {
		for _, c := range connList {
			cell := results[tpKey{pl.pinned, c}]
			fmt.Fprintf(b.out, "\n### %s, %d connection(s)\n\n", pl.name, c)
			fmt.Fprintf(b.out, "| variant | req/s median (min–max) | × bare | × bare with kubeskel's settings | server CPU µs/request | p50 | p99 median (min–max) |\n|---|---:|---:|---:|---:|---:|---:|\n")
			for i, v := range variants {
				rps := field(cell[i], func(r wrkResult) float64 { return r.rps })
				cpu := field(cell[i], func(r wrkResult) float64 { return float64(r.cpuPerReq) / 1e3 })
				p50 := field(cell[i], func(r wrkResult) float64 { return float64(r.p50) })
				p99 := field(cell[i], func(r wrkResult) float64 { return float64(r.p99) })
				r0, r1 := ratios(cell, i, 0), ratios(cell, i, 1)
				fmt.Fprintf(b.out, "| %s | %.0f (%.0f–%.0f) | %.2f (%.2f–%.2f) | %.2f (%.2f–%.2f) | %.1f | %v | %v (%v–%v) |\n", v.name,
					median(rps), slices.Min(rps), slices.Max(rps),
					median(r0), slices.Min(r0), slices.Max(r0), median(r1), slices.Min(r1), slices.Max(r1),
					median(cpu), dur(median(p50)), dur(median(p99)), dur(slices.Min(p99)), dur(slices.Max(p99)))
			}
		}
	}
	fmt.Fprintf(b.out, "\n### Idle memory (ready, 1 s quiet, no request yet; %s placement)\n\n| variant | VmRSS MiB | private (RssAnon) MiB | file-backed (RssFile: pages of the binary) MiB |\n|---|---:|---:|---:|\n", places[0].name)
	for i, v := range variants {
		m := idle[i]
		fmt.Fprintf(b.out, "| %s | %.1f | %.1f | %.1f |\n", v.name, float64(m.total)/1024, float64(m.anon)/1024, float64(m.file)/1024)
	}
	// The targets of the concurrency issue, from the 32-connection cells.
	fmt.Fprintf(b.out, "\n### Throughput targets at 32 connections (median of per-repetition ratios to bare)\n\n| target | placement | measured | |\n|---|---|---:|---|\n")
	targets := []struct {
		name  string
		i     int
		floor float64
	}{
		{"tracing off ≥ 0.95× bare", 2, 0.95},
		{"tracing 100% over OTLP ≥ 0.70× bare", 4, 0.70},
		{"tracing 100% + JSON request log ≥ 0.55× bare", 5, 0.55},
	}
	for _, t := range targets {
		for _, pl := range places {
			cell, ok := results[tpKey{pl.pinned, 32}]
			if !ok {
				continue
			}
			m := median(ratios(cell, t.i, 0))
			verdict := "met"
			if m < t.floor {
				verdict = "**missed**"
			}
			fmt.Fprintf(b.out, "| %s | %s | %.2f× (vs bare with kubeskel's settings %.2f×) | %s |\n", t.name, pl.name, m, median(ratios(cell, t.i, 1)), verdict)
		}
	}
	if m := idle[2]; m.anon > 0 {
		verdict := "met"
		if m.anon > 3*1024 {
			verdict = "**missed**"
		}
		fmt.Fprintf(b.out, "| idle private memory ≤ 3 MiB (kubeskel defaults) | %s | %.1f MiB (file-backed %.1f MiB reported apart) | %s |\n", places[0].name, float64(m.anon)/1024, float64(m.file)/1024, verdict)
	}
}
