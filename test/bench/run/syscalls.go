//go:build bench

package main

import (
	"fmt"
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

// syscalls counts the system calls per request that bare, bare with
// kubeskel's http.Server settings and kubeskel defaults make under wrk -c32,
// pinned: strace -f -c attaches to every thread of the running server after
// it is ready, wrk runs, strace detaches and prints its summary, which is
// divided by wrk's request count. Under strace every system call stops the
// server, so timing-driven calls (epoll_pwait, futex, nanosleep) are not
// those of an untraced run; the calls that serving a request makes (read,
// write) are. It fails unless each variant made at least one write per
// request: fewer would mean strace attached late or missed threads.
func (b *bench) syscalls() error {
	if _, err := exec.LookPath("strace"); err != nil {
		fmt.Fprintf(b.out, "\n## System calls per request (strace)\n\nNot run: strace is not on PATH (apt-get install strace).\n")
		return nil
	}
	if b.serverCPU == "" {
		return fmt.Errorf("needs taskset and at least 2 CPUs")
	}
	tv := b.throughputVariants()
	variants := tv[:3] // bare, bare with kubeskel's settings, kubeskel defaults
	counts := make([][]map[string]syscallCount, len(variants))
	for rep := 0; rep < *reps; rep++ {
		for i, v := range variants {
			c, n, err := b.straceOnce(v, filepath.Join(b.dir, fmt.Sprintf("strace-%d-%d", i, rep)))
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if w := c["write"].calls / n; w < 1 {
				return fmt.Errorf("%s: %.2f writes per request, want at least 1: strace missed part of the run", v.name, w)
			}
			perReq := make(map[string]syscallCount, len(c))
			for name, sc := range c {
				perReq[name] = syscallCount{sc.calls / n, sc.errors / n}
			}
			counts[i] = append(counts[i], perReq)
			fmt.Fprintf(os.Stderr, "  rep %d %s: %.0f requests, %.2f read, %.2f write per request\n", rep+1, v.name, n, perReq["read"].calls, perReq["write"].calls)
		}
	}

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
	rows := slices.Collect(func(yield func(string) bool) {
		for name := range names {
			if !yield(name) {
				return
			}
		}
	})
	slices.SortFunc(rows, func(a, b string) int {
		if d := med(len(variants)-1, b, calls) - med(len(variants)-1, a, calls); d != 0 {
			if d > 0 {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})

	fmt.Fprintf(b.out, "\n## System calls per request (strace -f -c attached to the ready server during wrk -t1 -c32 for %v, server pinned with GOMAXPROCS=1, %d repetitions alternating)\n\n", *duration, *reps)
	fmt.Fprintf(b.out, "Calls per request, medians of the repetitions (failed calls in parentheses: a read that finds no data fails with EAGAIN and waits in the netpoller). Under strace every call stops the server, so the calls that follow timing (epoll_pwait, futex, nanosleep) differ from an untraced run; read and write are what serving a request takes. Rows under 0.005 calls per request in every column are left out.\n\n")
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
	return nil
}

// straceOnce starts v, attaches strace -f -c to it once it is ready, runs
// wrk -c32 for the run's duration, detaches, stops v and returns strace's
// counts and wrk's request count. out is strace's summary file.
func (b *bench) straceOnce(v variant, out string) (map[string]syscallCount, float64, error) {
	p, err := b.start(v, nil)
	if err != nil {
		return nil, 0, err
	}
	defer p.stop(30 * time.Second)
	if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
		return nil, 0, err
	}
	if _, err := b.wrk(p.url(), time.Second, 32); err != nil { // warm-up, untraced
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
	r, wrkErr := b.wrk(p.url(), *duration, 32)
	st.Process.Signal(syscall.SIGINT) // detach and write the summary
	if err := st.Wait(); err != nil && !strings.Contains(err.Error(), "signal: interrupt") {
		return nil, 0, fmt.Errorf("strace: %w: %s", err, stderr.String())
	}
	if wrkErr != nil {
		return nil, 0, wrkErr
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
	if len(c) == 0 || r.requests == 0 {
		return nil, 0, fmt.Errorf("no system calls in strace's summary or no requests from wrk:\n%s", summary)
	}
	return c, r.requests, nil
}
