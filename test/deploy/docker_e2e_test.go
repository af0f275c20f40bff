//go:build e2e

package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Budget of the container run: short, so the test is quick, and checked
// against the logged phases.
const (
	dockerPreStopDelay  = 2 * time.Second
	dockerShutdown      = 3 * time.Second
	dockerFlush         = 500 * time.Millisecond
	dockerGrace         = 10 * time.Second // docker stop -t, the stand-in for terminationGracePeriodSeconds
	dockerImageVersion  = "e2e"
	dockerImage         = "kubeskel:e2e"
	dockerBuildDeadline = 15 * time.Minute
)

// TestDockerImage builds the real Dockerfile on local stand-in base images
// (no registry is reachable) and proves the image drains cleanly under
// `docker stop`: SIGTERM to PID 1, readiness 503 at once, traffic still
// served during the pre-stop delay, exit 0 within the budget.
func TestDockerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an image")
	}
	summary := &strings.Builder{}
	defer func() { t.Logf("summary:\n%s", summary) }()

	daemon := scriptVars(t, "hack/docker-daemon.sh", "start")
	t.Setenv("DOCKER_HOST", daemon["DOCKER_HOST"])
	if pid := daemon["DOCKERD_PID"]; pid != "" {
		t.Cleanup(func() { runScript(t, "hack/docker-daemon.sh", "stop", pid) })
	}
	bases := scriptVars(t, "hack/docker-base-images.sh")

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), dockerBuildDeadline)
	defer cancel()
	build := exec.CommandContext(ctx, "docker", "build", "--network", "host",
		"--build-arg", "BUILDER_IMAGE="+bases["BUILDER_IMAGE"],
		"--build-arg", "RUNTIME_IMAGE="+bases["RUNTIME_IMAGE"],
		"--build-arg", "VERSION="+dockerImageVersion,
		"--build-arg", "REVISION=test",
		"-t", dockerImage, ".")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	fmt.Fprintf(summary, "  build                %v (builder %s, runtime %s)\n", time.Since(start).Round(time.Second), bases["BUILDER_IMAGE"], bases["RUNTIME_IMAGE"])

	t.Run("config", func(t *testing.T) {
		var inspect []struct {
			Size   int64
			Config struct {
				User         string
				Entrypoint   []string
				Cmd          []string
				ExposedPorts map[string]struct{}
				Labels       map[string]string
				Healthcheck  struct{ Test []string }
			}
		}
		if err := json.Unmarshal(docker(t, "image", "inspect", dockerImage), &inspect); err != nil || len(inspect) != 1 {
			t.Fatalf("docker image inspect: %v", err)
		}
		cfg := inspect[0].Config
		fmt.Fprintf(summary, "  image size           %.1f MB (%d bytes)\n", float64(inspect[0].Size)/1e6, inspect[0].Size)
		if got, want := cfg.User, "65532:65532"; got != want {
			t.Errorf("USER = %q, want %q", got, want)
		}
		if got, want := cfg.Entrypoint, []string{"/kubeskel"}; !slices.Equal(got, want) {
			t.Errorf("ENTRYPOINT = %q, want %q", got, want)
		}
		if got, want := cfg.Healthcheck.Test, []string{"CMD", "/kubeskel", "probe", "http://127.0.0.1:8081/live"}; !slices.Equal(got, want) {
			t.Errorf("HEALTHCHECK = %q, want %q", got, want)
		}
		for _, p := range []string{"8080/tcp", "8081/tcp"} {
			if _, ok := cfg.ExposedPorts[p]; !ok {
				t.Errorf("port %s not exposed: %v", p, cfg.ExposedPorts)
			}
		}
		if got, want := cfg.Labels["org.opencontainers.image.version"], dockerImageVersion; got != want {
			t.Errorf("label org.opencontainers.image.version = %q, want %q", got, want)
		}
		if got, want := strings.TrimSpace(string(docker(t, "run", "--rm", "--network", "none", dockerImage, "version"))), dockerImageVersion; !strings.Contains(got, want) {
			t.Errorf("kubeskel version = %q, want it to contain %q (-ldflags -X not applied?)", got, want)
		}
		// No shell: the runtime stage must hold nothing but the binary's needs.
		if out, err := exec.Command("docker", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", dockerImage, "-c", "true").CombinedOutput(); err == nil {
			t.Errorf("the image has a shell: %s", out)
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		// Its own network namespace, so the default ports of the baked-in
		// HEALTHCHECK are free; the probe runs inside the container.
		id := strings.TrimSpace(string(docker(t, "run", "-d", "--network", "none",
			"--health-interval", "1s", "--health-start-period", "1s", dockerImage)))
		t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", id).Run() }) // best effort: it may be gone
		deadline := time.Now().Add(30 * time.Second)
		var status string
		for time.Now().Before(deadline) {
			status = strings.TrimSpace(string(docker(t, "inspect", "-f", "{{.State.Health.Status}}", id)))
			if status == "healthy" {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if got, want := status, "healthy"; got != want {
			t.Fatalf("health status = %q after 30s, want %q\n%s", got, want, docker(t, "inspect", "-f", "{{json .State.Health}}", id))
		}
		fmt.Fprintf(summary, "  HEALTHCHECK          healthy\n")
	})

	t.Run("drain", func(t *testing.T) {
		httpAddr, adminAddr := freeAddr(t), freeAddr(t)
		id := strings.TrimSpace(string(docker(t, "run", "-d", "--network", "host",
			// What the chart's restricted securityContext enforces.
			"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
			"-e", "APP_HTTP_ADDR="+httpAddr,
			"-e", "APP_ADMIN_ADDR="+adminAddr,
			"-e", "APP_PRESTOP_DELAY="+dockerPreStopDelay.String(),
			"-e", "APP_SHUTDOWN_TIMEOUT="+dockerShutdown.String(),
			"-e", "APP_TELEMETRY_FLUSH_TIMEOUT="+dockerFlush.String(),
			"-e", "APP_TERMINATION_GRACE_PERIOD="+dockerGrace.String(),
			dockerImage)))
		t.Cleanup(func() { _ = exec.Command("docker", "rm", "-f", id).Run() }) // best effort: it may be gone

		waitStatus(t, "http://"+adminAddr+"/ready", http.StatusOK, 15*time.Second)
		for _, u := range []string{"http://" + httpAddr + "/", "http://" + adminAddr + "/live", "http://" + adminAddr + "/ready"} {
			if got, want := get(t, u).StatusCode, http.StatusOK; got != want {
				t.Errorf("GET %s = %d, want %d", u, got, want)
			}
		}
		fmt.Fprintf(summary, "  serving              / 200, /live 200, /ready 200\n")

		stopStart := time.Now()
		stopped := make(chan error, 1)
		go func() {
			out, err := exec.Command("docker", "stop", "-t", strconv.Itoa(int(dockerGrace.Seconds())), id).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("%w: %s", err, out)
			}
			stopped <- err
		}()

		// During the pre-stop delay: not ready, still serving, closing keep-alives.
		waitStatus(t, "http://"+adminAddr+"/ready", http.StatusServiceUnavailable, dockerPreStopDelay)
		notReadyAfter := time.Since(stopStart)
		resp := get(t, "http://"+httpAddr+"/")
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Errorf("GET / during the pre-stop delay = %d, want %d", got, want)
		}
		if !resp.Close {
			t.Errorf("GET / during the pre-stop delay kept the connection open; want Connection: close")
		}
		if got, want := get(t, "http://"+adminAddr+"/live").StatusCode, http.StatusOK; got != want {
			t.Errorf("GET /live during the drain = %d, want %d", got, want)
		}

		if err := <-stopped; err != nil {
			t.Fatalf("docker stop: %v", err)
		}
		stopTook := time.Since(stopStart)
		fmt.Fprintf(summary, "  docker stop -t %d     %v (readiness 503 after %v)\n", int(dockerGrace.Seconds()), stopTook.Round(time.Millisecond), notReadyAfter.Round(time.Millisecond))

		var state struct {
			ExitCode  int
			OOMKilled bool
		}
		if err := json.Unmarshal(docker(t, "inspect", "-f", "{{json .State}}", id), &state); err != nil {
			t.Fatal(err)
		}
		if got, want := state.ExitCode, 0; got != want {
			t.Errorf("exit code = %d, want %d (137 means SIGKILL after the grace period)", got, want)
		}
		budget := dockerPreStopDelay + dockerShutdown + dockerFlush
		if stopTook >= dockerGrace {
			t.Errorf("docker stop took %v, not less than the grace period %v", stopTook, dockerGrace)
		}

		logs := docker(t, "logs", id)
		phases, err := parsePhases(logs)
		if err != nil {
			t.Fatalf("%v\n%s", err, logs)
		}
		var names []string
		for _, p := range phases {
			names = append(names, p.Phase)
		}
		fmt.Fprintf(summary, "  phases               %s\n", strings.Join(names, " → "))
		want := []string{"starting", "ready", "draining", "shutting_down", "flushing", "stopped"}
		if !slices.Equal(names, want) {
			t.Errorf("phases = %v, want %v", names, want)
		}
		draining, stoppedPhase := phaseByName(phases, "draining"), phaseByName(phases, "stopped")
		if draining == nil || stoppedPhase == nil {
			t.Fatalf("no draining or stopped phase in\n%s", logs)
		}
		if stoppedPhase.ExitCode == nil || *stoppedPhase.ExitCode != 0 {
			t.Errorf("stopped exit_code = %v, want 0", stoppedPhase.ExitCode)
		}
		drain := time.Duration((stoppedPhase.SinceStartMS - draining.SinceStartMS) * float64(time.Millisecond))
		fmt.Fprintf(summary, "  draining → stopped   %v (budget %v, grace %v)\n", drain.Round(time.Millisecond), budget, dockerGrace)
		if drain < dockerPreStopDelay {
			t.Errorf("draining → stopped took %v, less than the pre-stop delay %v", drain, dockerPreStopDelay)
		}
		if drain > budget {
			t.Errorf("draining → stopped took %v, more than the budget %v", drain, budget)
		}
	})
}

// phase is one `"msg":"phase"` log line of the binary.
type phase struct {
	Msg          string   `json:"msg"`
	Phase        string   `json:"phase"`
	SinceStartMS float64  `json:"since_start_ms"`
	ExitCode     *float64 `json:"exit_code"`
}

func parsePhases(logs []byte) ([]phase, error) {
	var phases []phase
	sc := bufio.NewScanner(bytes.NewReader(logs))
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var p phase
		if err := json.Unmarshal(line, &p); err != nil {
			return nil, fmt.Errorf("log line %q: %w", line, err)
		}
		if p.Msg == "phase" {
			phases = append(phases, p)
		}
	}
	return phases, sc.Err()
}

func phaseByName(phases []phase, name string) *phase {
	for i := range phases {
		if phases[i].Phase == name {
			return &phases[i]
		}
	}
	return nil
}

// docker runs the docker CLI and returns its stdout; failure is fatal.
func docker(t *testing.T, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// runScript runs a script of the repository, its stderr passed through.
func runScript(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("bash", append([]string{filepath.Join(repoRoot, script)}, args...)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", script, strings.Join(args, " "), err)
	}
	return out
}

// scriptVars runs a script that prints NAME=value lines and returns them.
func scriptVars(t *testing.T, script string, args ...string) map[string]string {
	t.Helper()
	vars := map[string]string{}
	for _, line := range strings.Split(string(runScript(t, script, args...)), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var client = &http.Client{Timeout: 2 * time.Second}

// answer is what get saw: the status and whether the server asked to close
// the connection.
type answer struct {
	StatusCode int
	Close      bool
}

func get(t *testing.T, url string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	return answer{StatusCode: resp.StatusCode, Close: resp.Close}
}

// waitStatus polls url until it answers want, failing after timeout.
func waitStatus(t *testing.T, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s did not answer %d within %v; last: %s", url, want, timeout, last)
}
