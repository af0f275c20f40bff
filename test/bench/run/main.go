//go:build bench

// Command run measures what the kubeskel skeleton costs compared with a bare
// net/http server serving the same handlers (test/bench/bare), all in one run
// so that the ratios compare like with like. It prints Markdown to stdout;
// hack/bench.sh runs it and BENCHMARKS.md records a run.
//
//	go run -tags bench ./test/bench/run [-reps 5] [-duration 5s]
//
// Needs wrk, valgrind (callgrind_control) and taskset on PATH. The servers
// run pinned to the last CPU with GOMAXPROCS=1 (a one-CPU pod); the load
// generators and this program run on the other CPUs, so the server's CPU is
// its own.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	reps          = flag.Int("reps", 5, "repetitions of each throughput and callgrind measurement (alternating variants)")
	duration      = flag.Duration("duration", 5*time.Second, "length of one wrk run")
	conns         = flag.String("conns", "1,32,256", "wrk keep-alive connections of the throughput runs, a comma list")
	pinModes      = flag.String("pin", "pinned,unpinned", "throughput CPU placements, a comma list: pinned (server on the last CPU with GOMAXPROCS=1, wrk -t1 on the others), unpinned (both on every CPU, default GOMAXPROCS, wrk -t2)")
	pprofDuration = flag.Duration("pprof-duration", 10*time.Second, "length of the profiled wrk run of each variant in the pprof section")
	cgRequests    = flag.Int("callgrind-requests", 5000, "keep-alive requests counted under callgrind")
	starts        = flag.Int("starts", 20, "process starts for the start-up time")
	h2Conns       = flag.Int("h2-conns", 8, "h2load connections (-c) in the h2 section")
	h2Streams     = flag.Int("h2-streams", 16, "h2load concurrent streams per connection (-m) in the h2 section")
	kubeskelEnv   = flag.String("kubeskel-env", "", "comma list of VAR=value added to every kubeskel variant's environment (to size a setting; the report says so)")
	keep          = flag.Bool("keep", false, "keep the work directory (binaries, pprof and cachegrind files) and print its path")
	only          = flag.String("only", "", "comma list of sections to run (size,throughput,pprof,perf,syscalls,h2,h2pprof,grpc,callgrind,profile,startup,shutdown,probe); empty: all")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// variant is one server configuration under test.
type variant struct {
	name string
	bin  string
	// env returns the environment for the given traffic and admin ports.
	env func(httpPort, adminPort int) []string
	// kubeskel variants have an admin port with /ready.
	kubeskel bool
}

type bench struct {
	dir       string
	bare, ks  string
	bareSyms  string // unstripped, for profiles
	ksSyms    string
	barePprof string // bare with net/http/pprof (-tags benchpprof)
	sink      *otlpSink
	variants  []variant
	serverCPU string // taskset CPU list for servers; "" when not pinned
	out       io.Writer
	ports     map[int]bool // every port freePort handed out in this run
}

func run() error {
	for _, tool := range []string{"wrk", "valgrind", "callgrind_control", "cg_diff", "cg_annotate"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install wrk valgrind", tool)
		}
	}
	dir, err := os.MkdirTemp("", "kubeskel-bench-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(os.Stderr, "bench: work directory %s kept (binaries, profiles, cachegrind files)\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	b := &bench{dir: dir, out: os.Stdout, ports: make(map[int]bool)}
	if n := runtime.NumCPU(); n >= 2 {
		if _, err := exec.LookPath("taskset"); err == nil {
			b.serverCPU = strconv.Itoa(n - 1)
		}
	}
	if err := b.build(); err != nil {
		return err
	}
	b.sink, err = startSink()
	if err != nil {
		return err
	}
	base := []string{"PATH=" + os.Getenv("PATH"), "GOMAXPROCS=1"}
	var extraKubeskel []string
	if *kubeskelEnv != "" {
		extraKubeskel = strings.Split(*kubeskelEnv, ",")
		for _, kv := range extraKubeskel {
			if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
				return fmt.Errorf("-kubeskel-env: %q is not VAR=value", kv)
			}
		}
	}
	ksEnv := func(extra ...string) func(int, int) []string {
		return func(hp, ap int) []string {
			return append(slices.Clone(base), append([]string{
				fmt.Sprintf("APP_HTTP_ADDR=127.0.0.1:%d", hp),
				fmt.Sprintf("APP_ADMIN_ADDR=127.0.0.1:%d", ap),
				"APP_PRESTOP_DELAY=0",
			}, slices.Concat(extra, extraKubeskel)...)...)
		}
	}
	b.variants = []variant{
		{name: "bare (net/http zero settings)", bin: b.bare, env: func(hp, _ int) []string {
			return append(slices.Clone(base), fmt.Sprintf("BARE_ADDR=127.0.0.1:%d", hp))
		}},
		{name: "kubeskel defaults (tracing off)", bin: b.ks, kubeskel: true, env: ksEnv()},
		{name: "kubeskel all on (tracing 100% + metrics + request log)", bin: b.ks, kubeskel: true, env: ksEnv(
			"OTEL_TRACES_EXPORTER=otlp",
			"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+b.sink.addr,
			"OTEL_TRACES_SAMPLER=always_on",
			"APP_REQUEST_LOG=true",
		)},
	}

	b.machine()
	sections := map[string]func() error{
		"size": b.sizes, "throughput": b.throughputMatrix, "pprof": b.pprof, "perf": b.perf, "h2": b.h2, "grpc": b.grpc, "callgrind": b.callgrind,
		"startup": b.startup, "shutdown": b.shutdown, "probe": b.probe, "profile": b.profile, "h2pprof": b.h2pprof,
		"syscalls": b.syscalls,
	}
	for _, name := range []string{"size", "throughput", "pprof", "perf", "syscalls", "h2", "h2pprof", "grpc", "callgrind", "profile", "startup", "shutdown", "probe"} {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s\n", name)
		if err := sections[name](); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	fmt.Fprintf(b.out, "\nOTLP sink received %d export requests (%d bytes) and discarded them.\n", b.sink.requests.Load(), b.sink.bytes.Load())
	return nil
}

// moduleRoot is the directory of the root go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// build compiles both servers with the contract's release flags.
func (b *bench) build() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b.bare, b.ks = filepath.Join(b.dir, "bare"), filepath.Join(b.dir, "kubeskel")
	b.bareSyms, b.ksSyms = filepath.Join(b.dir, "bare-syms"), filepath.Join(b.dir, "kubeskel-syms")
	b.barePprof = filepath.Join(b.dir, "bare-pprof")
	for _, t := range [][4]string{
		{b.bare, "./test/bench/bare", "-s -w", ""}, {b.ks, "./cmd/kubeskel", "-s -w", ""},
		{b.bareSyms, "./test/bench/bare", "", ""}, {b.ksSyms, "./cmd/kubeskel", "", ""},
		{b.barePprof, "./test/bench/bare", "-s -w", "benchpprof"},
	} {
		// The unstripped build is for symbol sizes and callgrind profiles;
		// the benchpprof one serves BARE_PPROF_ADDR for the pprof section.
		cmd := exec.Command("go", "build", "-trimpath", "-tags", t[3], "-ldflags", t[2], "-o", t[0], t[1])
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", t[1], err, out)
		}
	}
	return nil
}

func (b *bench) machine() {
	cpu := "unknown"
	if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(f); m != nil {
			cpu = string(m[1])
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	gov, _ := exec.Command("go", "version").Output()
	wrkv, _ := exec.Command("wrk", "-v").CombinedOutput()
	fmt.Fprintf(b.out, "## Machine\n\n- nproc: %d\n- CPU: %s\n- kernel: %s\n- %s\n- %s\n- servers pinned to CPU %q with GOMAXPROCS=1; wrk, callgrind clients and probes on the others\n",
		runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), strings.TrimSpace(string(gov)),
		strings.SplitN(strings.TrimSpace(string(wrkv)), "\n", 2)[0], b.serverCPU)
	if *kubeskelEnv != "" {
		fmt.Fprintf(b.out, "- **every kubeskel variant also runs with %s** (-kubeskel-env)\n", *kubeskelEnv)
	}
}

// proc is a server under test.
type proc struct {
	cmd       *exec.Cmd
	httpPort  int
	adminPort int
	started   time.Time
	exited    chan struct{}
	waitErr   error
	stderr    tail // the end of standard error, unless startLogging was given a writer
}

// tail keeps the last tailSize bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 2048

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// start execs v on fresh loopback ports, pinned to the server CPU. extraEnv
// overrides v's environment. With wrap, the binary runs under that command
// (valgrind).
func (b *bench) start(v variant, extraEnv []string, wrap ...string) (*proc, error) {
	return b.startLogging(v, extraEnv, nil, wrap...)
}

// startLogging is start with the server's standard error written to
// stderr (GODEBUG traces); nil discards it.
func (b *bench) startLogging(v variant, extraEnv []string, stderr io.Writer, wrap ...string) (*proc, error) {
	p := &proc{httpPort: b.freePort(), adminPort: b.freePort(), exited: make(chan struct{})}
	args := append(slices.Clone(wrap), v.bin)
	if b.serverCPU != "" {
		args = append([]string{"taskset", "-c", b.serverCPU}, args...)
	}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Env = append(v.env(p.httpPort, p.adminPort), extraEnv...)
	// Logs (and the request log) go nowhere: the cost of producing them is
	// measured, not the cost of a terminal. Standard error (where a server
	// says why it could not start) is kept for the error, unless the
	// caller takes it.
	p.cmd.Stdout, p.cmd.Stderr = nil, stderr
	if stderr == nil {
		p.cmd.Stderr = &p.stderr
	}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

// readyURL is what says the process is ready: /ready on kubeskel's admin
// port, the first 200 from GET / for bare.
func (p *proc) readyURL(v variant) string {
	if v.kubeskel {
		return fmt.Sprintf("http://127.0.0.1:%d/ready", p.adminPort)
	}
	return p.url()
}

func (p *proc) url() string { return fmt.Sprintf("http://127.0.0.1:%d/", p.httpPort) }

// httpGet is client.Get(url) spelled out: Client.Get builds exactly this
// request (http.NewRequest uses context.Background()) and calls Do, so what
// is measured through it is unchanged. The caller closes the body.
func httpGet(client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// waitOK polls url until 200 and returns the time since the process started.
func (p *proc) waitOK(url string, timeout time.Duration) (time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		if err != nil {
			return 0, fmt.Errorf("GET %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		select {
		case <-p.exited:
			return 0, fmt.Errorf("%s exited before %s answered 200: %w; its standard error ends: %q", p.cmd.Path, url, p.waitErr, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("answered, but not 200")
			}
			return 0, fmt.Errorf("%s: no 200 within %v (last error %w)", url, timeout, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// stop sends SIGTERM and waits; after timeout it kills.
func (p *proc) stop(timeout time.Duration) time.Duration {
	t0 := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.exited
	}
	return time.Since(t0)
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// rss is resident memory in KiB: total, anonymous (heap, stacks: private to
// the process) and file-backed (pages of the binary, shared and reclaimable
// page cache).
type rss struct{ total, anon, file int }

func (r rss) String() string {
	return fmt.Sprintf("%.1f (anon %.1f + file %.1f)", float64(r.total)/1024, float64(r.anon)/1024, float64(r.file)/1024)
}

func (p *proc) rss() rss {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return rss{}
	}
	get := func(key string) int {
		m := regexp.MustCompile(`(?m)^` + key + `:\s+(\d+) kB`).FindSubmatch(f)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return rss{get("VmRSS"), get("RssAnon"), get("RssFile")}
}

// cpuTime is the process's user+system CPU time (/proc/PID/stat fields 14
// and 15, in clock ticks of 10ms).
func (p *proc) cpuTime() time.Duration {
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(f[bytes.LastIndexByte(f, ')')+2:]))
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

func (b *bench) freePort() int {
	for {
		l, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		// The kernel may hand out a port again once it is closed: one given
		// to a server that has not bound it yet (its HTTP and admin ports,
		// say) must not go to another.
		if !b.ports[port] {
			b.ports[port] = true
			return port
		}
	}
}

// ---- binary size ----

func (b *bench) sizes() error {
	fmt.Fprintf(b.out, "\n## Binary size (CGO_ENABLED=0 -trimpath -ldflags \"-s -w\")\n\n| binary | bytes | MB |\n|---|---:|---:|\n")
	for _, f := range []string{b.bare, b.ks} {
		st, err := os.Stat(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(b.out, "| %s | %d | %.1f |\n", filepath.Base(f), st.Size(), float64(st.Size())/1e6)
	}
	// Where the bytes go: symbol sizes by module from an unstripped build.
	out, err := exec.Command("go", "tool", "nm", "-size", b.ksSyms).Output()
	if err != nil {
		return err
	}
	bySrc := map[string]int{}
	total := 0
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		size, err := strconv.Atoi(f[1])
		// Code and read-only data only: Go's nm reports BSS as "D" too
		// (crypto/internal/fips140/drbg.memory alone is 32 MiB of it), and
		// BSS takes no room in the file.
		if err != nil || !slices.Contains([]string{"T", "t", "R", "r"}, f[2]) {
			continue
		}
		total += size
		bySrc[symbolModule(strings.Join(f[3:], " "))] += size
	}
	type kv struct {
		k string
		v int
	}
	var rows []kv
	for k, v := range bySrc {
		rows = append(rows, kv{k, v})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].v > rows[j].v })
	fmt.Fprintf(b.out, "\nCode and read-only data by origin (go tool nm -size, symbols of type T/t/R/r of an unstripped build; %.1f MB in all; the rest of the file is pclntab, data and headers):\n\n| origin | MB |\n|---|---:|\n", float64(total)/1e6)
	for _, r := range rows[:min(12, len(rows))] {
		fmt.Fprintf(b.out, "| %s | %.2f |\n", r.k, float64(r.v)/1e6)
	}
	return nil
}

// symbolModule groups a symbol name by module (or standard-library tree).
func symbolModule(sym string) string {
	sym = strings.TrimPrefix(sym, "type:")
	sym = strings.TrimPrefix(sym, "go:itab.")
	sym = strings.TrimLeft(sym, "*")
	pkg := sym
	if i := strings.IndexByte(sym[strings.LastIndexByte(sym, '/')+1:], '.'); i >= 0 {
		pkg = sym[:strings.LastIndexByte(sym, '/')+1+i]
	}
	for _, prefix := range []string{
		"go.opentelemetry.io/otel/exporters/otlp", "go.opentelemetry.io/otel/exporters",
		"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/proto", "go.opentelemetry.io/contrib",
		"go.opentelemetry.io/otel", "google.golang.org/grpc", "google.golang.org/protobuf",
		"google.golang.org/genproto", "github.com/grpc-ecosystem", "github.com/prometheus",
		"golang.org/x/net", "golang.org/x/text", "golang.org/x/sys", "github.com/kubeskel",
	} {
		if strings.HasPrefix(pkg, prefix) {
			return prefix
		}
	}
	parts := strings.Split(pkg, "/")
	if strings.Contains(parts[0], ".") && len(parts) >= 3 {
		return strings.Join(parts[:3], "/")
	}
	if strings.HasPrefix(pkg, "go:") || !strings.Contains(sym, ".") {
		return "(runtime tables: " + pkg + ")"
	}
	return "std " + parts[0]
}

// ---- throughput ----

type wrkResult struct {
	rps      float64
	requests float64
	p50, p99 time.Duration
	rssAfter rss
	// cpuPerReq is the server's own CPU time (user+system) per request:
	// unlike req/s it hardly moves when other processes share the machine.
	cpuPerReq time.Duration
}

var (
	reReqs = regexp.MustCompile(`(\d+) requests in`)
	reRPS  = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reLat  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
)

// wrk runs wrk with one thread against url from the non-server CPUs (on
// every CPU when the server is not pinned).
func (b *bench) wrk(url string, d time.Duration, c int) (wrkResult, error) {
	return b.wrkThreads(url, d, c, 1)
}

func (b *bench) wrkThreads(url string, d time.Duration, c, threads int) (wrkResult, error) {
	args := []string{"wrk", fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", c), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", url}
	if b.serverCPU != "" {
		args = append([]string{"taskset", "-c", "0-" + strconv.Itoa(runtime.NumCPU()-2)}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	var r wrkResult
	m := reRPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	if m := reReqs.FindSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if bytes.Contains(out, []byte("Non-2xx")) || bytes.Contains(out, []byte("Socket errors")) {
		return r, fmt.Errorf("wrk saw errors:\n%s", out)
	}
	for _, m := range reLat.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[2]), 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[string(m[3])]
		d := time.Duration(v * float64(unit))
		if string(m[1]) == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	return r, nil
}

// h2loadResult is what one h2load run measured.
type h2loadResult struct {
	rps, succeeded float64
	cpuPerReq      time.Duration // server CPU per request, as in wrkResult
}

var (
	reH2RPS  = regexp.MustCompile(`finished in [\d.]+m?s, ([\d.]+) req/s`)
	reH2Reqs = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Code = regexp.MustCompile(`status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
)

// h2load runs h2load (cleartext HTTP/2 with prior knowledge, the default
// for http:// URLs) against url from the non-server CPUs, and fails unless
// it spoke h2c and every request succeeded with a 2xx.
func (b *bench) h2load(url string, d time.Duration) (h2loadResult, error) {
	args := []string{"h2load", "-c", strconv.Itoa(*h2Conns), "-m", strconv.Itoa(*h2Streams), "-D", strconv.Itoa(int(d.Seconds())), url}
	if b.serverCPU != "" {
		args = append([]string{"taskset", "-c", "0-" + strconv.Itoa(runtime.NumCPU()-2)}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return h2loadResult{}, fmt.Errorf("h2load: %w\n%s", err, out)
	}
	var r h2loadResult
	m := reH2RPS.FindSubmatch(out)
	reqs := reH2Reqs.FindSubmatch(out)
	codes := reH2Code.FindSubmatch(out)
	if m == nil || reqs == nil || codes == nil || !bytes.Contains(out, []byte("Application protocol: h2c")) {
		return r, fmt.Errorf("h2load output lacks req/s, request counts, status codes or \"Application protocol: h2c\":\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	r.succeeded, _ = strconv.ParseFloat(string(reqs[1]), 64)
	for _, n := range append(reqs[2:], codes[1:]...) {
		if string(n) != "0" {
			return r, fmt.Errorf("h2load saw failed, errored, timed out or non-2xx requests:\n%s", out)
		}
	}
	return r, nil
}

// h2 compares HTTP/2 throughput: kubeskel's h2c (on by default) against the
// bare server with BARE_H2C=1, alternating within each repetition.
func (b *bench) h2() error {
	if _, err := exec.LookPath("h2load"); err != nil {
		return fmt.Errorf("h2load not found: apt-get install nghttp2-client")
	}
	results := make([][]h2loadResult, len(b.variants))
	for rep := 0; rep < *reps; rep++ {
		for i, v := range b.variants {
			var extra []string
			if !v.kubeskel {
				extra = []string{"BARE_H2C=1"}
			}
			p, err := b.start(v, extra)
			if err != nil {
				return err
			}
			if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
				p.kill()
				return err
			}
			if _, err := b.h2load(p.url(), time.Second); err != nil { // warm-up
				p.kill()
				return err
			}
			cpu0 := p.cpuTime()
			r, err := b.h2load(p.url(), *duration)
			if r.succeeded > 0 {
				r.cpuPerReq = time.Duration(float64(p.cpuTime()-cpu0) / r.succeeded)
			}
			p.stop(30 * time.Second)
			if err != nil {
				return err
			}
			results[i] = append(results[i], r)
			fmt.Fprintf(os.Stderr, "  rep %d %s h2c: %.0f req/s\n", rep+1, v.name, r.rps)
		}
	}
	fmt.Fprintf(b.out, "\n## HTTP/2 throughput, GET / over h2c (h2load -c %d -m %d, %v runs, %d repetitions alternating)\n\n", *h2Conns, *h2Streams, *duration, *reps)
	fmt.Fprintf(b.out, "| variant | req/s median (min–max) | × bare (median of per-repetition ratios) | server CPU µs/request median (min–max) | bare ÷ this (median of per-repetition ratios) |\n|---|---:|---:|---:|---:|\n")
	for i, v := range b.variants {
		rps := field(results[i], func(r h2loadResult) float64 { return r.rps })
		cpu := field(results[i], func(r h2loadResult) float64 { return float64(r.cpuPerReq) / 1e3 })
		var rpsRatio, cpuRatio []float64
		for rep := range results[i] {
			rpsRatio = append(rpsRatio, results[i][rep].rps/results[0][rep].rps)
			cpuRatio = append(cpuRatio, float64(results[0][rep].cpuPerReq)/float64(results[i][rep].cpuPerReq))
		}
		name := v.name
		if !v.kubeskel {
			name += " (BARE_H2C=1)"
		}
		fmt.Fprintf(b.out, "| %s | %.0f (%.0f–%.0f) | %.2f (%.2f–%.2f) | %.1f (%.1f–%.1f) | %.2f (%.2f–%.2f) |\n", name,
			median(rps), slices.Min(rps), slices.Max(rps), median(rpsRatio), slices.Min(rpsRatio), slices.Max(rpsRatio),
			median(cpu), slices.Min(cpu), slices.Max(cpu), median(cpuRatio), slices.Min(cpuRatio), slices.Max(cpuRatio))
	}
	fmt.Fprintf(b.out, "\n| target | measured | |\n|---|---:|---|\n")
	printFloor(b.out, "HTTP/2 req/s, tracing off ≥ 0.95× bare h2c (pinned)", median(ratiosH2(results, 1)), 0.95)
	return nil
}

func ratiosH2(results [][]h2loadResult, i int) []float64 {
	var out []float64
	for rep := range results[i] {
		out = append(out, results[i][rep].rps/results[0][rep].rps)
	}
	return out
}

// printFloor prints a target row: met when measured ≥ floor.
func printFloor(w io.Writer, name string, measured, floor float64) {
	verdict := "met"
	if measured < floor {
		verdict = "**missed**"
	}
	fmt.Fprintf(w, "| %s | %.2f× | %s |\n", name, measured, verdict)
}

// ---- callgrind ----

var reSummary = regexp.MustCompile(`(?m)^summary:\s+(\d+)`)

// callgrindOnce runs v under callgrind and returns the instructions of
// start-up (exec to ready) and the instructions per keep-alive request.
//
// Callgrind (3.19) aborts on the SIGTERM a Go binary handles (assertion in
// vgCallgrind_post_signal), so there is no clean exit to dump at. Instead the
// counters are dumped with callgrind_control while the process runs: dump 1
// at ready, dump 2 after a warm-up, dump 3 after n more requests. A dump
// resets the counters, so dump 3 holds exactly the n requests: the same
// subtraction as "n-request run minus start-up-only run", without run-to-run
// noise (the profile section does the two-run subtraction with cachegrind).
func (b *bench) callgrindOnce(v variant, n int) (startup, perReq float64, err error) {
	return b.callgrindWith(v, n, nil, httpDriver)
}

// httpDriver sends count sequential GET / on one keep-alive connection.
func httpDriver(p *proc) (drive func(count int) error, done func(), err error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	get := func(count int) error {
		for i := 0; i < count; i++ {
			resp, err := httpGet(client, p.url())
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET / = %d", resp.StatusCode)
			}
		}
		return nil
	}
	return get, client.CloseIdleConnections, nil
}

// valgrindGODEBUG is the Go runtime's setting under valgrind 3.19: no
// asynchronous preemption (its signals upset callgrind's bookkeeping) and no
// RDTSCP, which valgrind cannot decode and the runtime's cputicks uses where
// the CPU has it (the program dies of SIGILL on its first lock otherwise).
const valgrindGODEBUG = "GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off"

// callgrindWith is callgrindOnce with extra environment and a driver that
// sends count requests of the protocol under test to p, sequentially.
func (b *bench) callgrindWith(v variant, n int, extraEnv []string, driver func(*proc) (func(int) error, func(), error)) (startup, perReq float64, err error) {
	out := filepath.Join(b.dir, "callgrind.out")
	files, _ := filepath.Glob(out + "*")
	for _, f := range files {
		os.Remove(f)
	}
	var seenDumps []string
	p, err := b.start(v, append([]string{valgrindGODEBUG}, extraEnv...),
		"valgrind", "--tool=callgrind", "--callgrind-out-file="+out)
	if err != nil {
		return 0, 0, err
	}
	defer p.kill()
	if _, err := p.waitOK(p.readyURL(v), 60*time.Second); err != nil {
		return 0, 0, err
	}
	get, done, err := driver(p)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	dump := func() (float64, error) {
		// valgrind is the process taskset exec'd into, so the pid is the same.
		if out, err := exec.Command("callgrind_control", "-d", strconv.Itoa(p.cmd.Process.Pid)).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("callgrind_control: %w\n%s", err, out)
		}
		// The dump is written asynchronously; poll for the newest file.
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			files, _ := filepath.Glob(out + ".*")
			sort.Slice(files, func(i, j int) bool { return dumpIndex(files[i]) < dumpIndex(files[j]) })
			if len(files) > 0 {
				data, _ := os.ReadFile(files[len(files)-1])
				if m := reSummary.FindSubmatch(data); m != nil && !slices.Contains(seenDumps, files[len(files)-1]) {
					seenDumps = append(seenDumps, files[len(files)-1])
					f, _ := strconv.ParseFloat(string(m[1]), 64)
					return f, nil
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		return 0, errors.New("callgrind dump did not appear")
	}
	// Dump 1: exec to ready. Then warm up the connection and lazy
	// initialisation (first request of a route, pools) and drop those
	// counts, so dump 3 is the steady state.
	if startup, err = dump(); err != nil {
		return 0, 0, err
	}
	if err := get(200); err != nil {
		return 0, 0, err
	}
	if _, err = dump(); err != nil {
		return 0, 0, err
	}
	if err := get(n); err != nil {
		return 0, 0, err
	}
	total, err := dump()
	if err != nil {
		return 0, 0, err
	}
	return startup, total / float64(n), nil
}

func dumpIndex(f string) int {
	n, _ := strconv.Atoi(f[strings.LastIndexByte(f, '.')+1:])
	return n
}

// allOnPart returns the "all on" variant without the variable prefixed
// drop: one part of what "all on" turns on.
func (b *bench) allOnPart(name, drop string) variant {
	all := b.variants[2]
	v := all
	v.name = name
	v.env = func(hp, ap int) []string {
		return slices.DeleteFunc(all.env(hp, ap), func(s string) bool { return strings.HasPrefix(s, drop) })
	}
	return v
}

func (b *bench) callgrind() error {
	// Two more variants split "all on" into its parts.
	all := b.variants[2]
	parts := b.allOnPart
	// And one that trades memory for GC work, to size that knob.
	gogc := all
	gogc.name = "kubeskel all on, GOGC=400"
	gogc.env = func(hp, ap int) []string { return append(all.env(hp, ap), "GOGC=400") }
	// And bare with kubeskel's http.Server settings, so the settings' cost
	// (the deadline timers they arm) and the skeleton's are reported apart.
	settings := withEnv(b.variants[0], "bare, kubeskel's http.Server settings (BARE_SETTINGS=1)", "BARE_SETTINGS=1")
	// And tracing with export batches a quarter of the default size: less
	// live heap for the collector to mark (spans queued and their protobuf
	// form while exported), against four times the export requests.
	tracing := parts("kubeskel tracing 100% only", "APP_REQUEST_LOG=")
	variants := append(slices.Clone(b.variants),
		tracing,
		parts("kubeskel request log only", "OTEL_TRACES_EXPORTER="),
		gogc, settings,
		withEnv(tracing, "kubeskel tracing 100% only, OTEL_BSP_MAX_EXPORT_BATCH_SIZE=128", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=128"))
	const iDefaults, iTracing, iSettings = 1, 3, 6 // indices in variants
	per := make([][]float64, len(variants))
	start := make([][]float64, len(variants))
	cgReps := max(3, *reps/2)
	for rep := 0; rep < cgReps; rep++ {
		for i, v := range variants {
			s, r, err := b.callgrindOnce(v, *cgRequests)
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			per[i] = append(per[i], r)
			start[i] = append(start[i], s)
			fmt.Fprintf(os.Stderr, "  rep %d %s: %.0f instr/request\n", rep+1, v.name, r)
		}
	}
	fmt.Fprintf(b.out, "\n## User-space instructions per request (callgrind, %s, %d keep-alive GET / per run, %d runs)\n\n", valgrindGODEBUG, *cgRequests, cgReps)
	fmt.Fprintf(b.out, "| variant | instr/request median (min–max) | × bare | instr exec → ready (start-up) |\n|---|---:|---:|---:|\n")
	bare := median(per[0])
	for i, v := range variants {
		fmt.Fprintf(b.out, "| %s | %.0f (%.0f–%.0f) | %.2f | %.1fM |\n", v.name, median(per[i]), slices.Min(per[i]), slices.Max(per[i]), median(per[i])/bare, median(start[i])/1e6)
	}
	// The targets of the concurrency issue: defaults and tracing 100% only.
	fmt.Fprintf(b.out, "\n| target | measured | |\n|---|---:|---|\n")
	for _, t := range []struct {
		name    string
		i       int
		ceiling float64
	}{{"instructions/request, tracing off ≤ 1.1× bare", iDefaults, 1.1}, {"instructions/request, tracing 100% over OTLP ≤ 2.0× bare", iTracing, 2.0}} {
		m := median(per[t.i]) / bare
		verdict := "met"
		if m > t.ceiling {
			verdict = "**missed**"
		}
		fmt.Fprintf(b.out, "| %s | %.2f× | %s |\n", t.name, m, verdict)
	}
	withSettings := median(per[iSettings])
	fmt.Fprintf(b.out, "\nReported, no target: kubeskel's settings cost bare %.2f× its instructions; kubeskel defaults are %.2f× bare with those settings, tracing 100%% only %.2f×.\n",
		withSettings/bare, median(per[iDefaults])/withSettings, median(per[iTracing])/withSettings)
	return nil
}

// ---- profile ----

// profile attributes the per-request instructions to packages. Callgrind's
// per-function costs are unusable with Go (its goroutine stack switches make
// callgrind count cycles many times over, >100% for one function), so this
// uses cachegrind, which counts flat per-function instructions and, unlike
// callgrind, survives the SIGTERM: a run with n requests minus a run with
// none (cg_diff), both after the same start-up and warm-up, divided by n.
// Unstripped binaries, for the symbols.
func (b *bench) profile() error {
	// bare, defaults, all on, then all on's two parts: the function tables
	// below compare each part with defaults.
	variants := append(slices.Clone(b.variants),
		b.allOnPart("kubeskel tracing 100% only", "APP_REQUEST_LOG="),
		b.allOnPart("kubeskel request log only", "OTEL_TRACES_EXPORTER="))
	byVariant := make([]map[string]float64, len(variants))
	byFunc := make([]map[string]float64, len(variants))
	totals := make([]float64, len(variants))
	keys := map[string]bool{}
	n := *cgRequests
	for i, v := range variants {
		v.bin = b.ksSyms
		if !v.kubeskel {
			v.bin = b.bareSyms
		}
		zero, err := b.cachegrindOnce(v, 0, fmt.Sprintf("cg-%d-zero.out", i))
		if err != nil {
			return err
		}
		full, err := b.cachegrindOnce(v, n, fmt.Sprintf("cg-%d-full.out", i))
		if err != nil {
			return err
		}
		diff := filepath.Join(b.dir, fmt.Sprintf("cg-%d-diff.out", i))
		if out, err := exec.Command("cg_diff", "--mod-filename=s/.*//", zero, full).Output(); err != nil {
			return fmt.Errorf("cg_diff: %w", err)
		} else if err := os.WriteFile(diff, out, 0o644); err != nil {
			return err
		}
		out, err := exec.Command("cg_annotate", "--threshold=0", "--auto=no", diff).Output()
		if err != nil {
			return fmt.Errorf("cg_annotate: %w", err)
		}
		byVariant[i], byFunc[i] = map[string]float64{}, map[string]float64{}
		re := regexp.MustCompile(`^\s*(-?[\d,]+)\s+\(\s*-?[\d.]+%\)\s+\S*?:(\S+)`)
		for _, line := range strings.Split(string(out), "\n") {
			m := re.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			ir, _ := strconv.ParseFloat(strings.ReplaceAll(m[1], ",", ""), 64)
			pkg := profilePackage(m[2])
			byVariant[i][pkg] += ir / float64(n)
			byFunc[i][m[2]] += ir / float64(n)
			totals[i] += ir / float64(n)
			keys[pkg] = true
		}
		fmt.Fprintf(os.Stderr, "  %s: %.0f instr/request (cachegrind)\n", v.name, totals[i])
	}
	var pkgs []string
	for k := range keys {
		pkgs = append(pkgs, k)
	}
	const allOn = 2
	sort.Slice(pkgs, func(i, j int) bool { return byVariant[allOn][pkgs[i]] > byVariant[allOn][pkgs[j]] })
	fmt.Fprintf(b.out, "\n## Where the instructions go: instructions per request by package (cachegrind: run with %d requests minus run with none)\n\n| package |", n)
	for _, v := range variants {
		fmt.Fprintf(b.out, " %s |", v.name)
	}
	fmt.Fprintf(b.out, "\n|---|%s\n| **total** |", strings.Repeat("---:|", len(variants)))
	for i := range variants {
		fmt.Fprintf(b.out, " **%.0f** |", totals[i])
	}
	fmt.Fprintln(b.out)
	for _, p := range pkgs[:min(26, len(pkgs))] {
		fmt.Fprintf(b.out, "| %s |", p)
		for i := range variants {
			fmt.Fprintf(b.out, " %.0f |", byVariant[i][p])
		}
		fmt.Fprintln(b.out)
	}
	b.printFuncDiff(byFunc[0], byFunc[1], variants[0].name, variants[1].name)
	b.printFuncDiff(byFunc[1], byFunc[3], variants[1].name, variants[3].name)
	b.printFuncDiff(byFunc[1], byFunc[4], variants[1].name, variants[4].name)
	return nil
}

// printFuncDiff lists the functions whose instructions per request differ
// most between two variants (cost minus base, largest difference first,
// either sign): where the extra instructions of one over the other go,
// function by function.
func (b *bench) printFuncDiff(base, cost map[string]float64, baseName, costName string) {
	type fd struct {
		fn         string
		base, cost float64
	}
	var ds []fd
	for fn, c := range cost {
		ds = append(ds, fd{fn, base[fn], c})
	}
	for fn, c := range base {
		if _, ok := cost[fn]; !ok {
			ds = append(ds, fd{fn, c, 0})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return math.Abs(ds[i].cost-ds[i].base) > math.Abs(ds[j].cost-ds[j].base) })
	fmt.Fprintf(b.out, "\n## Functions that differ most per request: %s minus %s (same cachegrind runs)\n\n| function | %s | %s | difference |\n|---|---:|---:|---:|\n", costName, baseName, baseName, costName)
	for _, d := range ds[:min(30, len(ds))] {
		fmt.Fprintf(b.out, "| `%s` | %.0f | %.0f | %+.0f |\n", d.fn, d.base, d.cost, d.cost-d.base)
	}
}

// cachegrindOnce runs v under cachegrind: start-up, 200 warm-up requests, n
// counted requests, SIGTERM. It returns the output file.
func (b *bench) cachegrindOnce(v variant, n int, name string) (string, error) {
	out := filepath.Join(b.dir, name)
	p, err := b.start(v, []string{valgrindGODEBUG},
		"valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file="+out)
	if err != nil {
		return "", err
	}
	defer p.kill()
	if _, err := p.waitOK(p.readyURL(v), 60*time.Second); err != nil {
		return "", err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
	for i := 0; i < 200+n; i++ {
		resp, err := httpGet(client, p.url())
		if err != nil {
			return "", err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	client.CloseIdleConnections()
	p.stop(60 * time.Second)
	if _, err := os.Stat(out); err != nil {
		return "", fmt.Errorf("cachegrind wrote no output for %s: %w", v.name, err)
	}
	return out, nil
}

// profilePackage names the package of a function symbol, keeping module
// paths short.
func profilePackage(fn string) string {
	slash := strings.LastIndexByte(fn, '/') + 1
	pkg := fn
	if i := strings.IndexByte(fn[slash:], '.'); i >= 0 {
		pkg = fn[:slash+i]
	}
	for _, prefix := range []string{"go.opentelemetry.io/otel/sdk/trace", "go.opentelemetry.io/otel/exporters",
		"go.opentelemetry.io/proto", "google.golang.org/protobuf", "github.com/prometheus"} {
		if strings.HasPrefix(pkg, prefix) {
			return prefix
		}
	}
	if pkg == "runtime" {
		// Split the runtime by what the skeleton makes it do.
		name := fn[len("runtime."):]
		switch {
		case strings.Contains(name, "alloc") || strings.Contains(name, "HeapBits") || strings.Contains(name, "nextFree") ||
			strings.Contains(name, "memclr") || strings.Contains(name, "newobject") || strings.Contains(name, "makeslice") ||
			strings.Contains(name, "growslice") || strings.Contains(name, "mcache") || strings.Contains(name, "mcentral"):
			return "runtime: allocation"
		case strings.Contains(name, "gc") || strings.Contains(name, "scan") || strings.Contains(name, "mark") ||
			strings.Contains(name, "sweep") || strings.Contains(name, "grey") || strings.Contains(name, "findObject") ||
			strings.Contains(name, "spanOf") || strings.Contains(name, "wbBuf") || strings.Contains(name, "Barrier"):
			return "runtime: GC"
		}
		return "runtime: other (scheduler, netpoll, syscalls, memmove)"
	}
	if strings.HasPrefix(pkg, "go.opentelemetry.io/otel") {
		return "go.opentelemetry.io/otel (api, attribute, semconv)"
	}
	return pkg
}

// ---- start-up ----

func (b *bench) startup() error {
	fmt.Fprintf(b.out, "\n## Start-up: exec to first 200 (%d starts each)\n\n| variant | URL | median | min | max |\n|---|---|---:|---:|---:|\n", *starts)
	type row struct {
		v    variant
		what string
	}
	rows := []row{{b.variants[0], "GET / (traffic)"}, {b.variants[1], "GET /ready (admin)"}, {b.variants[1], "GET / (traffic)"}, {b.variants[2], "GET /ready (admin)"}}
	medians := make([]float64, len(rows))
	defer func() {
		if medians[0] > 0 && medians[1] > 0 {
			ratio := medians[1] / medians[0]
			verdict := "met"
			if ratio > 1.5 {
				verdict = "**missed**"
			}
			fmt.Fprintf(b.out, "\nTarget exec → /ready 200 ≤ 1.5× bare's exec → first 200: %.2f× (%v vs %v): %s.\n", ratio, dur(medians[1]), dur(medians[0]), verdict)
		}
	}()
	for ri, r := range rows {
		var ds []float64
		for i := 0; i < *starts; i++ {
			p, err := b.start(r.v, nil)
			if err != nil {
				return err
			}
			url := p.url()
			if strings.Contains(r.what, "ready") {
				url = p.readyURL(r.v)
			}
			d, err := p.waitOK(url, 10*time.Second)
			p.stop(10 * time.Second)
			if err != nil {
				return err
			}
			ds = append(ds, float64(d))
		}
		medians[ri] = median(ds)
		fmt.Fprintf(b.out, "| %s | %s | %v | %v | %v |\n", r.v.name, r.what, dur(median(ds)), dur(slices.Min(ds)), dur(slices.Max(ds)))
	}
	return nil
}

// ---- shutdown ----

func (b *bench) shutdown() error {
	const delay, quiet = time.Second, 200 * time.Millisecond
	fmt.Fprintf(b.out, "\n## Shutdown when idle: SIGTERM to exit (10 runs each)\n\n| variant | setting | median | max | median minus the configured wait |\n|---|---|---:|---:|---:|\n")
	cases := []struct {
		v    variant
		name string
		env  []string
		wait time.Duration
	}{
		{b.variants[0], "bare: Shutdown at once", nil, 0},
		{b.variants[1], "APP_PRESTOP_DELAY=0", []string{"APP_PRESTOP_DELAY=0"}, 0},
		{b.variants[1], "APP_PRESTOP_DELAY=1s", []string{"APP_PRESTOP_DELAY=1s"}, delay},
		{b.variants[1], "APP_PRESTOP_DELAY=5s, APP_PRESTOP_QUIET_PERIOD=200ms", []string{"APP_PRESTOP_DELAY=5s", "APP_PRESTOP_QUIET_PERIOD=200ms"}, quiet},
		{b.variants[2], "all on, APP_PRESTOP_DELAY=1s", []string{"APP_PRESTOP_DELAY=1s"}, delay},
	}
	for _, c := range cases {
		var ds []float64
		for i := 0; i < 10; i++ {
			p, err := b.start(c.v, c.env)
			if err != nil {
				return err
			}
			if _, err := p.waitOK(p.readyURL(c.v), 10*time.Second); err != nil {
				p.kill()
				return err
			}
			d := p.stop(30 * time.Second)
			if p.cmd.ProcessState.ExitCode() != 0 {
				return fmt.Errorf("%s (%s) exited %d", c.v.name, c.name, p.cmd.ProcessState.ExitCode())
			}
			ds = append(ds, float64(d))
		}
		fmt.Fprintf(b.out, "| %s | %s | %v | %v | %v |\n", c.v.name, c.name, dur(median(ds)), dur(slices.Max(ds)), dur(median(ds)-float64(c.wait)))
	}
	return nil
}

// ---- probe latency under load ----

func (b *bench) probe() error {
	fmt.Fprintf(b.out, "\n## Admin probe latency while the traffic port is saturated (GET /ready every 10 ms, keep-alive)\n\n| variant | server CPUs | traffic load | probes | p50 | p99 | max |\n|---|---|---|---:|---:|---:|---:|\n")
	for _, pinned := range []bool{true, false} {
		for _, load := range []bool{false, true} {
			v := b.variants[1]
			saved := b.serverCPU
			if !pinned {
				// As a pod without a CPU limit: every CPU, default GOMAXPROCS,
				// shared with wrk.
				b.serverCPU = ""
				v.env = func(hp, ap int) []string {
					return slices.DeleteFunc(b.variants[1].env(hp, ap), func(s string) bool { return s == "GOMAXPROCS=1" })
				}
			}
			p, err := b.start(v, nil)
			b.serverCPU = saved
			if err != nil {
				return err
			}
			if _, err := p.waitOK(p.readyURL(v), 10*time.Second); err != nil {
				p.kill()
				return err
			}
			ctx, cancel := context.WithCancel(context.Background())
			wrkDone := make(chan error, 1)
			if load {
				go func() { _, err := b.wrk(p.url(), 10*time.Second, 64); wrkDone <- err }()
				time.Sleep(time.Second) // let wrk saturate before probing
			} else {
				go func() { <-ctx.Done(); wrkDone <- nil }()
			}
			lat := probeLoop(fmt.Sprintf("http://127.0.0.1:%d/ready", p.adminPort), 800)
			cancel()
			err = <-wrkDone
			p.stop(10 * time.Second)
			if err != nil {
				return err
			}
			cpus := "1 (pinned, GOMAXPROCS=1)"
			if !pinned {
				cpus = fmt.Sprintf("%d shared with wrk", runtime.NumCPU())
			}
			loadName := "idle"
			if load {
				loadName = "wrk -c64 GET /"
			}
			fmt.Fprintf(b.out, "| %s | %s | %s | %d | %v | %v | %v |\n", v.name, cpus, loadName, len(lat),
				dur(percentile(lat, 50)), dur(percentile(lat, 99)), dur(slices.Max(lat)))
		}
	}
	return nil
}

// probeLoop sends n sequential probes, one every 10ms, over one keep-alive
// connection (the kubelet opens a new one per probe; accept latency is small
// next to scheduling). A failed or non-200 probe counts as 5s.
func probeLoop(url string, n int) []float64 {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	var lat []float64
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		t0 := time.Now()
		resp, err := httpGet(client, url)
		if err != nil {
			lat = append(lat, float64(5*time.Second)) // a failed probe counts as the timeout
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			lat = append(lat, float64(5*time.Second))
			continue
		}
		lat = append(lat, float64(time.Since(t0)))
	}
	return lat
}

// ---- OTLP sink ----

// otlpSink is an OTLP/HTTP endpoint that accepts and discards spans, so the
// "all on" variant pays for building and exporting spans but nothing waits
// on a collector.
type otlpSink struct {
	addr     string
	requests atomic.Int64
	bytes    atomic.Int64
}

func startSink() (*otlpSink, error) {
	l, err := new(net.ListenConfig).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{addr: l.Addr().String()}
	//nolint:errcheck // serves until the process exits; its error has no reader
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		// An empty ExportTraceServiceResponse is a valid empty protobuf message.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	return s, nil
}

// ---- helpers ----

func field[T any](xs []T, f func(T) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func median(xs []float64) float64 { return percentile(xs, 50) }

func percentile(xs []float64, p int) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if p == 50 && len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[(len(s)-1)*p/100]
}

// dur rounds a duration given in nanoseconds for display.
func dur(ns float64) time.Duration {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
