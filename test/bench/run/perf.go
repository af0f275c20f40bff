//go:build bench

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// perfHz is the sampling rate of perf record (cpu-clock, a software event:
// virtual machines often have no hardware counters).
const perfHz = 4000

// perfSection splits the server CPU's time per request, kernel included,
// between bare with kubeskel's http.Server settings and kubeskel defaults
// (tracing off), under wrk -c32 pinned: perf record -C on the server's CPU
// while wrk runs, the two variants alternating, unstripped builds for the
// symbols. Unlike the pprof section it sees the kernel's share (syscalls,
// the loopback TCP path, wakeups) and adds no profiler to the process.
func (b *bench) perf() error {
	if _, err := exec.LookPath("perf"); err != nil {
		fmt.Fprintf(b.out, "\n## Server CPU per request by where it is spent (perf)\n\nNot run: perf is not on PATH (apt-get install linux-perf).\n")
		return nil
	}
	if b.serverCPU == "" {
		return fmt.Errorf("needs taskset and at least 2 CPUs")
	}
	tv := b.throughputVariants()
	variants := []variant{tv[1], tv[2]}
	for i := range variants {
		if variants[i].kubeskel {
			variants[i].bin = b.ksSyms
		} else {
			variants[i].bin = b.bareSyms
		}
	}
	// per[v][rep][category] = ns/request
	per := make([][]map[string]float64, len(variants))
	totals := make([][]float64, len(variants))
	for rep := 0; rep < *reps; rep++ {
		for i, v := range variants {
			cats, total, rps, err := b.perfOnce(v, fmt.Sprintf("perf-%d-%d.data", i, rep))
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			per[i] = append(per[i], cats)
			totals[i] = append(totals[i], total)
			fmt.Fprintf(os.Stderr, "  perf rep %d %s: %.0f req/s, %.2f µs/request on the server CPU\n", rep+1, v.name, rps, total/1e3)
		}
	}
	keys := map[string]bool{}
	for _, reps := range per {
		for _, m := range reps {
			for k := range m {
				keys[k] = true
			}
		}
	}
	diff := func(k string) []float64 {
		var d []float64
		for rep := range per[1] {
			d = append(d, per[1][rep][k]-per[0][rep][k])
		}
		return d
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return median(diff(names[i])) > median(diff(names[j])) })
	fmt.Fprintf(b.out, "\n## Server CPU per request by where it is spent (perf record -e cpu-clock -F %d -C %s during wrk -t1 -c%d for %v, %d repetitions alternating, unstripped builds)\n\n", perfHz, b.serverCPU, pprofConns, *pprofDuration, *reps)
	fmt.Fprintf(b.out, "Flat samples of the server's process on its CPU, kernel included, in ns per request (medians; the difference is the median of per-repetition differences, min–max). Kernel samples move with the machine's noise by several hundred ns between repetitions of the same binary: read the kernel row with its range.\n\n")
	fmt.Fprintf(b.out, "| where | %s | %s | difference |\n|---|---:|---:|---:|\n", variants[0].name, variants[1].name)
	for _, k := range names {
		b0 := median(field(per[0], func(m map[string]float64) float64 { return m[k] }))
		b1 := median(field(per[1], func(m map[string]float64) float64 { return m[k] }))
		d := diff(k)
		fmt.Fprintf(b.out, "| %s | %.0f | %.0f | %+.0f (%+.0f…%+.0f) |\n", k, b0, b1, median(d), slices.Min(d), slices.Max(d))
	}
	var td []float64
	for rep := range totals[1] {
		td = append(td, totals[1][rep]-totals[0][rep])
	}
	fmt.Fprintf(b.out, "| **total** | %.0f | %.0f | %+.0f (%+.0f…%+.0f) |\n", median(totals[0]), median(totals[1]), median(td), slices.Min(td), slices.Max(td))
	return nil
}

// perfOnce starts v pinned, warms it up, records its CPU with perf while
// wrk runs, and returns ns/request by category, the total, and req/s.
func (b *bench) perfOnce(v variant, name string) (map[string]float64, float64, float64, error) {
	p, err := b.start(v, nil)
	if err != nil {
		return nil, 0, 0, err
	}
	defer p.stop(30 * time.Second)
	if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
		return nil, 0, 0, err
	}
	if _, err := b.wrk(p.url(), time.Second, pprofConns); err != nil {
		return nil, 0, 0, err
	}
	data := filepath.Join(b.dir, name)
	rec := exec.Command("perf", "record", "-q", "-e", "cpu-clock", "-F", strconv.Itoa(perfHz), "-C", b.serverCPU, "-o", data,
		"--", "sleep", strconv.Itoa(int(pprofDuration.Seconds())))
	if err := rec.Start(); err != nil {
		return nil, 0, 0, fmt.Errorf("perf record: %w", err)
	}
	w, err := b.wrk(p.url(), *pprofDuration, pprofConns)
	if werr := rec.Wait(); err == nil && werr != nil {
		err = fmt.Errorf("perf record: %w", werr)
	}
	if err != nil {
		return nil, 0, 0, err
	}
	comm := filepath.Base(v.bin)
	out, err := exec.Command("perf", "report", "-i", data, "--no-children", "--comm", comm[:min(15, len(comm))],
		"--sort", "dso,sym", "-n", "-q", "-t", "\t").Output()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("perf report: %w", err)
	}
	nsPerSample := 1e9 / float64(perfHz)
	cats := map[string]float64{}
	total := 0.0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 4 {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f[1]))
		if err != nil {
			continue
		}
		dso, sym := strings.TrimSpace(f[2]), strings.TrimSpace(f[3])
		sym = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(sym, "[.]"), "[k]"))
		var c string
		switch {
		case strings.Contains(dso, "kernel"):
			c = "kernel (syscalls, loopback TCP, wakeups)"
		case strings.Contains(dso, "vdso"):
			c = "vDSO (clock reads: time.Now)"
		default:
			c = cpuCategory(sym)
		}
		ns := float64(n) * nsPerSample / w.requests
		cats[c] += ns
		total += ns
	}
	if total == 0 {
		return nil, 0, 0, fmt.Errorf("perf report found no samples of %s:\n%s", comm, out)
	}
	return cats, total, w.rps, nil
}
