package deploy

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// The mesh presets cannot run here (no mesh images), so these tests check
// their rendering against the rules the meshes document (sources in
// charts/kubeskel/README.md, "Sidecars and service meshes"):
//
// Istio (ProxyConfig reference; Istio's sidecar injection FAQ): with
// holdApplicationUntilProxyStarts the app container starts only once Envoy
// is ready; on SIGTERM Envoy stops taking new inbound connections, keeps
// existing ones and outbound calls working for terminationDrainDuration,
// then exits. So the drain duration must cover the app's whole drain (its
// last responses and its flush go through Envoy) and end inside
// terminationGracePeriodSeconds.
//
// Linkerd (Graceful Pod Shutdown): config.alpha.linkerd.io/proxy-wait-before-exit-seconds
// delays the proxy's shutdown by a preStop sleep; the app's own pre-stop
// delay must be shorter than it, and neither may exceed
// terminationGracePeriodSeconds. The /shutdown endpoint the app POSTs to is
// served only with config.linkerd.io/proxy-admin-shutdown: enabled.

// meshTimings are the durations the mesh rules compare, read from the
// rendered Deployment.
type meshTimings struct {
	grace, drain, preStopDelay time.Duration
}

func timingsOf(d *appsv1.Deployment) (meshTimings, error) {
	var m meshTimings
	drain, err := drainBudget(d)
	if err != nil {
		return m, err
	}
	m.drain = drain
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		m.grace = time.Duration(*g) * time.Second
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != "kubeskel" {
			continue
		}
		// The mesh proxy must outlive the app's drain; the native
		// sidecars' shutdown after the app's exit is not part of it.
		if v, ok := env(&c, "APP_NATIVE_SIDECAR_SHUTDOWN"); ok {
			native, err := time.ParseDuration(v)
			if err != nil {
				return m, fmt.Errorf("APP_NATIVE_SIDECAR_SHUTDOWN=%q: %w", v, err)
			}
			m.drain -= native
		}
		v, _ := env(&c, "APP_PRESTOP_DELAY")
		if m.preStopDelay, err = time.ParseDuration(v); err != nil {
			return m, fmt.Errorf("APP_PRESTOP_DELAY=%q: %w", v, err)
		}
		if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			m.preStopDelay += time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
	}
	return m, nil
}

// meshProblems returns every way the Deployment's pod annotations break the
// documented rules of preset ("istio" or "linkerd"); want are the
// annotations the user set through podAnnotations, which must be kept.
func meshProblems(preset string, d *appsv1.Deployment, want map[string]string) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	tm, err := timingsOf(d)
	if err != nil {
		return []string{err.Error()}
	}
	ann := d.Spec.Template.Annotations
	mesh := map[string]string{}
	for k, v := range ann {
		if _, user := want[k]; user {
			if v != want[k] {
				fail("podAnnotations %s = %q, want the user's %q", k, v, want[k])
			}
			continue
		}
		mesh[k] = v
	}
	switch preset {
	case "istio":
		if keys := slices.Sorted(maps.Keys(mesh)); !slices.Equal(keys, []string{"proxy.istio.io/config"}) {
			fail("mesh annotations %v, want exactly [proxy.istio.io/config]", keys)
		}
		var cfg map[string]any
		if err := json.Unmarshal([]byte(mesh["proxy.istio.io/config"]), &cfg); err != nil {
			fail("proxy.istio.io/config is not JSON: %v", err)
			break
		}
		if keys := slices.Sorted(maps.Keys(cfg)); !slices.Equal(keys, []string{"holdApplicationUntilProxyStarts", "terminationDrainDuration"}) {
			fail("proxy.istio.io/config keys %v, want exactly holdApplicationUntilProxyStarts and terminationDrainDuration", keys)
		}
		if cfg["holdApplicationUntilProxyStarts"] != true {
			fail("holdApplicationUntilProxyStarts = %v, want true (the app must not start before Envoy)", cfg["holdApplicationUntilProxyStarts"])
		}
		s, _ := cfg["terminationDrainDuration"].(string)
		drain, err := time.ParseDuration(s)
		switch {
		case err != nil:
			fail("terminationDrainDuration %q: %v", s, err)
		case drain < tm.preStopDelay:
			fail("terminationDrainDuration %s is shorter than the pre-stop delay %s: Envoy exits while the app still serves", drain, tm.preStopDelay)
		case drain < tm.drain:
			fail("terminationDrainDuration %s is shorter than the app's drain %s: Envoy exits before the app's last responses and flush", drain, tm.drain)
		case drain >= tm.grace:
			fail("terminationDrainDuration %s does not end inside terminationGracePeriodSeconds %s", drain, tm.grace)
		}
	case "linkerd":
		if keys := slices.Sorted(maps.Keys(mesh)); !slices.Equal(keys, []string{"config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "config.linkerd.io/proxy-admin-shutdown"}) {
			fail("mesh annotations %v, want exactly proxy-wait-before-exit-seconds and proxy-admin-shutdown", keys)
		}
		if v := mesh["config.linkerd.io/proxy-admin-shutdown"]; v != "enabled" {
			fail("config.linkerd.io/proxy-admin-shutdown = %q, want enabled (the app POSTs /shutdown)", v)
		}
		v := mesh["config.alpha.linkerd.io/proxy-wait-before-exit-seconds"]
		n, err := strconv.Atoi(v)
		wait := time.Duration(n) * time.Second
		switch {
		case err != nil || n < 0:
			fail("proxy-wait-before-exit-seconds %q is not a whole number of seconds", v)
		case wait <= tm.preStopDelay:
			fail("proxy-wait-before-exit-seconds %s is not longer than the app's pre-stop delay %s", wait, tm.preStopDelay)
		case wait < tm.drain:
			fail("proxy-wait-before-exit-seconds %s is shorter than the app's drain %s: the proxy exits before the app's last responses and flush", wait, tm.drain)
		case wait >= tm.grace:
			fail("proxy-wait-before-exit-seconds %s is not covered by terminationGracePeriodSeconds %s", wait, tm.grace)
		}
	default:
		fail("unknown preset %q", preset)
	}
	return bad
}

// meshCases are the lifecycle settings each preset is rendered with.
var meshCases = []struct{ name, values string }{
	{"defaults", ``},
	{"short drain", `lifecycle: {preStopDelay: 1500ms, shutdownTimeout: 3s, telemetryFlushTimeout: 500ms, safetyMargin: 1s}`},
	{"preStop sleep", `lifecycle: {preStopDelay: 7s, preStopSleep: {enabled: true}}`},
	{"long quit timeout", `sidecar: {quitTimeout: 4s}`},
	{"with a native sidecar", `nativeSidecars: [{name: otel-collector, image: x}]`},
	{"user annotations kept", `podAnnotations: {example.com/owner: team-a}`},
}

// TestMeshPresetRules renders each preset with each lifecycle setting and
// checks exactly the annotations and timings the mesh documents.
func TestMeshPresetRules(t *testing.T) {
	for _, preset := range []string{"istio", "linkerd"} {
		for _, tc := range meshCases {
			t.Run(preset+"/"+tc.name, func(t *testing.T) {
				values := "sidecar: {preset: " + preset + "}\n" + tc.values
				if strings.HasPrefix(tc.values, "sidecar:") {
					values = strings.Replace(tc.values, "sidecar: {", "sidecar: {preset: "+preset+", ", 1)
				}
				r := mustRender(t, values)
				want := map[string]string{}
				if strings.Contains(tc.values, "podAnnotations") {
					want["example.com/owner"] = "team-a"
				}
				for _, p := range meshProblems(preset, r.Deployment, want) {
					t.Error(p)
				}
				tm, err := timingsOf(r.Deployment)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("grace %s, app drain %s, pre-stop delay %s, annotations %v", tm.grace, tm.drain, tm.preStopDelay, r.Deployment.Spec.Template.Annotations)
			})
		}
	}
}

// TestMeshRulesFail is the control: each hand-broken rendering must be
// reported.
func TestMeshRulesFail(t *testing.T) {
	for _, tc := range []struct {
		preset, name, key, value string
	}{
		{"istio", "no hold", "proxy.istio.io/config", `{"holdApplicationUntilProxyStarts": false, "terminationDrainDuration": "29s"}`},
		{"istio", "drain shorter than the app's", "proxy.istio.io/config", `{"holdApplicationUntilProxyStarts": true, "terminationDrainDuration": "10s"}`},
		{"istio", "drain shorter than the pre-stop delay", "proxy.istio.io/config", `{"holdApplicationUntilProxyStarts": true, "terminationDrainDuration": "4s"}`},
		{"istio", "drain as long as the grace period", "proxy.istio.io/config", `{"holdApplicationUntilProxyStarts": true, "terminationDrainDuration": "31s"}`},
		{"istio", "extra key", "proxy.istio.io/config", `{"holdApplicationUntilProxyStarts": true, "terminationDrainDuration": "29s", "drainDuration": "45s"}`},
		{"istio", "extra annotation", "sidecar.istio.io/inject", "false"},
		{"linkerd", "wait shorter than the pre-stop delay", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "5"},
		{"linkerd", "wait shorter than the drain", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "20"},
		{"linkerd", "wait not covered by the grace period", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "31"},
		{"linkerd", "wait not a number", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "29s"},
		{"linkerd", "no admin shutdown", "config.linkerd.io/proxy-admin-shutdown", "disabled"},
	} {
		t.Run(tc.preset+"/"+tc.name, func(t *testing.T) {
			d := mustRender(t, "sidecar: {preset: "+tc.preset+"}").Deployment
			if bad := meshProblems(tc.preset, d, nil); len(bad) != 0 {
				t.Fatalf("control input rejected: %v", bad)
			}
			d.Spec.Template.Annotations[tc.key] = tc.value
			bad := meshProblems(tc.preset, d, nil)
			if len(bad) == 0 {
				t.Errorf("meshProblems accepted %s = %q", tc.key, tc.value)
			}
			t.Logf("reported: %v", bad)
		})
	}
}
