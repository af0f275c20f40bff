package main

// These tests build the real binary and run it as a separate process on
// 127.0.0.1:0 ports, with real signals, because the behaviour under test
// (exit codes, signals, the drain timeline) crosses the process boundary.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kubeskel-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "kubeskel")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kubeskel:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// process is a running kubeskel.
type process struct {
	t         *testing.T
	cmd       *exec.Cmd
	started   time.Time
	logs      *logLines
	stderr    *bytes.Buffer
	httpAddr  string
	adminAddr string
	exited    chan struct{}
	exitCode  int
	exitedAt  time.Time
}

// baseEnv is the environment of every test process: nothing inherited, so a
// developer's APP_* or OTEL_* variables cannot change the outcome.
func baseEnv(extra ...string) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(),
		"APP_HTTP_ADDR=127.0.0.1:0", "APP_ADMIN_ADDR=127.0.0.1:0"}
	return append(env, extra...)
}

// launch starts the binary and returns without waiting for anything.
func launch(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{t: t, logs: newLogLines(), stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = env
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{w: p.stderr}
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start kubeskel: %v", err)
	}
	go func() {
		// Read to EOF before Wait: Wait closes the pipe, and lines not yet
		// read would be lost.
		p.logs.read(stdout)
		err := p.cmd.Wait()
		p.exitedAt = time.Now()
		p.exitCode = p.cmd.ProcessState.ExitCode()
		if err != nil && p.exitCode == -1 {
			p.exitCode = 128 + int(p.cmd.ProcessState.Sys().(syscall.WaitStatus).Signal())
		}
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("kubeskel stdout:\n%s\nstderr:\n%s", p.logs.String(), p.stderrString())
		}
	})
	return p
}

// start launches kubeskel and waits until both listeners are bound and it
// reports ready.
func start(t *testing.T, extraEnv ...string) *process {
	t.Helper()
	p := launch(t, baseEnv(extraEnv...))
	p.httpAddr = p.waitLog(10*time.Second, "listening", "server", "http")["addr"].(string)
	p.adminAddr = p.waitLog(10*time.Second, "listening", "server", "admin")["addr"].(string)
	p.waitLog(10*time.Second, "phase", "phase", "ready")
	return p
}

func (p *process) stderrString() string {
	return p.stderr.String()
}

// waitLog waits for a JSON log record with the given msg whose attribute
// key equals value, and returns it.
func (p *process) waitLog(timeout time.Duration, msg, key, value string) map[string]any {
	p.t.Helper()
	rec, ok := p.logs.wait(timeout, func(r map[string]any) bool {
		return r["msg"] == msg && (key == "" || fmt.Sprint(r[key]) == value)
	})
	if !ok {
		p.t.Fatalf("no log record msg=%q %s=%q within %s", msg, key, value, timeout)
	}
	return rec
}

func (p *process) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", sig, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.exitCode
	case <-time.After(timeout):
		p.t.Fatalf("kubeskel did not exit within %s", timeout)
		return -1
	}
}

func (p *process) url(admin bool, path string) string {
	if admin {
		return "http://" + p.adminAddr + path
	}
	return "http://" + p.httpAddr + path
}

// logLines collects JSON log lines and lets tests wait for one.
type logLines struct {
	mu      sync.Mutex
	cond    *sync.Cond
	raw     []string
	records []map[string]any
	closed  bool
}

func newLogLines() *logLines {
	l := &logLines{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *logLines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		_ = json.Unmarshal(sc.Bytes(), &rec) // non-JSON lines are kept raw only
		l.mu.Lock()
		l.raw = append(l.raw, sc.Text())
		if rec != nil {
			l.records = append(l.records, rec)
		}
		l.cond.Broadcast()
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
}

func (l *logLines) wait(timeout time.Duration, match func(map[string]any) bool) (map[string]any, bool) {
	timer := time.AfterFunc(timeout, func() { l.mu.Lock(); l.closed = true; l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; ; {
		for ; i < len(l.records); i++ {
			if match(l.records[i]) {
				return l.records[i], true
			}
		}
		if l.closed {
			return nil, false
		}
		l.cond.Wait()
	}
}

// all returns the records matching match, in order.
func (l *logLines) all(match func(map[string]any) bool) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, r := range l.records {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}

// get does one request on a fresh connection and returns status, the
// Connection header and the body.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	// A keep-alive client, so that "Connection: close" comes from the server.
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	conn := resp.Header.Get("Connection")
	if resp.Close {
		conn = "close"
	}
	return resp.StatusCode, conn, string(body)
}

// httpGet is http.Get bound to ctx (the test's context, so a request left
// running is cancelled when the test ends).
func httpGet(ctx context.Context, url string) (*http.Response, error) {
	return httpGetWith(ctx, http.DefaultClient, url)
}

// httpGetWith is httpGet with client.
func httpGetWith(ctx context.Context, client *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return client.Do(req)
}

// noErr fails the test at once on err (a deadline that could not be set,
// say), so a later assertion does not fail for the wrong reason.
func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// busyPort occupies a loopback port for the duration of the test.
func busyPort(t *testing.T) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}
