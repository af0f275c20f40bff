//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// kubeskelBin is the binary under test, built once by TestMain.
var kubeskelBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if bin := os.Getenv("KUBESKEL_BIN"); bin != "" {
		kubeskelBin = bin
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "kubeskel-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kubeskelBin = filepath.Join(dir, "kubeskel")
	// The test runs in test/e2e; the module root is two levels up.
	build := exec.Command("go", "build", "-o", kubeskelBin, "./cmd/kubeskel")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/kubeskel: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// instanceSeq numbers the instances of the test binary.
var instanceSeq atomic.Int64

// instance is one running kubeskel process.
type instance struct {
	name      string // POD_NAME, unique in the test binary: GET / and /events name it
	cmd       *exec.Cmd
	httpAddr  string // from the "listening" log line
	adminAddr string
	slot      string // haproxy server slot, set by loadBalancer.add
	out       *lockedBuffer
	exited    chan struct{} // closed when the process has exited
	exitCode  int           // valid after exited is closed
	exitAt    time.Time
	termAt    time.Time
}

// startInstance starts kubeskel on kernel-chosen loopback ports and waits for
// both "listening" log lines, which carry the real addresses (contract: logged
// after the listeners are bound). env adds to a minimal APP_* environment.
func startInstance(t *testing.T, env map[string]string) *instance {
	t.Helper()
	cmd := exec.Command(kubeskelBin)
	cmd.SysProcAttr = dieWithTest()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "APP_HTTP_ADDR=127.0.0.1:0", "APP_ADMIN_ADDR=127.0.0.1:0"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	name := fmt.Sprintf("inst-%d", instanceSeq.Add(1))
	cmd.Env = append(cmd.Env, "POD_NAME="+name)
	inst := &instance{name: name, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = inst.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kubeskel: %v", err)
	}
	addrs := make(chan [2]string, 1)
	readDone := make(chan struct{})
	go func() { inst.readLog(stdout, addrs); close(readDone) }()
	go func() {
		<-readDone // Wait closes the pipe: read it to EOF first
		err := cmd.Wait()
		inst.exitAt = time.Now()
		inst.exitCode = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			inst.exitCode = ee.ExitCode() // -1 when killed by a signal
		} else if err != nil {
			inst.exitCode = -2
		}
		close(inst.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-inst.exited:
		default:
			_ = cmd.Process.Kill()
			<-inst.exited
		}
	})
	select {
	case a := <-addrs:
		inst.httpAddr, inst.adminAddr = a[0], a[1]
	case <-inst.exited:
		t.Fatalf("kubeskel exited %d at start:\n%s", inst.exitCode, inst.out.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("kubeskel did not log both listening lines within 10s:\n%s", inst.out.String())
	}
	return inst
}

// readLog copies stdout into inst.out and reports the two listening addresses.
func (inst *instance) readLog(r io.Reader, addrs chan<- [2]string) {
	var httpAddr, adminAddr string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		inst.out.Write(append(line, '\n'))
		var rec struct {
			Msg, Server, Addr string
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "listening" {
			continue
		}
		switch rec.Server {
		case "http":
			httpAddr = rec.Addr
		case "admin":
			adminAddr = rec.Addr
		}
		if httpAddr != "" && adminAddr != "" && addrs != nil {
			addrs <- [2]string{httpAddr, adminAddr}
			addrs = nil
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// waitReady polls GET /ready on the admin port until 200, as the kubelet's
// readiness probe gates a pod's entry into the endpoints.
func (inst *instance) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+inst.adminAddr+"/ready", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v (last: %v)\n%s", inst.httpAddr, timeout, err, inst.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (inst *instance) sigterm(t *testing.T) {
	t.Helper()
	inst.termAt = time.Now()
	if err := inst.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", inst.httpAddr, err)
	}
}

// waitExit waits for the process to exit and returns SIGTERM→exit; after
// timeout it kills the process and fails the test.
func (inst *instance) waitExit(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	select {
	case <-inst.exited:
		return inst.exitAt.Sub(inst.termAt)
	case <-time.After(timeout):
		_ = inst.cmd.Process.Kill()
		<-inst.exited
		t.Errorf("%s still running %v after SIGTERM; killed. log:\n%s", inst.httpAddr, timeout, tail(inst.out.String(), 20))
		return inst.exitAt.Sub(inst.termAt)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
