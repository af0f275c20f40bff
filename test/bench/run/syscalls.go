//go:build bench

package main

import (
	"cmp"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// reStraceRow is one row of strace -c's summary: % time, seconds,
// usecs/call, calls, errors (blank when none), syscall.
var reStraceRow = regexp.MustCompile(`(?m)^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$`)

// syscallCount is the calls and failed calls of one system call in a run.
type syscallCount struct{ calls, errors float64 }

// syscalls counts the system calls per request that the servers make under
// load, pinned: strace -f -c attaches to every thread of the running server
// after it is ready and warmed up, the load runs, strace detaches and
// prints its summary, which is divided by the load's request count. Over
// HTTP/1.1 (wrk -c32) it compares bare, bare with kubeskel's http.Server
// settings and kubeskel defaults; over h2c (h2load, as the h2 section)
// bare with BARE_H2C=1 and kubeskel defaults, where one write can carry the
// frames of several streams. Under strace every system call stops the
// server, so timing-driven calls (epoll_pwait, futex, nanosleep) are not
// those of an untraced run, and on HTTP/2 neither is the batching of
// frames into writes; the calls that serving an HTTP/1.1 request makes
// (read, write) are. It fails when strace saw no system call, or, over
// HTTP/1.1, fewer than one write per request: strace attached late or
// missed threads.
func (b *bench) syscalls() error {
	if _, err := exec.LookPath("strace"); err != nil {
		fmt.Fprintf(b.out, "\n## System calls per request (strace)\n\nNot run: strace is not on PATH (apt-get install strace).\n")
		return nil
	}
	if b.serverCPU == "" {
		return fmt.Errorf("needs taskset and at least 2 CPUs")
	}
	tv := b.throughputVariants()
	h1 := func(url string, d time.Duration) (float64, error) {
		r, err := b.wrk(url, d, 32)
		return r.requests, err
	}
	counts, err := b.straceVariants(tv[:3], h1, 1) // bare, bare with kubeskel's settings, kubeskel defaults
	if err != nil {
		return err
	}
	b.printSyscalls(fmt.Sprintf("HTTP/1.1, wrk -t1 -c32 for %v", *duration), tv[:3], counts)

	if _, err := exec.LookPath("h2load"); err != nil {
		fmt.Fprintf(b.out, "\nHTTP/2 not run: h2load is not on PATH (apt-get install nghttp2-client).\n")
		return nil
	}
	h2 := func(url string, d time.Duration) (float64, error) {
		r, err := b.h2load(url, d)
		return r.succeeded, err
	}
	h2Variants := []variant{withEnv(b.variants[0], b.variants[0].name+" (BARE_H2C=1)", "BARE_H2C=1"), b.variants[1]}
	counts, err = b.straceVariants(h2Variants, h2, 0)
	if err != nil {
		return err
	}
	b.printSyscalls(fmt.Sprintf("h2c, h2load -c %d -m %d for %v", *h2Conns, *h2Streams, *duration), h2Variants, counts)
	return nil
}

// straceVariants runs straceOnce for each variant, *reps times
// alternating, and returns calls per request by variant and repetition.
// A run with fewer than minWrites writes per request is an error.
func (b *bench) straceVariants(variants []variant, load func(string, time.Duration) (float64, error), minWrites float64) ([][]map[string]syscallCount, error) {
	counts := make([][]map[string]syscallCount, len(variants))
	for rep := 0; rep < *reps; rep++ {
		for i, v := range variants {
			c, n, err := b.straceOnce(v, load, filepath.Join(b.dir, fmt.Sprintf("strace-%d-%d-%d", len(variants), i, rep)))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			if w := c["write"].calls / n; w < minWrites || c["write"].calls == 0 {
				return nil, fmt.Errorf("%s: %.2f writes per request, want at least %g and some: strace missed part of the run", v.name, w, minWrites)
			}
			perReq := make(map[string]syscallCount, len(c))
			for name, sc := range c {
				perReq[name] = syscallCount{sc.calls / n, sc.errors / n}
			}
			counts[i] = append(counts[i], perReq)
			fmt.Fprintf(os.Stderr, "  rep %d %s: %.0f requests, %.2f read, %.2f write per request\n", rep+1, v.name, n, perReq["read"].calls, perReq["write"].calls)
		}
	}
	return counts, nil
}

// printSyscalls prints one table of calls per request: medians of the
// repetitions, sorted by the last variant's calls.
func (b *bench) printSyscalls(load string, variants []variant, counts [][]map[string]syscallCount) {
	names := map[string]bool{}
	for _, reps := range counts {
		for _, c := range reps {
			for name := range c {
				names[name] = true
			}
		}
	}
	med := func(i int, name string, f func(syscallCount) float64) float64 {
		var xs []float64
		for _, c := range counts[i] {
			xs = append(xs, f(c[name]))
		}
		return median(xs)
	}
	calls := func(c syscallCount) float64 { return c.calls }
	errs := func(c syscallCount) float64 { return c.errors }
	rows := slices.Collect(maps.Keys(names))
	last := len(variants) - 1
	slices.SortFunc(rows, func(a, b string) int {
		return cmp.Or(cmp.Compare(med(last, b, calls), med(last, a, calls)), strings.Compare(a, b))
	})

	fmt.Fprintf(b.out, "\n## System calls per request, %s (strace -f -c attached to the ready server, pinned with GOMAXPROCS=1, %d repetitions alternating)\n\n", load, *reps)
	fmt.Fprintf(b.out, "Calls per request, medians of the repetitions (failed calls in parentheses: a read that finds no data fails with EAGAIN and waits in the netpoller). Under strace every call stops the server, so the calls that follow timing (epoll_pwait, futex, nanosleep, and on HTTP/2 how many streams' frames share a write) differ from an untraced run. Rows under 0.005 calls per request in every column are left out.\n\n")
	fmt.Fprintf(b.out, "| system call |")
	for _, v := range variants {
		fmt.Fprintf(b.out, " %s |", v.name)
	}
	fmt.Fprintf(b.out, "\n|---|%s\n", strings.Repeat("---:|", len(variants)))
	for _, name := range rows {
		show := false
		for i := range variants {
			show = show || med(i, name, calls) >= 0.005
		}
		if !show {
			continue
		}
		fmt.Fprintf(b.out, "| %s |", name)
		for i := range variants {
			if e := med(i, name, errs); e >= 0.005 {
				fmt.Fprintf(b.out, " %.2f (%.2f) |", med(i, name, calls), e)
			} else {
				fmt.Fprintf(b.out, " %.2f |", med(i, name, calls))
			}
		}
		fmt.Fprintln(b.out)
	}
}

// straceOnce starts v, warms it up with a second of load, attaches strace
// -f -c to it, runs load for the run's duration, detaches, stops v and
// returns strace's counts and the load's request count. out is strace's
// summary file.
func (b *bench) straceOnce(v variant, load func(string, time.Duration) (float64, error), out string) (map[string]syscallCount, float64, error) {
	p, err := b.start(v, nil)
	if err != nil {
		return nil, 0, err
	}
	defer p.stop(30 * time.Second)
	if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
		return nil, 0, err
	}
	if _, err := load(p.url(), time.Second); err != nil { // warm-up, untraced
		return nil, 0, err
	}
	var stderr tail // written by exec's copying goroutine while this one reads it
	st := exec.Command("taskset", "-c", "0-"+strconv.Itoa(runtime.NumCPU()-2),
		"strace", "-f", "-c", "-o", out, "-p", strconv.Itoa(p.cmd.Process.Pid))
	st.Stderr = &stderr
	if err := st.Start(); err != nil {
		return nil, 0, fmt.Errorf("strace: %w", err)
	}
	// strace says "Process N attached" for every thread once it traces it.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(stderr.String(), "attached"); {
		if time.Now().After(deadline) {
			st.Process.Kill()
			_ = st.Wait() // killed: its error says so
			return nil, 0, fmt.Errorf("strace did not attach within 5s: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the remaining threads' attach messages
	requests, loadErr := load(p.url(), *duration)
	st.Process.Signal(syscall.SIGINT) // detach and write the summary
	if err := st.Wait(); err != nil && !strings.Contains(err.Error(), "signal: interrupt") {
		return nil, 0, fmt.Errorf("strace: %w: %s", err, stderr.String())
	}
	if loadErr != nil {
		return nil, 0, loadErr
	}
	summary, err := os.ReadFile(out)
	if err != nil {
		return nil, 0, fmt.Errorf("strace summary: %w", err)
	}
	c := map[string]syscallCount{}
	for _, m := range reStraceRow.FindAllSubmatch(summary, -1) {
		if string(m[3]) == "total" {
			continue
		}
		calls, _ := strconv.ParseFloat(string(m[1]), 64)
		errs, _ := strconv.ParseFloat(string(m[2]), 64)
		c[string(m[3])] = syscallCount{calls, errs}
	}
	if len(c) == 0 || requests == 0 {
		return nil, 0, fmt.Errorf("no system calls in strace's summary or no requests from the load:\n%s", summary)
	}
	return c, requests, nil
}
