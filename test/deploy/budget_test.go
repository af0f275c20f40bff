package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

var (
	checkBinOnce sync.Once
	checkBin     string
	checkBinErr  error
)

// kubeskelBinary builds ./cmd/kubeskel of the repository once and returns its
// path.
func kubeskelBinary(t *testing.T) string {
	t.Helper()
	checkBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kubeskel-budget-")
		if err != nil {
			checkBinErr = err
			return
		}
		checkBin = filepath.Join(dir, "kubeskel")
		build := exec.Command("go", "build", "-o", checkBin, "./cmd/kubeskel")
		build.Dir = repoRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			checkBinErr = fmt.Errorf("go build ./cmd/kubeskel: %w\n%s", err, out)
		}
	})
	if checkBinErr != nil {
		t.Fatal(checkBinErr)
	}
	return checkBin
}

// checkConfig runs "kubeskel check-config" with the literal env entries of
// c, in order, and nothing else (valueFrom entries are not APP_* and are
// skipped). For a name set twice the last entry wins, in Kubernetes as in
// os/exec. It returns the exit code and the combined output.
func checkConfig(t *testing.T, c *corev1.Container, override ...string) (int, string) {
	t.Helper()
	var environ []string
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			environ = append(environ, e.Name+"="+e.Value)
		}
	}
	environ = append(environ, override...)
	cmd := exec.Command(kubeskelBinary(t), "check-config")
	cmd.Env = environ
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	}
	t.Fatalf("run kubeskel check-config: %v", err)
	return -1, ""
}

// TestChartBudgetPassesBinaryCheck renders the chart for several value sets
// and feeds the rendered container's environment to the binary's own
// validation: the chart's terminationGracePeriodSeconds (passed in as
// APP_TERMINATION_GRACE_PERIOD) must fit the budget the binary adds up, and
// the preStop sleep the kubelet runs must be known to the binary.
func TestChartBudgetPassesBinaryCheck(t *testing.T) {
	tests := []struct {
		name       string
		values     string
		wantSleep  string // APP_PRESTOP_SLEEP as check-config prints it
		wantInArgs []string
	}{
		{"defaults", ``, "APP_PRESTOP_SLEEP 0s", nil},
		{"smallest safety margin", `lifecycle: {safetyMargin: 1s}`, "APP_PRESTOP_SLEEP 0s", nil},
		{"preStop sleep", `lifecycle: {preStopDelay: 1500ms, safetyMargin: 1s, preStopSleep: {enabled: true}}`,
			"APP_PRESTOP_SLEEP 2s", []string{"APP_PRESTOP_DELAY 0s"}},
		{"quit URL", `{lifecycle: {safetyMargin: 1s}, sidecar: {quitURL: "http://127.0.0.1:15020/quitquitquit", quitTimeout: 4s}}`,
			"APP_PRESTOP_SLEEP 0s", []string{"APP_SIDECAR_QUIT_TIMEOUT 4s"}},
		{"istio preset with preStop sleep", `{lifecycle: {safetyMargin: 1s, preStopSleep: {enabled: true}}, sidecar: {preset: istio}}`,
			"APP_PRESTOP_SLEEP 5s", []string{"APP_SIDECAR_QUIT_TIMEOUT"}},
		{"native sidecar", `{lifecycle: {safetyMargin: 1s}, nativeSidecars: [{name: otel-collector, image: x}]}`,
			"APP_PRESTOP_SLEEP 0s", []string{"admin stop 1s + APP_NATIVE_SIDECAR_SHUTDOWN 5s = 33s, below APP_TERMINATION_GRACE_PERIOD 34s"}},
		{"extraEnv within the budget", `{lifecycle: {safetyMargin: 1s}, extraEnv: [{name: APP_TELEMETRY_FLUSH_TIMEOUT, value: 1s}]}`,
			"APP_PRESTOP_SLEEP 0s", []string{"APP_TELEMETRY_FLUSH_TIMEOUT 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustRender(t, tt.values).appContainer(t)
			if dups := duplicateEnv(c); len(dups) != 0 {
				t.Errorf("rendered env sets %q more than once", dups)
			}
			code, out := checkConfig(t, c)
			if code != 0 {
				t.Fatalf("kubeskel check-config on the rendered env exited %d:\n%s", code, out)
			}
			for _, want := range append([]string{tt.wantSleep}, tt.wantInArgs...) {
				if !strings.Contains(out, want) {
					t.Errorf("check-config output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestChartBudgetOverrideRejected: an extraEnv entry that lengthens the drain
// behind the chart's back replaces the chart's entry (the last one wins in
// Kubernetes too), so the grace period the chart derived no longer fits and
// the binary refuses with exit 2 naming APP_TERMINATION_GRACE_PERIOD.
func TestChartBudgetOverrideRejected(t *testing.T) {
	for _, name := range []string{"APP_SHUTDOWN_TIMEOUT", "APP_PRESTOP_DELAY", "APP_PRESTOP_SLEEP"} {
		t.Run(name, func(t *testing.T) {
			c := mustRender(t, fmt.Sprintf(`extraEnv: [{name: %s, value: 60s}]`, name)).appContainer(t)
			if got, _ := env(c, name); got != "60s" {
				t.Fatalf("rendered %s = %q, want the extraEnv value 60s", name, got)
			}
			code, out := checkConfig(t, c)
			if code != 2 || !strings.Contains(out, "APP_TERMINATION_GRACE_PERIOD: shutdown budget does not fit") {
				t.Errorf("check-config exited %d, want 2 naming APP_TERMINATION_GRACE_PERIOD:\n%s", code, out)
			}
		})
	}
}

// TestChartBudgetControl: a grace period one second shorter than the chart's
// formula gives (a formula that forgot a one-second term, such as the admin
// stop) must be rejected by the binary; otherwise the checks above prove
// nothing.
func TestChartBudgetControl(t *testing.T) {
	for _, values := range []string{`lifecycle: {safetyMargin: 1s}`, `lifecycle: {safetyMargin: 1s, preStopSleep: {enabled: true}}`} {
		t.Run(values, func(t *testing.T) {
			r := mustRender(t, values)
			c := r.appContainer(t)
			grace := *r.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
			code, out := checkConfig(t, c, fmt.Sprintf("APP_TERMINATION_GRACE_PERIOD=%ds", grace-1))
			if code != 2 || !strings.Contains(out, "APP_TERMINATION_GRACE_PERIOD") {
				t.Errorf("check-config with a grace period of %ds exited %d, want 2:\n%s", grace-1, code, out)
			}
			code, out = checkConfig(t, c, fmt.Sprintf("APP_TERMINATION_GRACE_PERIOD=%ds", grace))
			if code != 0 {
				t.Errorf("check-config with the chart's grace period %ds exited %d, want 0:\n%s", grace, code, out)
			}
		})
	}
}
