package deploy

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// adminStop is the binary's config.AdminStopTimeout, a term of its budget.
const adminStop = time.Second

// drainBudget returns what the binary's own start-up check adds up, read
// from the rendered container (not from the values, so a template that wires
// a value to the wrong variable is caught), plus the kubelet's preStop sleep,
// which runs inside the same grace period before SIGTERM.
func drainBudget(d *appsv1.Deployment) (time.Duration, error) {
	var app *corev1.Container
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == "kubeskel" {
			app = &d.Spec.Template.Spec.Containers[i]
		}
	}
	if app == nil {
		return 0, fmt.Errorf("no kubeskel container")
	}
	vars := []string{"APP_PRESTOP_DELAY", "APP_SHUTDOWN_TIMEOUT", "APP_TELEMETRY_FLUSH_TIMEOUT"}
	if u, _ := env(app, "APP_SIDECAR_QUIT_URL"); u != "" {
		vars = append(vars, "APP_SIDECAR_QUIT_TIMEOUT")
	}
	total := adminStop
	for _, name := range vars {
		v, ok := env(app, name)
		if !ok {
			return 0, fmt.Errorf("%s is not set", name)
		}
		dur, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: %w", name, v, err)
		}
		total += dur
	}
	// The kubelet stops native sidecars only after the app has exited,
	// inside the same grace period: their shutdown must be counted.
	if v, ok := env(app, "APP_NATIVE_SIDECAR_SHUTDOWN"); ok {
		dur, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("APP_NATIVE_SIDECAR_SHUTDOWN=%q: %w", v, err)
		}
		total += dur
	} else if native := nativeSidecarNames(d); len(native) > 0 {
		return 0, fmt.Errorf("native sidecars %v, but APP_NATIVE_SIDECAR_SHUTDOWN is not set: their shutdown is not counted", native)
	}
	if l := app.Lifecycle; l != nil && l.PreStop != nil {
		switch {
		case l.PreStop.Sleep != nil:
			total += time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		default:
			return 0, fmt.Errorf("preStop hook of unknown duration: %+v", l.PreStop)
		}
	}
	return total, nil
}

// nativeSidecarNames lists the init containers with restartPolicy Always.
func nativeSidecarNames(d *appsv1.Deployment) []string {
	var names []string
	for _, c := range d.Spec.Template.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			names = append(names, c.Name)
		}
	}
	return names
}

// checkGracePeriod verifies the property the chart exists for: the kubelet's
// grace period is strictly longer than the whole drain, and the binary is told
// the same grace period.
func checkGracePeriod(d *appsv1.Deployment) error {
	drain, err := drainBudget(d)
	if err != nil {
		return err
	}
	tgps := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if tgps == nil {
		return fmt.Errorf("terminationGracePeriodSeconds is not set")
	}
	grace := time.Duration(*tgps) * time.Second
	if grace <= drain {
		return fmt.Errorf("terminationGracePeriodSeconds %v is not longer than the drain %v", grace, drain)
	}
	var app *corev1.Container
	for i := range d.Spec.Template.Spec.Containers {
		if d.Spec.Template.Spec.Containers[i].Name == "kubeskel" {
			app = &d.Spec.Template.Spec.Containers[i]
		}
	}
	v, _ := env(app, "APP_TERMINATION_GRACE_PERIOD")
	appGrace, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("APP_TERMINATION_GRACE_PERIOD=%q: %w", v, err)
	}
	if appGrace != grace {
		return fmt.Errorf("APP_TERMINATION_GRACE_PERIOD %v differs from terminationGracePeriodSeconds %v", appGrace, grace)
	}
	return nil
}

// expectedGraceSeconds computes the grace period from the values with Go's
// own duration parser, independently of the template's parser.
func expectedGraceSeconds(t testing.TB, l lifecycleValues) int64 {
	t.Helper()
	parse := func(s string) time.Duration {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		return d
	}
	var total time.Duration
	if l.PreStopSleep {
		total += time.Duration(math.Ceil(parse(l.PreStopDelay).Seconds())) * time.Second
	} else {
		total += parse(l.PreStopDelay)
	}
	total += parse(l.ShutdownTimeout) + parse(l.TelemetryFlushTimeout) + adminStop + parse(l.SafetyMargin)
	if l.QuitURL != "" {
		total += parse(l.QuitTimeout)
	}
	if l.NativeSidecarShutdown != "" {
		total += parse(l.NativeSidecarShutdown)
	}
	return int64(math.Ceil(total.Seconds()))
}

// lifecycleValues are the values that feed the grace period.
type lifecycleValues struct {
	PreStopDelay, ShutdownTimeout, TelemetryFlushTimeout, SafetyMargin string
	PreStopSleep                                                       bool
	QuitURL, QuitTimeout                                               string
	// NativeSidecarShutdown is lifecycle.nativeSidecarShutdown when the
	// pod has native sidecars, else "".
	NativeSidecarShutdown string
}

// pssRestrictedViolations lists how a pod spec breaks the "restricted" Pod
// Security Standard (baseline checks included), as the PodSecurity admission
// plugin of Kubernetes 1.37 evaluates it. An empty list means compliant.
func pssRestrictedViolations(spec *corev1.PodSpec) []string {
	var v []string
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		v = append(v, "host namespaces")
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		v = append(v, "pod runAsUser=0")
	}
	podSeccompOK := psc.SeccompProfile != nil &&
		(psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault || psc.SeccompProfile.Type == corev1.SeccompProfileTypeLocalhost)
	if psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined {
		v = append(v, "pod seccompProfile Unconfined")
	}
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	if psc.RunAsNonRoot != nil && !*psc.RunAsNonRoot {
		v = append(v, "pod runAsNonRoot=false")
	}
	for _, vol := range spec.Volumes {
		s := vol.VolumeSource
		if s.ConfigMap == nil && s.CSI == nil && s.DownwardAPI == nil && s.EmptyDir == nil &&
			s.Ephemeral == nil && s.PersistentVolumeClaim == nil && s.Projected == nil && s.Secret == nil && s.Image == nil {
			v = append(v, fmt.Sprintf("volume %s has a restricted type", vol.Name))
		}
	}
	var all []corev1.Container
	all = append(all, spec.InitContainers...)
	all = append(all, spec.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		name := "container " + c.Name
		if sc.Privileged != nil && *sc.Privileged {
			v = append(v, name+" privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			v = append(v, name+" allowPrivilegeEscalation != false")
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			v = append(v, name+" runAsNonRoot=false")
		} else if sc.RunAsNonRoot == nil && !podNonRoot {
			v = append(v, name+" runAsNonRoot unset")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			v = append(v, name+" runAsUser=0")
		}
		switch {
		case sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined:
			v = append(v, name+" seccompProfile Unconfined")
		case sc.SeccompProfile == nil && !podSeccompOK:
			v = append(v, name+" seccompProfile unset")
		}
		if sc.Capabilities == nil || !containsCapability(sc.Capabilities.Drop, "ALL") {
			v = append(v, name+" capabilities do not drop ALL")
		}
		if sc.Capabilities != nil {
			for _, add := range sc.Capabilities.Add {
				if add != "NET_BIND_SERVICE" {
					v = append(v, fmt.Sprintf("%s adds capability %s", name, add))
				}
			}
		}
		for _, h := range probeAndHookHosts(&c) {
			v = append(v, fmt.Sprintf("%s probe or lifecycle host %s", name, h))
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				v = append(v, fmt.Sprintf("%s hostPort %d", name, p.HostPort))
			}
		}
	}
	return v
}

// probeAndHookHosts returns the hosts set on a container's probes and
// lifecycle handlers; the baseline standard (Kubernetes >= 1.34) forbids any.
func probeAndHookHosts(c *corev1.Container) []string {
	var hosts []string
	add := func(h *corev1.ProbeHandler) {
		if h == nil {
			return
		}
		if h.HTTPGet != nil && h.HTTPGet.Host != "" {
			hosts = append(hosts, h.HTTPGet.Host)
		}
		if h.TCPSocket != nil && h.TCPSocket.Host != "" {
			hosts = append(hosts, h.TCPSocket.Host)
		}
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p != nil {
			add(&p.ProbeHandler)
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil {
				add(&corev1.ProbeHandler{HTTPGet: h.HTTPGet, TCPSocket: h.TCPSocket})
			}
		}
	}
	return slices.Compact(hosts)
}

func containsCapability(caps []corev1.Capability, want corev1.Capability) bool {
	for _, c := range caps {
		if c == want {
			return true
		}
	}
	return false
}

// unknownAppVars lists the APP_* variables set on c that the binary does not
// know; the binary ignores them silently, so a typo would go unnoticed.
func unknownAppVars(c *corev1.Container, known map[string]bool) []string {
	var unknown []string
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "APP_") && !known[e.Name] {
			unknown = append(unknown, e.Name)
		}
	}
	return unknown
}

var (
	knownVarsOnce sync.Once
	knownVars     map[string]bool
	knownVarsErr  error
)

// binaryVars builds ./cmd/kubeskel of the repository and returns the APP_*
// variables its -h prints (first column, one per line).
func binaryVars(t testing.TB) map[string]bool {
	t.Helper()
	knownVarsOnce.Do(func() {
		knownVars, knownVarsErr = buildAndListVars()
	})
	if knownVarsErr != nil {
		t.Fatalf("list the binary's variables: %v", knownVarsErr)
	}
	return knownVars
}

func buildAndListVars() (map[string]bool, error) {
	dir, err := os.MkdirTemp("", "kubeskel-deploy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "kubeskel")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kubeskel")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/kubeskel: %w\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	help := exec.Command(bin, "-h")
	help.Stdout, help.Stderr = &stdout, &stderr
	if err := help.Run(); err != nil {
		return nil, fmt.Errorf("kubeskel -h: %w\n%s", err, stderr.String())
	}
	vars := parseHelpVars(stdout.String() + stderr.String())
	if len(vars) == 0 {
		return nil, fmt.Errorf("kubeskel -h printed no APP_ variable:\n%s%s", stdout.String(), stderr.String())
	}
	return vars, nil
}

// parseHelpVars collects the first column of every line that starts with
// APP_ (contract: "one per line, first column the variable name").
func parseHelpVars(help string) map[string]bool {
	vars := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(help))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 && strings.HasPrefix(fields[0], "APP_") {
			vars[fields[0]] = true
		}
	}
	return vars
}
