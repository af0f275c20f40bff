package deploy

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// sidecarValueFiles are the values the e2e-kube suite installs for its
// collector steps, in the order its helm upgrade passes them
// (test/kube/sidecar_test.go): values-sidecar.yaml over values-node.yaml.
var sidecarValueFiles = []string{
	filepath.Join("..", "kube", "values-node.yaml"),
	filepath.Join("..", "kube", "values-sidecar.yaml"),
}

// collectorName is the collector container of values-sidecar.yaml
// (sidecarName in test/kube).
const collectorName = "otel-collector"

// renderSidecarValues renders the chart with sidecarValueFiles merged as
// helm's -f flags merge them.
func renderSidecarValues(t *testing.T) *rendering {
	t.Helper()
	opts := values.Options{ValueFiles: sidecarValueFiles}
	vals, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		t.Fatalf("read %v: %v", sidecarValueFiles, err)
	}
	r, err := renderChart(loadChart(t), vals, renderOptions{})
	if err != nil {
		t.Fatalf("render with %v: %v", sidecarValueFiles, err)
	}
	return r
}

// sidecarValuesProblems returns every way the Deployment fails what the
// e2e-kube collector steps rely on: the collector is a native sidecar (an
// init container with restartPolicy Always, so it outlives the app's
// flush) with a startupProbe (so the app starts once it listens); the app
// exports OTLP to it on loopback; and the grace period counts the native
// sidecars' shutdown, which the kubelet runs after the app has exited.
func sidecarValuesProblems(d *appsv1.Deployment) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	spec := &d.Spec.Template.Spec
	var collector, app *corev1.Container
	for i := range spec.InitContainers {
		if spec.InitContainers[i].Name == collectorName {
			collector = &spec.InitContainers[i]
		}
	}
	for i := range spec.Containers {
		switch spec.Containers[i].Name {
		case collectorName:
			fail("%s is an ordinary container: the kubelet sends it SIGTERM together with the app, before the app's flush", collectorName)
		case "kubeskel":
			app = &spec.Containers[i]
		}
	}
	if app == nil {
		return append(bad, "no kubeskel container")
	}
	if collector == nil {
		return append(bad, fmt.Sprintf("no init container %s", collectorName))
	}
	if p := collector.RestartPolicy; p == nil || *p != corev1.ContainerRestartPolicyAlways {
		fail("init container %s has restartPolicy %v, want Always (a native sidecar; without it the pod never starts the app)", collectorName, p)
	}
	if collector.StartupProbe == nil {
		fail("init container %s has no startupProbe: the kubelet starts the app before the collector listens", collectorName)
	}

	if v, _ := env(app, "OTEL_TRACES_EXPORTER"); v != "otlp" {
		fail("OTEL_TRACES_EXPORTER = %q, want otlp", v)
	}
	endpoint, _ := env(app, "OTEL_EXPORTER_OTLP_ENDPOINT")
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		fail("OTEL_EXPORTER_OTLP_ENDPOINT %q is not a URL with a host", endpoint)
	} else {
		if ip := net.ParseIP(u.Hostname()); u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			fail("OTEL_EXPORTER_OTLP_ENDPOINT %q is not on loopback: the app would not export to its own pod's collector", endpoint)
		}
		var ports []int32
		for _, p := range collector.Ports {
			ports = append(ports, p.ContainerPort)
		}
		if port, err := strconv.ParseInt(u.Port(), 10, 32); err != nil || !slices.Contains(ports, int32(port)) {
			fail("OTEL_EXPORTER_OTLP_ENDPOINT %q: port %q is none of %s's ports %v", endpoint, u.Port(), collectorName, ports)
		}
	}

	v, ok := env(app, "APP_NATIVE_SIDECAR_SHUTDOWN")
	if native, err := time.ParseDuration(v); !ok || err != nil || native <= 0 {
		fail("APP_NATIVE_SIDECAR_SHUTDOWN = %q (set %v), want a positive duration: the collector's shutdown must be in the budget", v, ok)
	}
	// drainBudget adds APP_NATIVE_SIDECAR_SHUTDOWN to the app's drain.
	if err := checkGracePeriod(d); err != nil {
		fail("grace period: %v", err)
	}
	return bad
}

// TestSidecarValues renders the chart with the e2e-kube collector values
// offline, so a change that breaks them fails here rather than on a node.
func TestSidecarValues(t *testing.T) {
	r := renderSidecarValues(t)
	for _, p := range sidecarValuesProblems(r.Deployment) {
		t.Error(p)
	}
	grace := *r.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds
	if want := expectedGraceSeconds(t, effectiveLifecycle(t, r.Values)); grace != want {
		t.Errorf("terminationGracePeriodSeconds = %d, want %d (drain + native sidecars' shutdown + safetyMargin)", grace, want)
	}
	// The binary's own budget check must accept the rendered env.
	code, out := checkConfig(t, r.appContainer(t))
	if code != 0 {
		t.Fatalf("kubeskel check-config on the rendered env exited %d:\n%s", code, out)
	}
	for _, want := range []string{"APP_NATIVE_SIDECAR_SHUTDOWN 5s", fmt.Sprintf("below APP_TERMINATION_GRACE_PERIOD %ds", grace)} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config output lacks %q:\n%s", want, out)
		}
	}
}

// TestSidecarValuesFail is the control: each hand-broken rendering must be
// reported.
func TestSidecarValuesFail(t *testing.T) {
	collector := func(d *appsv1.Deployment) *corev1.Container {
		for i, c := range d.Spec.Template.Spec.InitContainers {
			if c.Name == collectorName {
				return &d.Spec.Template.Spec.InitContainers[i]
			}
		}
		t.Fatalf("no init container %s", collectorName)
		return nil
	}
	setAppEnv := func(d *appsv1.Deployment, name, value string) {
		for i, c := range d.Spec.Template.Spec.Containers {
			if c.Name != "kubeskel" {
				continue
			}
			for j, e := range c.Env {
				if e.Name == name {
					d.Spec.Template.Spec.Containers[i].Env[j].Value = value
					return
				}
			}
		}
		t.Fatalf("app container has no %s", name)
	}
	for _, tc := range []struct {
		name   string
		mutate func(d *appsv1.Deployment)
	}{
		{"no restartPolicy", func(d *appsv1.Deployment) { collector(d).RestartPolicy = nil }},
		{"no startupProbe", func(d *appsv1.Deployment) { collector(d).StartupProbe = nil }},
		{"ordinary sidecar", func(d *appsv1.Deployment) {
			c := *collector(d)
			c.RestartPolicy = nil
			d.Spec.Template.Spec.InitContainers = nil
			d.Spec.Template.Spec.Containers = append(d.Spec.Template.Spec.Containers, c)
		}},
		{"endpoint off the pod", func(d *appsv1.Deployment) {
			setAppEnv(d, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://10.250.0.1:4318")
		}},
		{"endpoint on another port", func(d *appsv1.Deployment) {
			setAppEnv(d, "OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
		}},
		{"no traces exporter", func(d *appsv1.Deployment) { setAppEnv(d, "OTEL_TRACES_EXPORTER", "none") }},
		{"grace period without the native term", func(d *appsv1.Deployment) {
			*d.Spec.Template.Spec.TerminationGracePeriodSeconds -= 5
		}},
		{"native shutdown zero", func(d *appsv1.Deployment) { setAppEnv(d, "APP_NATIVE_SIDECAR_SHUTDOWN", "0s") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := renderSidecarValues(t).Deployment
			if bad := sidecarValuesProblems(d); len(bad) != 0 {
				t.Fatalf("control input rejected: %v", bad)
			}
			tc.mutate(d)
			bad := sidecarValuesProblems(d)
			if len(bad) == 0 {
				t.Errorf("sidecarValuesProblems accepted the broken rendering")
			}
			t.Logf("reported: %v", bad)
		})
	}
}
