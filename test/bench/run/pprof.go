//go:build bench

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// pprofConns is the concurrency the profiles are taken at: the cell of the
// matrix whose targets the concurrency issue sets.
const pprofConns = 32

// pprofRun is what one profiled run measured.
type pprofRun struct {
	requests float64
	rps      float64
	// cpu is the CPU profile's flat time by function.
	cpu      map[string]time.Duration
	cpuTotal time.Duration
	// allocObjects and allocBytes are the allocations made during the run
	// (allocs profile after minus before).
	allocObjects, allocBytes float64
	allocTop                 []pprofLine // by bytes
	gcs                      int         // GC cycles during the run (gctrace)
	liveMB, goalMB           float64     // medians over those cycles
	runqueue                 []float64   // global run queue, once a second (schedtrace)
	threads                  int         // most OS threads seen (schedtrace)
}

// pprofLine is one row of `go tool pprof -top`.
type pprofLine struct {
	flat float64
	name string
}

// pprof profiles the servers under wrk -c32, pinned (the placement where
// the tracing-off target is furthest): a CPU profile over the measured run,
// the allocations made during it, GODEBUG=gctrace=1 and schedtrace=1000.
// The figures are per request, so the profiler's own cost (the same for
// every variant) does not hide the differences; req/s under profiling is
// printed but is not the matrix's figure.
func (b *bench) pprof() error {
	tv := b.throughputVariants()
	gogc := func(v variant, g string) variant {
		base := v.env
		v.name = fmt.Sprintf("%s, GOGC=%s", v.name, g)
		v.env = func(hp, ap int) []string { return append(base(hp, ap), "GOGC="+g) }
		return v
	}
	// bare, kubeskel defaults, tracing without and with the request log,
	// then the GOGC lever on defaults and on tracing.
	variants := []variant{tv[0], tv[2], tv[4], tv[5], gogc(tv[2], "200"), gogc(tv[4], "200"), gogc(tv[4], "400")}
	runs := make([]pprofRun, len(variants))
	for i, v := range variants {
		r, err := b.pprofOnce(v, i, b.wrkLoad)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		runs[i] = r
		fmt.Fprintf(os.Stderr, "  pprof %s: %.0f req/s, %.1f µs CPU/request, %.1f allocs/request\n", v.name, r.rps, perReqUS(r.cpuTotal, r.requests), r.allocObjects/r.requests)
	}
	b.printPprof(variants, runs)
	return b.liveHeap(variants[:2])
}

// liveHeap measures what is live under load, for bare and kubeskel
// defaults: a separate short run with every allocation sampled
// (GODEBUG=memprofilerate=1, too slow for the CPU profile), then the heap
// profile after a forced GC (?gc=1), while wrk still runs.
func (b *bench) liveHeap(variants []variant) error {
	fmt.Fprintf(b.out, "\nLive heap under load (GODEBUG=memprofilerate=1, heap profile after a forced GC 2 s into a 4 s wrk -c%d run, in-use KB by allocation site, flat):\n", pprofConns)
	for i, v := range variants {
		p, base, err := b.startProfiled(v, "GODEBUG=memprofilerate=1", nil)
		if err != nil {
			return err
		}
		heap := filepath.Join(b.dir, fmt.Sprintf("live-heap-%d", i))
		wrkErr := make(chan error, 1)
		go func() { _, err := b.wrk(p.url(), 4*time.Second, pprofConns); wrkErr <- err }()
		time.Sleep(2 * time.Second)
		err = fetch(base+"heap?gc=1", heap)
		if werr := <-wrkErr; err == nil {
			err = werr
		}
		p.stop(30 * time.Second)
		if err != nil {
			return err
		}
		top, total, err := pprofTop(heap, "-sample_index=inuse_space", "-unit=B")
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "\n%s: %.0f KB in use\n\n", v.name, total/1024)
		for _, l := range top[:min(8, len(top))] {
			fmt.Fprintf(b.out, "- %.0f `%s`\n", l.flat/1024, l.name)
		}
	}
	return nil
}

func perReqUS(d time.Duration, requests float64) float64 {
	if requests == 0 {
		return 0
	}
	return float64(d) / 1e3 / requests
}

// startProfiled starts v with net/http/pprof served (kubeskel's admin port
// with APP_PPROF=true, bare's benchpprof build on BARE_PPROF_ADDR) and godebug
// set, waits until it is ready and its pprof index answers, and returns the
// process and the index URL. On error the process is gone.
func (b *bench) startProfiled(v variant, godebug string, stderr io.Writer) (*proc, string, error) {
	pprofPort := b.freePort()
	extra := []string{godebug}
	if v.kubeskel {
		extra = append(extra, "APP_PPROF=true")
	} else {
		extra = append(extra, fmt.Sprintf("BARE_PPROF_ADDR=127.0.0.1:%d", pprofPort))
		v.bin = b.barePprof
	}
	p, err := b.startLogging(v, extra, stderr)
	if err != nil {
		return nil, "", err
	}
	if v.kubeskel {
		pprofPort = p.adminPort
	}
	base := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/", pprofPort)
	for _, url := range []string{p.readyURL(v), base} {
		if _, err := p.waitOK(url, 10*time.Second); err != nil {
			p.kill()
			return nil, "", err
		}
	}
	return p, base, nil
}

// loadFunc drives a profiled server at url for d and returns the requests
// it completed and their rate.
type loadFunc func(url string, d time.Duration) (requests, rps float64, err error)

// wrkLoad is the pprof section's load: wrk with pprofConns connections.
func (b *bench) wrkLoad(url string, d time.Duration) (float64, float64, error) {
	w, err := b.wrk(url, d, pprofConns)
	return w.requests, w.rps, err
}

// h2Load is the h2pprof section's load: h2load as the h2 section runs it.
func (b *bench) h2Load(url string, d time.Duration) (float64, float64, error) {
	r, err := b.h2load(url, d)
	return r.succeeded, r.rps, err
}

// h2pprof profiles HTTP/2 (h2c) the way pprof profiles HTTP/1.1: bare with
// BARE_H2C=1 and kubeskel defaults under h2load, pinned; CPU by category
// and the functions where kubeskel spends more per request.
func (b *bench) h2pprof() error {
	if _, err := exec.LookPath("h2load"); err != nil {
		return fmt.Errorf("h2load not found: apt-get install nghttp2-client")
	}
	variants := []variant{withEnv(b.variants[0], b.variants[0].name+", h2c (BARE_H2C=1)", "BARE_H2C=1"), b.variants[1]}
	runs := make([]pprofRun, len(variants))
	for i, v := range variants {
		r, err := b.pprofOnce(v, 100+i, b.h2Load)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		runs[i] = r
		fmt.Fprintf(os.Stderr, "  h2pprof %s: %.0f req/s, %.1f µs CPU/request\n", v.name, r.rps, perReqUS(r.cpuTotal, r.requests))
	}
	fmt.Fprintf(b.out, "\n## HTTP/2 profiles (h2load -c %d -m %d for %v after 1 s of warm-up, server pinned with GOMAXPROCS=1; pprof CPU profile at 100 Hz, allocations made during the run)\n\n", *h2Conns, *h2Streams, *pprofDuration)
	fmt.Fprintf(b.out, "| variant | req/s (profiled) | CPU µs/request (profile) | allocations/request | bytes/request | GC cycles per 10k requests |\n|---|---:|---:|---:|---:|---:|\n")
	for i, v := range variants {
		r := runs[i]
		fmt.Fprintf(b.out, "| %s | %.0f | %.2f | %.1f | %.0f | %.2f |\n", v.name, r.rps, perReqUS(r.cpuTotal, r.requests),
			r.allocObjects/r.requests, r.allocBytes/r.requests, float64(r.gcs)*1e4/r.requests)
	}
	cats := map[string][2]float64{}
	for i, r := range runs {
		for fn, d := range r.cpu {
			c := cats[cpuCategory(fn)]
			c[i] += float64(d) / r.requests
			cats[cpuCategory(fn)] = c
		}
	}
	names := make([]string, 0, len(cats))
	for c := range cats {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool { return cats[names[i]][1] > cats[names[j]][1] })
	fmt.Fprintf(b.out, "\nCPU ns/request by where the CPU is (flat time, the pprof section's rules):\n\n| where | %s | %s | difference |\n|---|---:|---:|---:|\n", variants[0].name, variants[1].name)
	for _, c := range names {
		fmt.Fprintf(b.out, "| %s | %.0f | %.0f | %+.0f |\n", c, cats[c][0], cats[c][1], cats[c][1]-cats[c][0])
	}
	fmt.Fprintf(b.out, "\nFunctions with the most flat CPU more than bare h2c, kubeskel defaults (ns/request):\n\n")
	b.printTopDiff(runs[1], runs[0], 15)
	return nil
}

func (b *bench) pprofOnce(v variant, i int, load loadFunc) (pprofRun, error) {
	var r pprofRun
	dir := filepath.Join(b.dir, fmt.Sprintf("pprof-%d", i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return r, err
	}
	defer stderr.Close()
	p, base, err := b.startProfiled(v, "GODEBUG=gctrace=1,schedtrace=1000", stderr)
	if err != nil {
		return r, err
	}
	defer p.stop(30 * time.Second)
	if _, _, err := load(p.url(), time.Second); err != nil { // warm-up
		return r, err
	}
	before, after, cpu := filepath.Join(dir, "allocs-before"), filepath.Join(dir, "allocs-after"), filepath.Join(dir, "cpu")
	if err := fetch(base+"allocs", before); err != nil {
		return r, err
	}
	mark, err := stderr.Seek(0, io.SeekCurrent)
	if err != nil {
		return r, err
	}
	// The CPU profile covers the wrk run: both start now and last
	// -pprof-duration.
	cpuErr := make(chan error, 1)
	go func() { cpuErr <- fetch(fmt.Sprintf("%sprofile?seconds=%d", base, int(pprofDuration.Seconds())), cpu) }()
	requests, rps, err := load(p.url(), *pprofDuration)
	if perr := <-cpuErr; err == nil {
		err = perr
	}
	if err != nil {
		return r, err
	}
	if err := fetch(base+"allocs", after); err != nil {
		return r, err
	}
	r.requests, r.rps = requests, rps

	lines, total, err := pprofTop(cpu, "-unit=ns")
	if err != nil {
		return r, err
	}
	r.cpuTotal = time.Duration(total)
	r.cpu = map[string]time.Duration{}
	for _, l := range lines {
		r.cpu[l.name] += time.Duration(l.flat)
	}
	if _, r.allocObjects, err = pprofTop(after, "-sample_index=alloc_objects", "-base", before); err != nil {
		return r, err
	}
	if r.allocTop, r.allocBytes, err = pprofTop(after, "-sample_index=alloc_space", "-unit=B", "-base", before); err != nil {
		return r, err
	}

	// GODEBUG output written during the run.
	if _, err := stderr.Seek(mark, io.SeekStart); err != nil {
		return r, err
	}
	var live, goal []float64
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		line := sc.Text()
		if m := reGCTrace.FindStringSubmatch(line); m != nil {
			r.gcs++
			l, _ := strconv.ParseFloat(m[1], 64)
			g, _ := strconv.ParseFloat(m[2], 64)
			live, goal = append(live, l), append(goal, g)
		}
		if m := reSchedTrace.FindStringSubmatch(line); m != nil {
			t, _ := strconv.Atoi(m[1])
			q, _ := strconv.ParseFloat(m[2], 64)
			r.threads = max(r.threads, t)
			r.runqueue = append(r.runqueue, q)
		}
	}
	r.liveMB, r.goalMB = median(live), median(goal)
	return r, sc.Err()
}

var (
	// gc 12 @1.234s 3%: 0.01+1.2+0.01 ms clock, ..., 4->4->2 MB, 5 MB goal, ...
	reGCTrace = regexp.MustCompile(`^gc \d+ @.* \d+->\d+->(\d+) MB, (\d+) MB goal`)
	// SCHED 2009ms: gomaxprocs=1 idleprocs=0 threads=6 ... runqueue=3 [0]
	reSchedTrace = regexp.MustCompile(`^SCHED .* threads=(\d+) .* runqueue=(\d+)`)
	// "      10ms  1.23%  45.6%      20ms  2.34%  runtime.mallocgc"
	reTopLine  = regexp.MustCompile(`^\s*(-?[\d.]+)([a-zA-Z]*)\s+-?[\d.]+%\s+-?[\d.]+%\s+-?[\d.]+[a-zA-Z]*\s+-?[\d.]+%\s+(.+)$`)
	reTopTotal = regexp.MustCompile(`of (-?[\d.]+)([a-zA-Z]*) total`)
)

// fetch GETs url into file.
func fetch(url, file string) error {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: *pprofDuration + 30*time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return os.WriteFile(file, body, 0o644)
}

// pprofTop runs go tool pprof -top -flat on profile and returns every row
// and the profile's total, in the unit the options ask for (counts for
// alloc_objects).
func pprofTop(profile string, opts ...string) ([]pprofLine, float64, error) {
	args := append([]string{"tool", "pprof", "-top", "-flat", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0"}, opts...)
	out, err := exec.Command("go", append(args, profile)...).CombinedOutput()
	if err != nil {
		return nil, 0, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	var lines []pprofLine
	var total float64
	for _, line := range strings.Split(string(out), "\n") {
		if m := reTopTotal.FindStringSubmatch(line); m != nil && total == 0 {
			total = withUnit(m[1], m[2])
			continue
		}
		if m := reTopLine.FindStringSubmatch(line); m != nil {
			lines = append(lines, pprofLine{withUnit(m[1], m[2]), strings.TrimSuffix(m[3], " (inline)")})
		}
	}
	if total == 0 && len(lines) == 0 && !bytes.Contains(out, []byte("Showing nodes")) {
		return nil, 0, fmt.Errorf("go tool pprof printed no top table:\n%s", out)
	}
	return lines, total, nil
}

// withUnit reads a pprof figure: plain counts, or ns/B (the unit asked for),
// or pprof's own scaled units should it still scale (k, M, G).
func withUnit(num, unit string) float64 {
	v, _ := strconv.ParseFloat(num, 64)
	switch unit {
	case "k", "kB":
		v *= 1e3
	case "M", "MB":
		v *= 1e6
	case "G", "GB":
		v *= 1e9
	case "us":
		v *= 1e3
	case "ms":
		v *= 1e6
	case "s":
		v *= 1e9
	}
	return v
}

// cpuCategory groups a function by what its flat CPU time is spent on.
// Flat time counts where the CPU is, so an allocation made by the
// OpenTelemetry SDK is "allocation", not "OpenTelemetry".
func cpuCategory(fn string) string {
	for _, c := range cpuCategories {
		if c.re.MatchString(fn) {
			return c.name
		}
	}
	return "other (strings, strconv, fmt, ...)"
}

var cpuCategories = []struct {
	name string
	re   *regexp.Regexp
}{
	{"syscalls (read, write, epoll, futex)", regexp.MustCompile(`^(internal/runtime/syscall|syscall\.|runtime\.(futex|epollwait|usleep|osyield|madvise|mmap|sysMmap|write1|read|vgetrandom|nanotime1|walltime)\b)`)},
	{"GC (mark, sweep, write barriers, assists)", regexp.MustCompile(`^(internal/runtime/gc|runtime\.(gc|scan|grey|markroot|mark|sweep|bgsweep|bgscavenge|scavenge|findObject|spanOf|wbBuf|bulkBarrier|typePointers|heapBits|tryDefer|\(\*unwinder|getStackMap|\(\*stkframe|pcvalue|findfunc|funcInfo|funcdata|pcdatavalue|step$|readvarint|\(\*gc|\(\*mspan\)\.(sweep|typePointers|markBits|heapBits|mark|moveInline)|\(\*sweep|\(\*mark|\(\*mheap\)\.(nextSpanForSweep|reclaim)|\(\*pageAlloc\)\.scavenge|\(\*scavenger|\(\*typePointers|\(\*gcBits))`)},
	{"allocation (mallocgc, slices, maps)", regexp.MustCompile(`^runtime\.(mallocgc|malloc|nextFreeFast|newobject|makeslice|growslice|makemap|newarray|memclrNoHeapPointers|heapSetType|deductAssistCredit|profilealloc|mProf|\(\*mcache\)|\(\*mcentral\)|\(\*mheap\)|\(\*mspan\)\.(nextFreeIndex|init|refillAllocCache|writeHeapBits)|writeHeapBits|\(\*fixalloc\)|\(\*pageAlloc\)|\(\*pageCache\)|\(\*spanSet\))`)},
	{"scheduler and netpoll", regexp.MustCompile(`^runtime\.(schedule|findRunnable|runq|globrunq|steal|park_m|gopark|goready|ready|execute|casgstatus|casGToWaiting|mcall|gogo|goexit|gosched|netpoll|checkTimers|wakep|startm|stopm|notesleep|notewakeup|resetspinning|handoffp|acquirep|releasep|newproc|gfget|gfput|injectglist|pidle|entersyscall|exitsyscall|reentersyscall|save|morestack|newstack|copystack|systemstack|mPark|goschedguarded|forEachP|retake|sysmon|\(\*randomEnum|\(\*guintptr|\(\*puintptr|\(\*pollDesc|\(\*pollCache)`)},
	{"timers and time", regexp.MustCompile(`^(time\.|internal/runtime/timer|runtime\.(\(\*timer|\(\*timers|\(\*timeTimer|nanotime|resettimer|addtimer|deltimer|modtimer|timeSleep|startTimer|stopTimer|resetTimer|badTimer|time_now|when)\b)`)},
	{"locks, channels, sync", regexp.MustCompile(`^(sync\.|sync/atomic|internal/sync\.|runtime\.(chan|select|sel|send|recv|sema|lock|unlock|\(\*waitq|\(\*mutex|\(\*semaRoot|procyield|cansemacquire|readyWithTime|releaseSudog|acquireSudog))`)},
	{"net/http, net, internal/poll, bufio, textproto", regexp.MustCompile(`^(net/http|net\.|net/textproto|net/url|bufio\.|mime|golang.org/x/net|internal/poll\.)`)},
	{"kubeskel", regexp.MustCompile(`^github.com/kubeskel/`)},
	{"Prometheus client", regexp.MustCompile(`^github.com/prometheus/`)},
	{"OpenTelemetry", regexp.MustCompile(`^go.opentelemetry.io/`)},
	{"protobuf, gRPC", regexp.MustCompile(`^google.golang.org/`)},
	{"log/slog, encoding/json", regexp.MustCompile(`^(log/slog|encoding/|unicode/utf8)`)},
	{"runtime other (maps, memmove, hashing, interfaces)", regexp.MustCompile(`^(runtime\.|internal/runtime|internal/abi|internal/bytealg|internal/chacha8rand|internal/)`)},
}

func (b *bench) printPprof(variants []variant, runs []pprofRun) {
	fmt.Fprintf(b.out, "\n## Profiles under concurrency (wrk -t1 -c%d for %v after 1 s of warm-up, server pinned with GOMAXPROCS=1; pprof CPU profile of the run at 100 Hz, allocations made during it, GODEBUG=gctrace=1,schedtrace=1000)\n\n", pprofConns, *pprofDuration)
	fmt.Fprintf(b.out, "Per request, so the profiler's own cost (the same for every variant) does not hide the differences; req/s under profiling is lower than in the throughput tables and is not a target figure.\n\n")
	fmt.Fprintf(b.out, "| variant | req/s (profiled) | CPU µs/request (profile) | allocations/request | bytes/request | GC cycles per 10k requests | live heap after GC MB (median) | heap goal MB | global run queue (median, max) | OS threads |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, v := range variants {
		r := runs[i]
		q := r.runqueue
		qmax := 0.0
		if len(q) > 0 {
			qmax = slices.Max(q)
		}
		fmt.Fprintf(b.out, "| %s | %.0f | %.2f | %.1f | %.0f | %.2f | %.0f | %.0f | %.0f, %.0f | %d |\n", v.name, r.rps,
			perReqUS(r.cpuTotal, r.requests), r.allocObjects/r.requests, r.allocBytes/r.requests,
			float64(r.gcs)*1e4/r.requests, r.liveMB, r.goalMB, median(q), qmax, r.threads)
	}

	// CPU ns/request by category, one column per variant.
	cats := map[string][]float64{}
	for i, r := range runs {
		for fn, d := range r.cpu {
			c := cpuCategory(fn)
			if cats[c] == nil {
				cats[c] = make([]float64, len(runs))
			}
			cats[c][i] += float64(d) / r.requests
		}
	}
	names := make([]string, 0, len(cats))
	for c := range cats {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool { return cats[names[i]][2] > cats[names[j]][2] })
	fmt.Fprintf(b.out, "\nCPU ns/request by where the CPU is (flat time, grouped by function name; rules in test/bench/run/pprof.go):\n\n| where |")
	for _, v := range variants {
		fmt.Fprintf(b.out, " %s |", v.name)
	}
	fmt.Fprintf(b.out, " defaults − bare |\n|---|")
	for range variants {
		fmt.Fprintf(b.out, "---:|")
	}
	fmt.Fprintf(b.out, "---:|\n")
	for _, c := range names {
		fmt.Fprintf(b.out, "| %s |", c)
		for i := range variants {
			fmt.Fprintf(b.out, " %.0f |", cats[c][i])
		}
		fmt.Fprintf(b.out, " %+.0f |\n", cats[c][1]-cats[c][0])
	}

	// The functions where defaults spend more than bare, and the top of
	// each tracing variant.
	fmt.Fprintf(b.out, "\nThe most flat CPU, bare (ns/request):\n\n")
	b.printTopDiff(runs[0], pprofRun{requests: 1}, 10)
	fmt.Fprintf(b.out, "\nFunctions with the most flat CPU more than bare, kubeskel defaults (ns/request, defaults − bare):\n\n")
	b.printTopDiff(runs[1], runs[0], 15)
	fmt.Fprintf(b.out, "\nFunctions with the most flat CPU more than kubeskel defaults, %s (ns/request):\n\n", variants[2].name)
	b.printTopDiff(runs[2], runs[1], 15)
	fmt.Fprintf(b.out, "\nWhere the bytes are allocated, %s (bytes/request, flat):\n\n", variants[2].name)
	for _, l := range runs[2].allocTop[:min(10, len(runs[2].allocTop))] {
		fmt.Fprintf(b.out, "- %.0f `%s`\n", l.flat/runs[2].requests, l.name)
	}
}

// printTopDiff prints the n functions whose flat CPU per request grew most
// from base to r.
func (b *bench) printTopDiff(r, base pprofRun, n int) {
	type row struct {
		name string
		d    float64
	}
	var rows []row
	for fn, d := range r.cpu {
		rows = append(rows, row{fn, float64(d)/r.requests - float64(base.cpu[fn])/base.requests})
	}
	for fn, d := range base.cpu {
		if _, ok := r.cpu[fn]; !ok {
			rows = append(rows, row{fn, -float64(d) / base.requests})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].d > rows[j].d })
	for _, x := range rows[:min(n, len(rows))] {
		fmt.Fprintf(b.out, "- %+.0f `%s`\n", x.d, x.name)
	}
}
