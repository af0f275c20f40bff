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
// Istio (ProxyConfig reference; istio/istio#34855 on how drainDuration,
// parentShutdownDuration, terminationDrainDuration and the grace period
// interact): with holdApplicationUntilProxyStarts the app container starts
// only once Envoy is ready. On SIGTERM, which the proxy container gets at
// once, pilot-agent starts Envoy's graceful drain of inbound listeners:
// for drainDuration (--drain-time-s, whole seconds, at least 1s) Envoy
// answers with Connection: close and sends GOAWAY, then closes them. So
// drainDuration must end while the app still accepts (the pre-stop
// window), or Envoy is still steering clients to an app that refuses them.
// pilot-agent keeps Envoy up for terminationDrainDuration, then exits, so
// that must cover the app's whole drain (its last responses and its flush
// go through Envoy) and end inside terminationGracePeriodSeconds.
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
	// accepting is the shortest time the app keeps accepting connections
	// once termination starts: the preStop sleep plus the in-process
	// delay, which the quiet period may end early.
	accepting time.Duration
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
		m.accepting = m.preStopDelay
		if v, ok := env(&c, "APP_PRESTOP_QUIET_PERIOD"); ok {
			quiet, err := time.ParseDuration(v)
			if err != nil {
				return m, fmt.Errorf("APP_PRESTOP_QUIET_PERIOD=%q: %w", v, err)
			}
			if quiet > 0 {
				m.accepting = min(m.accepting, quiet)
			}
		}
		if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			sleep := time.Duration(l.PreStop.Sleep.Seconds) * time.Second
			m.preStopDelay += sleep
			m.accepting += sleep
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
		if keys := slices.Sorted(maps.Keys(cfg)); !slices.Equal(keys, []string{"drainDuration", "holdApplicationUntilProxyStarts", "terminationDrainDuration"}) {
			fail("proxy.istio.io/config keys %v, want exactly drainDuration, holdApplicationUntilProxyStarts and terminationDrainDuration", keys)
		}
		if cfg["holdApplicationUntilProxyStarts"] != true {
			fail("holdApplicationUntilProxyStarts = %v, want true (the app must not start before Envoy)", cfg["holdApplicationUntilProxyStarts"])
		}
		s, _ := cfg["drainDuration"].(string)
		switch envoyDrain, err := time.ParseDuration(s); {
		case err != nil:
			fail("drainDuration %q: %v", s, err)
		case envoyDrain < time.Second || envoyDrain%time.Second != 0:
			fail("drainDuration %s is not a whole number of seconds, at least 1s (Istio's validation, Envoy's --drain-time-s)", envoyDrain)
		case envoyDrain > tm.accepting:
			fail("drainDuration %s is longer than the %s the app surely keeps accepting (pre-stop delay or sleep, ended early by a quiet period): it may stop accepting before Envoy has told every inbound client to move", envoyDrain, tm.accepting)
		}
		s, _ = cfg["terminationDrainDuration"].(string)
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
	{"quiet period", `lifecycle: {preStopDelay: 7s, preStopQuietPeriod: 2500ms}`},
	{"quiet period longer than the delay", `lifecycle: {preStopDelay: 3s, preStopQuietPeriod: 4s}`},
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
				t.Logf("grace %s, app drain %s, pre-stop delay %s (accepting at least %s), annotations %v", tm.grace, tm.drain, tm.preStopDelay, tm.accepting, r.Deployment.Spec.Template.Annotations)
			})
		}
	}
}

// TestMeshRulesFail is the control: each hand-broken rendering must be
// reported.
func TestMeshRulesFail(t *testing.T) {
	const istio = "proxy.istio.io/config"
	for _, tc := range []struct {
		preset, name, values, key, value string
	}{
		{"istio", "no hold", "", istio, `{"holdApplicationUntilProxyStarts": false, "drainDuration": "5s", "terminationDrainDuration": "29s"}`},
		{"istio", "no drain duration (Envoy's 45s)", "", istio, `{"holdApplicationUntilProxyStarts": true, "terminationDrainDuration": "29s"}`},
		{"istio", "drain duration longer than the pre-stop delay", "", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "6s", "terminationDrainDuration": "29s"}`},
		{"istio", "drain duration longer than the quiet period", "lifecycle: {preStopQuietPeriod: 2s}", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "3s", "terminationDrainDuration": "29s"}`},
		{"istio", "drain duration longer than the preStop sleep", "lifecycle: {preStopDelay: 3s, preStopSleep: {enabled: true}}", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "4s", "terminationDrainDuration": "27s"}`},
		{"istio", "drain duration not whole seconds", "lifecycle: {preStopDelay: 1500ms}", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "1500ms", "terminationDrainDuration": "26s"}`},
		{"istio", "drain shorter than the app's", "", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "5s", "terminationDrainDuration": "10s"}`},
		{"istio", "drain shorter than the pre-stop delay", "", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "5s", "terminationDrainDuration": "4s"}`},
		{"istio", "drain as long as the grace period", "", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "5s", "terminationDrainDuration": "31s"}`},
		{"istio", "extra key", "", istio, `{"holdApplicationUntilProxyStarts": true, "drainDuration": "5s", "terminationDrainDuration": "29s", "proxyMetadata": {"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true"}}`},
		{"istio", "extra annotation", "", "sidecar.istio.io/inject", "false"},
		{"linkerd", "wait shorter than the pre-stop delay", "", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "5"},
		{"linkerd", "wait shorter than the drain", "", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "20"},
		{"linkerd", "wait not covered by the grace period", "", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "31"},
		{"linkerd", "wait not a number", "", "config.alpha.linkerd.io/proxy-wait-before-exit-seconds", "29s"},
		{"linkerd", "no admin shutdown", "", "config.linkerd.io/proxy-admin-shutdown", "disabled"},
	} {
		t.Run(tc.preset+"/"+tc.name, func(t *testing.T) {
			d := mustRender(t, "sidecar: {preset: "+tc.preset+"}\n"+tc.values).Deployment
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

// TestIstioPresetNeedsAnAcceptingWindow: Istio's drainDuration is whole
// seconds, at least 1s, so when the app may stop accepting sooner than that
// the chart refuses to render rather than let Envoy's drain outlast it.
func TestIstioPresetNeedsAnAcceptingWindow(t *testing.T) {
	for _, values := range []string{
		`lifecycle: {preStopDelay: "0"}`,
		`lifecycle: {preStopDelay: 500ms}`,
		`lifecycle: {preStopQuietPeriod: 999ms}`,
		`lifecycle: {preStopDelay: "0", preStopSleep: {enabled: true}}`,
	} {
		t.Run(values, func(t *testing.T) {
			_, err := renderChart(loadChart(t), parseValues(t, "sidecar: {preset: istio}\n"+values), renderOptions{})
			if want := "sidecar.preset istio needs the app to keep accepting for at least 1s"; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("render error = %v, want one containing %q", err, want)
			}
			// Linkerd has no such floor: the same values render.
			mustRender(t, "sidecar: {preset: linkerd}\n"+values)
		})
	}
}
