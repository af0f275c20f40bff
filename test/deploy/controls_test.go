package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// The tests in this file are the controls: each proves that a check used by
// the matrix tests can fail, on a hand-broken input.

func TestStrictDecoderRejects(t *testing.T) {
	base := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 30
      containers: [{name: kubeskel, image: x}]
`
	if _, err := decodeManifests([]byte(base)); err != nil {
		t.Fatalf("control input rejected: %v", err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"misspelled field", "terminationGracePeriodSeconds", "terminationGracePeriodSecond"},
		{"wrong type", "terminationGracePeriodSeconds: 30", `terminationGracePeriodSeconds: "30s"`},
		{"duplicate key", "terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 30\n      terminationGracePeriodSeconds: 31"},
		{"field at the wrong level", "      containers:", "      readinessProbe: {}\n      containers:"},
		{"unknown kind", "kind: Deployment", "kind: Deployments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := strings.Replace(base, tc.from, tc.to, 1)
			if broken == base {
				t.Fatalf("replacement %q did not apply", tc.from)
			}
			if _, err := decodeManifests([]byte(broken)); err == nil {
				t.Errorf("strict decoding accepted:\n%s", broken)
			}
		})
	}
}

func TestGracePeriodCheckFails(t *testing.T) {
	good := mustRender(t, "").Deployment
	if err := checkGracePeriod(good); err != nil {
		t.Fatalf("control input rejected: %v", err)
	}
	for _, tc := range []struct {
		name   string
		break_ func(d *appsv1.Deployment)
	}{
		{"grace equals the drain", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](28)
			setEnv(d, "APP_TERMINATION_GRACE_PERIOD", "28s")
		}},
		{"grace unset (kubelet default 30s)", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = nil
		}},
		{"binary told another grace", func(d *appsv1.Deployment) {
			setEnv(d, "APP_TERMINATION_GRACE_PERIOD", "60s")
		}},
		{"preStop sleep not counted", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 5}}}
		}},
		{"quit timeout not counted", func(d *appsv1.Deployment) {
			setEnv(d, "APP_SIDECAR_QUIT_URL", "http://127.0.0.1:15020/quitquitquit")
			setEnv(d, "APP_SIDECAR_QUIT_TIMEOUT", "3s")
		}},
		{"native sidecar's shutdown not counted", func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.InitContainers = append(d.Spec.Template.Spec.InitContainers, corev1.Container{
				Name: "otel-collector", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)})
		}},
		{"native sidecar's shutdown beyond the grace period", func(d *appsv1.Deployment) {
			setEnv(d, "APP_NATIVE_SIDECAR_SHUTDOWN", "2s")
		}},
		{"malformed duration", func(d *appsv1.Deployment) {
			setEnv(d, "APP_SHUTDOWN_TIMEOUT", "20")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good.DeepCopy()
			tc.break_(d)
			if err := checkGracePeriod(d); err == nil {
				t.Errorf("checkGracePeriod accepted the broken Deployment")
			}
		})
	}
}

func setEnv(d *appsv1.Deployment, name, value string) {
	c := &d.Spec.Template.Spec.Containers[0]
	for i := range c.Env {
		if c.Env[i].Name == name {
			c.Env[i].Value = value
			return
		}
	}
	c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
}

func TestPSSCheckFails(t *testing.T) {
	good := mustRender(t, "").Deployment.Spec.Template.Spec
	if v := pssRestrictedViolations(&good); len(v) != 0 {
		t.Fatalf("control input rejected: %v", v)
	}
	for _, tc := range []struct {
		name   string
		break_ func(s *corev1.PodSpec)
		want   string
	}{
		{"privileged", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Privileged = ptr.To(true) }, "privileged"},
		{"runAsNonRoot false", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.RunAsNonRoot = ptr.To(false) }, "runAsNonRoot=false"},
		{"root user", func(s *corev1.PodSpec) { s.SecurityContext.RunAsUser = ptr.To[int64](0) }, "runAsUser=0"},
		{"escalation", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation"},
		{"capabilities kept", func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil }, "drop ALL"},
		{"capability added", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "NET_ADMIN"},
		{"seccomp unconfined", func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}
		}, "Unconfined"},
		{"sidecar without securityContext", func(s *corev1.PodSpec) {
			s.InitContainers = append(s.InitContainers, corev1.Container{Name: "otel", Image: "x", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)})
		}, "container otel"},
		{"hostPath volume", func(s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		}, "volume h"},
		{"host network", func(s *corev1.PodSpec) { s.HostNetwork = true }, "host namespaces"},
		{"host port", func(s *corev1.PodSpec) { s.Containers[0].Ports[0].HostPort = 8080 }, "hostPort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good.DeepCopy()
			tc.break_(s)
			v := pssRestrictedViolations(s)
			if !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("violations = %v, want one containing %q", v, tc.want)
			}
		})
	}
}

func TestUnknownAppVarsFails(t *testing.T) {
	known := binaryVars(t)
	for _, want := range []string{"APP_HTTP_ADDR", "APP_PRESTOP_DELAY", "APP_TERMINATION_GRACE_PERIOD", "APP_SIDECAR_QUIT_URL"} {
		if !known[want] {
			t.Errorf("kubeskel -h does not list %s; parsed %d variables", want, len(known))
		}
	}
	c := &corev1.Container{Env: []corev1.EnvVar{{Name: "APP_SHUTDOWN_TIMOUT", Value: "20s"}, {Name: "APP_LOG_LEVEL", Value: "info"}, {Name: "OTHER"}}}
	if got, want := fmt.Sprint(unknownAppVars(c, known)), "[APP_SHUTDOWN_TIMOUT]"; got != want {
		t.Errorf("unknownAppVars = %s, want %s", got, want)
	}
}

func TestParseHelpVars(t *testing.T) {
	help := "Usage:\n  kubeskel\n\nVARIABLE  TYPE  DEFAULT  DESCRIPTION\nAPP_HTTP_ADDR  String  :8080  traffic\nAPP_SLOW_MAX Duration 30s cap\n  APP_NOT_FIRST_COLUMN_IS_FINE x\nsee APP_IN_TEXT too\n"
	got := parseHelpVars(help)
	want := map[string]bool{"APP_HTTP_ADDR": true, "APP_SLOW_MAX": true, "APP_NOT_FIRST_COLUMN_IS_FINE": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseHelpVars = %v, want %v", got, want)
	}
}

// TestDurationHelper renders the chart's duration parser directly and
// compares it with Go's time.ParseDuration, which the binary uses.
func TestDurationHelper(t *testing.T) {
	inputs := []string{"0", "0s", "5s", "1500ms", "1m30s", "1h", "2h45m", "1h2m3s4ms", "0.5s", "2.5s", "1.25ms", "90m", "100ms", "3s500ms", "59s999ms"}
	c := loadChart(t)
	var tpl strings.Builder
	for i, in := range inputs {
		fmt.Fprintf(&tpl, "%d={{ include \"kubeskel.durationMs\" %q }}|{{ include \"kubeskel.durationSeconds\" %q }}\n", i, in, in)
	}
	got := renderHelper(t, c, tpl.String())
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != len(inputs) {
		t.Fatalf("rendered %d lines, want %d:\n%s", len(lines), len(inputs), got)
	}
	for i, in := range inputs {
		d, err := time.ParseDuration(in)
		if err != nil {
			t.Fatal(err)
		}
		wantMs := int64((d + time.Millisecond - 1) / time.Millisecond)
		wantS := int64((d + time.Second - 1) / time.Second)
		if got, want := lines[i], fmt.Sprintf("%d=%d|%d", i, wantMs, wantS); got != want {
			t.Errorf("%q: got %s, want %s (ms|s, rounded up)", in, got, want)
		}
	}
	for _, bad := range []string{"-5s", "five seconds", "5", "1d", "5 s", "s", "1.s", ""} {
		_, err := renderHelperErr(c, fmt.Sprintf("{{ include \"kubeskel.durationMs\" %q }}", bad))
		if err == nil || !strings.Contains(err.Error(), "invalid duration") {
			t.Errorf("%q: error = %v, want invalid duration", bad, err)
		}
	}
}

// renderHelper renders an extra template against the chart's helpers.
func renderHelper(t *testing.T, c *chart.Chart, tpl string) string {
	t.Helper()
	out, err := renderHelperErr(c, tpl)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func renderHelperErr(c *chart.Chart, tpl string) (string, error) {
	probe := *c
	probe.Templates = append(slices.Clone(c.Templates), &chart.File{Name: "templates/zz-probe.txt", Data: []byte(tpl)})
	vals, err := chartutil.ToRenderValues(&probe, map[string]any{}, chartutil.ReleaseOptions{Name: "kubeskel", Namespace: "default"}, chartutil.DefaultCapabilities)
	if err != nil {
		return "", err
	}
	out, err := engine.Render(&probe, vals)
	if err != nil {
		return "", err
	}
	return out["kubeskel/templates/zz-probe.txt"], nil
}

// TestPlainManifests checks k8s/: strict decoding, the grace period and PSS,
// and that it is the chart's default rendering (the same drift check as
// hack/render-manifests.sh --check, without needing the helm binary).
func TestPlainManifests(t *testing.T) {
	dir := filepath.Join(repoRoot, "k8s")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	var plain []object
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		plain = append(plain, objs...)
	}
	r := mustRender(t, "")
	if got, want := len(plain), len(r.Objects)-len(r.Hooks); got != want {
		t.Fatalf("k8s/ has %d objects, the chart renders %d; run hack/render-manifests.sh", got, want)
	}
	for _, p := range plain {
		var match *object
		for i := range r.Objects {
			if r.Objects[i].Kind == p.Kind && r.Objects[i].Name == p.Name {
				match = &r.Objects[i]
			}
		}
		if match == nil {
			t.Errorf("k8s/ has %s %s, which the chart does not render; run hack/render-manifests.sh", p.Kind, p.Name)
			continue
		}
		if !reflect.DeepEqual(p.Obj, match.Obj) {
			t.Errorf("k8s/ %s %s differs from the chart's rendering; run hack/render-manifests.sh", p.Kind, p.Name)
		}
		if d, ok := p.Obj.(*appsv1.Deployment); ok {
			if err := checkGracePeriod(d); err != nil {
				t.Errorf("k8s/ Deployment: %v", err)
			}
			if v := pssRestrictedViolations(&d.Spec.Template.Spec); len(v) != 0 {
				t.Errorf("k8s/ Deployment breaks PSS restricted: %v", v)
			}
		}
	}
}
