package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// valueCase is one set of values of the rendering matrix, shared with the
// e2e suite that sends the same renderings to a real kube-apiserver.
type valueCase struct {
	name   string
	values string
	// hostNetwork renderings cannot meet the restricted (or even baseline)
	// Pod Security Standard; they list the violations the Deployment and the
	// test pod must show.
	wantPSSViolations        []string
	wantTestPodPSSViolations []string
}

var valueMatrix = []valueCase{
	{name: "defaults"},
	{name: "prestop-sleep", values: `
lifecycle:
  preStopSleep:
    enabled: true
`},
	{name: "host-network", values: `
hostNetwork: true
listenHost: 127.0.0.1
ports: {http: 18080, admin: 18081}
probes: {host: 127.0.0.1}
tests: {url: "http://127.0.0.1:18080/"}
`,
		wantPSSViolations:        []string{"host namespaces", "container kubeskel probe or lifecycle host 127.0.0.1"},
		wantTestPodPSSViolations: []string{"host namespaces"},
	},
	{name: "all-optional-objects", values: `
autoscaling:
  enabled: true
  targetMemoryUtilizationPercentage: 80
ingress:
  enabled: true
  className: nginx
  annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: "620"}
  tls: [{secretName: kubeskel-tls, hosts: [kubeskel.example.com]}]
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
    relabelings:
      - sourceLabels: [__meta_kubernetes_pod_node_name]
        targetLabel: node
networkPolicy:
  enabled: true
  allowExternal: false
  metricsNamespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
  egress:
    - ports: [{port: 53, protocol: UDP}]
podDisruptionBudget:
  minAvailable: 50%
service:
  type: LoadBalancer
  trafficDistribution: PreferSameZone
`},
	{name: "tls", values: `
tls:
  secretName: kubeskel-tls
  clientCA: {enabled: true, secretName: kubeskel-client-ca}
extraVolumes: [{name: scratch, emptyDir: {}}]
extraVolumeMounts: [{name: scratch, mountPath: /scratch}]
`},
	{name: "tls-cert-manager", values: `
tls:
  certManager:
    enabled: true
    issuerRef: {name: internal-ca, kind: ClusterIssuer}
    dnsNames: [kubeskel.example.com]
`},
	{name: "long-durations", values: `
lifecycle:
  preStopDelay: 1m30s
  shutdownTimeout: 1h
  telemetryFlushTimeout: 1500ms
  safetyMargin: 2.5s
http:
  idleTimeout: 10m20s
`},
	{name: "sidecars", values: `
otel:
  tracesExporter: otlp
  exporterOtlpEndpoint: http://127.0.0.1:4318
  resourceAttributes: {deployment.environment.name: test}
nativeSidecars:
  - name: otel-collector
    image: otel/opentelemetry-collector:0.120.0
    args: ["--config=/conf/collector.yaml"]
    ports: [{name: otlp-http, containerPort: 4318}]
initContainers:
  - name: wait
    image: ghcr.io/kubeskel/kubeskel:0.1.0
    args: [probe, http://example.com/]
extraContainers:
  - name: log-shipper
    image: fluent/fluent-bit:3.2
extraEnv:
  - {name: APP_LOG_LEVEL, value: debug}
extraVolumes:
  - {name: tmp, emptyDir: {}}
extraVolumeMounts:
  - {name: tmp, mountPath: /tmp}
`},
	{name: "istio", values: `
sidecar:
  preset: istio
`},
	{name: "linkerd", values: `
sidecar:
  preset: linkerd
`},
	{name: "quit-url-prestop-sleep", values: `
lifecycle:
  preStopDelay: 1500ms
  preStopSleep: {enabled: true}
sidecar:
  quitURL: http://127.0.0.1:9901/quitquitquit
  quitTimeout: 4s
checks:
  tcp: [db:5432, cache:6379]
  http: [http://auth/healthz]
commonLabels: {team: platform}
image:
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
`},
}

// effectiveLifecycle reads the values that feed the grace period after
// merging the user values over the chart defaults.
func effectiveLifecycle(t *testing.T, vals map[string]any) lifecycleValues {
	t.Helper()
	merged, err := chartutil.CoalesceValues(loadChart(t), vals)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) any {
		v, err := merged.PathValue(path)
		if err != nil {
			t.Fatalf("value %s: %v", path, err)
		}
		return v
	}
	l := lifecycleValues{
		PreStopDelay:          get("lifecycle.preStopDelay").(string),
		ShutdownTimeout:       get("lifecycle.shutdownTimeout").(string),
		TelemetryFlushTimeout: get("lifecycle.telemetryFlushTimeout").(string),
		SafetyMargin:          get("lifecycle.safetyMargin").(string),
		PreStopSleep:          get("lifecycle.preStopSleep.enabled").(bool),
		QuitURL:               get("sidecar.quitURL").(string),
		QuitTimeout:           get("sidecar.quitTimeout").(string),
	}
	if l.QuitURL == "" && get("sidecar.preset").(string) != "" {
		l.QuitURL = "preset"
	}
	if native, _ := get("nativeSidecars").([]any); len(native) > 0 {
		l.NativeSidecarShutdown = get("lifecycle.nativeSidecarShutdown").(string)
	}
	return l
}

// TestRenderMatrix renders every case and checks the properties that must
// hold for all of them.
func TestRenderMatrix(t *testing.T) {
	known := binaryVars(t)
	for _, tc := range valueMatrix {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values)
			d := r.Deployment

			if err := checkGracePeriod(d); err != nil {
				t.Errorf("grace period: %v", err)
			}
			want := expectedGraceSeconds(t, effectiveLifecycle(t, r.Values))
			if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != want {
				t.Errorf("terminationGracePeriodSeconds = %d, want %d (ceil of the drain plus safetyMargin)", got, want)
			}

			for name, spec := range r.podSpecs() {
				got := pssRestrictedViolations(spec)
				if strings.HasPrefix(name, "Pod/") {
					if !slices.Equal(got, tc.wantTestPodPSSViolations) {
						t.Errorf("%s PSS restricted violations = %v, want %v", name, got, tc.wantTestPodPSSViolations)
					}
					continue
				}
				if !slices.Equal(got, tc.wantPSSViolations) {
					t.Errorf("%s PSS restricted violations = %v, want %v", name, got, tc.wantPSSViolations)
				}
				for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
					if dups := duplicateEnv(&c); len(dups) != 0 {
						t.Errorf("%s container %s repeats variables %v (kubectl apply drops all but one)", name, c.Name, dups)
					}
					if unknown := unknownAppVars(&c, known); len(unknown) != 0 {
						t.Errorf("%s container %s sets variables the binary does not know: %v", name, c.Name, unknown)
					}
				}
				if got, want := spec.EnableServiceLinks, false; got == nil || *got != want {
					t.Errorf("%s enableServiceLinks = %v, want %v", name, got, want)
				}
				if got, want := spec.AutomountServiceAccountToken, false; got == nil || *got != want {
					t.Errorf("%s automountServiceAccountToken = %v, want %v", name, got, want)
				}
			}

			checkProbes(t, r.appContainer(t))
			checkLabels(t, r)
			checkDownwardAPI(t, r.appContainer(t))

			if got, want := len(r.objectsOfKind("Service")) > 0, true; got != want {
				t.Fatalf("Service rendered = %v, want %v", got, want)
			}
			for _, o := range r.objectsOfKind("Service") {
				svc := o.Obj.(*corev1.Service)
				if strings.HasSuffix(svc.Name, "-metrics") {
					continue
				}
				// http, and grpc when enabled (the default): never admin.
				var targets []string
				for _, port := range svc.Spec.Ports {
					targets = append(targets, port.TargetPort.String())
				}
				if got, want := strings.Join(targets, ","), "http,grpc"; got != want {
					t.Errorf("traffic Service targetPorts = %q, want %q (admin must not be exposed)", got, want)
				}
			}
			if got, want := len(r.Hooks), 1; got != want {
				t.Errorf("%d hooks rendered, want %d (the helm test pod)", got, want)
			}
		})
	}
}

func checkProbes(t *testing.T, c *corev1.Container) {
	t.Helper()
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if _, ok := ports["http"]; !ok {
		t.Errorf("no container port named http: %v", c.Ports)
	}
	if _, ok := ports["admin"]; !ok {
		t.Errorf("no container port named admin: %v", c.Ports)
	}
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, "/live"},
		{"livenessProbe", c.LivenessProbe, "/live"},
		{"readinessProbe", c.ReadinessProbe, "/ready"},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s is not an httpGet probe: %+v", tc.name, tc.probe)
			continue
		}
		if got, want := tc.probe.HTTPGet.Path, tc.path; got != want {
			t.Errorf("%s path = %q, want %q", tc.name, got, want)
		}
		if got, want := tc.probe.HTTPGet.Port.String(), "admin"; got != want {
			t.Errorf("%s port = %q, want %q", tc.name, got, want)
		}
	}
}

func checkLabels(t *testing.T, r *rendering) {
	t.Helper()
	for _, o := range r.Objects {
		labels := labelsOf(o)
		for _, key := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if labels[key] == "" {
				t.Errorf("%s %s has no %s label", o.Kind, o.Name, key)
			}
		}
	}
}

func checkDownwardAPI(t *testing.T, c *corev1.Container) {
	t.Helper()
	fields := map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName", "POD_UID": "metadata.uid"}
	seen := map[string]int{}
	for i, e := range c.Env {
		seen[e.Name] = i
		if want, ok := fields[e.Name]; ok {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
				t.Errorf("%s is not from the downward API", e.Name)
				continue
			}
			if got := e.ValueFrom.FieldRef.FieldPath; got != want {
				t.Errorf("%s fieldPath = %q, want %q", e.Name, got, want)
			}
		}
	}
	attrs, _ := env(c, "OTEL_RESOURCE_ATTRIBUTES")
	for _, want := range []string{"k8s.pod.name=$(POD_NAME)", "k8s.namespace.name=$(POD_NAMESPACE)", "k8s.node.name=$(NODE_NAME)", "k8s.pod.uid=$(POD_UID)"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("OTEL_RESOURCE_ATTRIBUTES = %q, missing %q", attrs, want)
		}
	}
	// $(VAR) only expands variables defined earlier in the list.
	if i, j := seen["POD_UID"], seen["OTEL_RESOURCE_ATTRIBUTES"]; i > j {
		t.Errorf("OTEL_RESOURCE_ATTRIBUTES (env %d) comes before POD_UID (env %d); $(POD_UID) would not expand", j, i)
	}
	if _, ok := env(c, "OTEL_SERVICE_NAME"); !ok {
		t.Errorf("OTEL_SERVICE_NAME is not set")
	}
	// GOMEMLIMIT: the binary sets it from the cgroup (TestMemoryLimitRatio).
	if v, ok := env(c, "GOMEMLIMIT"); ok {
		t.Errorf("GOMEMLIMIT is set (%q); the binary derives it from the cgroup", v)
	}
}

// TestDefaults pins the behaviour of the default values.
func TestDefaults(t *testing.T) {
	r := mustRender(t, "")
	d := r.Deployment
	if got, want := *d.Spec.Template.Spec.TerminationGracePeriodSeconds, int64(30); got != want {
		t.Errorf("terminationGracePeriodSeconds = %d, want %d (5s delay + 20s shutdown + 2s flush + 1s admin stop + 2s margin)", got, want)
	}
	app := r.appContainer(t)
	for name, want := range map[string]string{
		"APP_TERMINATION_GRACE_PERIOD": "30s",
		"APP_PRESTOP_DELAY":            "5s",
		"APP_HTTP_ADDR":                ":8080",
		"APP_ADMIN_ADDR":               ":8081",
		"OTEL_SERVICE_NAME":            "kubeskel",
		"APP_PPROF":                    "false",
	} {
		if got, _ := env(app, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"APP_SIDECAR_READY_URL", "APP_SIDECAR_QUIT_URL", "APP_CHECK_TCP", "APP_CHECK_HTTP"} {
		if _, ok := env(app, name); ok {
			t.Errorf("%s is set by default", name)
		}
	}
	ru := d.Spec.Strategy.RollingUpdate
	if got, want := ru.MaxUnavailable.String(), "0"; got != want {
		t.Errorf("maxUnavailable = %s, want %s", got, want)
	}
	if got, want := ru.MaxSurge.String(), "1"; got != want {
		t.Errorf("maxSurge = %s, want %s", got, want)
	}
	if got, want := *d.Spec.Replicas, int32(2); got != want {
		t.Errorf("replicas = %d, want %d", got, want)
	}
	if app.Lifecycle != nil {
		t.Errorf("lifecycle = %+v, want none (the delay is in-process)", app.Lifecycle)
	}
	kinds := map[string]int{}
	for _, o := range r.Objects {
		kinds[o.Kind]++
	}
	if got, want := fmt.Sprint(kinds), "map[Deployment:1 Pod:1 PodDisruptionBudget:1 Service:1 ServiceAccount:1]"; got != want {
		t.Errorf("kinds = %s, want %s", got, want)
	}
	for _, c := range d.Spec.Template.Spec.TopologySpreadConstraints {
		if c.LabelSelector == nil || c.LabelSelector.MatchLabels["app.kubernetes.io/name"] != "kubeskel" {
			t.Errorf("topology spread %s has no selector: %+v", c.TopologyKey, c.LabelSelector)
		}
		if got, want := fmt.Sprint(c.MatchLabelKeys), "[pod-template-hash]"; got != want {
			t.Errorf("topology spread %s matchLabelKeys = %s, want %s", c.TopologyKey, got, want)
		}
	}
	if want := "terminationGracePeriodSeconds = 30  (drain 28000ms + safetyMargin 2s)"; !strings.Contains(r.Notes, want) {
		t.Errorf("NOTES.txt does not show %q:\n%s", want, r.Notes)
	}
	pod := r.Hooks[0].Obj.(*corev1.Pod)
	if got, want := strings.Join(pod.Spec.Containers[0].Args, " "), "probe -timeout 5s http://kubeskel.default.svc:80/"; got != want {
		t.Errorf("test pod args = %q, want %q", got, want)
	}
	if got, want := pod.Annotations["helm.sh/hook"], "test"; got != want {
		t.Errorf("test pod hook = %q, want %q", got, want)
	}
}

// TestOptions checks what each non-default case renders differently.
func TestOptions(t *testing.T) {
	byName := map[string]string{}
	for _, tc := range valueMatrix {
		byName[tc.name] = tc.values
	}

	t.Run("prestop-sleep", func(t *testing.T) {
		r := mustRender(t, byName["prestop-sleep"])
		app := r.appContainer(t)
		if app.Lifecycle == nil || app.Lifecycle.PreStop == nil || app.Lifecycle.PreStop.Sleep == nil {
			t.Fatalf("no preStop sleep: %+v", app.Lifecycle)
		}
		if got, want := app.Lifecycle.PreStop.Sleep.Seconds, int64(5); got != want {
			t.Errorf("preStop sleep = %ds, want %ds", got, want)
		}
		if got, want := mustEnv(t, app, "APP_PRESTOP_DELAY"), "0s"; got != want {
			t.Errorf("APP_PRESTOP_DELAY = %q, want %q", got, want)
		}
		if got, want := *r.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds, int64(30); got != want {
			t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, want)
		}
	})

	t.Run("pprof", func(t *testing.T) {
		app := mustRender(t, "pprof: true\n").appContainer(t)
		if got, want := mustEnv(t, app, "APP_PPROF"), "true"; got != want {
			t.Errorf("APP_PPROF = %q, want %q", got, want)
		}
	})

	t.Run("host-network", func(t *testing.T) {
		r := mustRender(t, byName["host-network"])
		spec := r.Deployment.Spec.Template.Spec
		if got, want := spec.DNSPolicy, corev1.DNSClusterFirstWithHostNet; !spec.HostNetwork || got != want {
			t.Errorf("hostNetwork = %v, dnsPolicy = %q, want true and %q", spec.HostNetwork, got, want)
		}
		app := r.appContainer(t)
		if got, want := mustEnv(t, app, "APP_ADMIN_ADDR"), "127.0.0.1:18081"; got != want {
			t.Errorf("APP_ADMIN_ADDR = %q, want %q", got, want)
		}
		if got, want := app.ReadinessProbe.HTTPGet.Host, "127.0.0.1"; got != want {
			t.Errorf("readiness probe host = %q, want %q", got, want)
		}
		pod := r.Hooks[0].Obj.(*corev1.Pod)
		if !pod.Spec.HostNetwork {
			t.Errorf("test pod is not on the host network; it cannot reach a loopback tests.url")
		}
		if got, want := pod.Spec.Containers[0].Args[3], "http://127.0.0.1:18080/"; got != want {
			t.Errorf("test pod URL = %q, want %q", got, want)
		}
	})

	t.Run("all-optional-objects", func(t *testing.T) {
		r := mustRender(t, byName["all-optional-objects"])
		if r.Deployment.Spec.Replicas != nil {
			t.Errorf("replicas = %d with an HPA, want unset so upgrades do not fight the HPA", *r.Deployment.Spec.Replicas)
		}
		hpa := r.objectsOfKind("HorizontalPodAutoscaler")[0].Obj.(*autoscalingv2.HorizontalPodAutoscaler)
		if got, want := len(hpa.Spec.Metrics), 2; got != want {
			t.Errorf("HPA metrics = %d, want %d", got, want)
		}
		ing := r.objectsOfKind("Ingress")[0].Obj.(*networkingv1.Ingress)
		if got, want := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name, "http"; got != want {
			t.Errorf("Ingress backend port = %q, want %q", got, want)
		}
		np := r.objectsOfKind("NetworkPolicy")[0].Obj.(*networkingv1.NetworkPolicy)
		if got, want := fmt.Sprint(np.Spec.PolicyTypes), "[Ingress Egress]"; got != want {
			t.Errorf("NetworkPolicy policyTypes = %s, want %s", got, want)
		}
		testPod := r.Hooks[0].Obj.(*corev1.Pod)
		if got, want := testPod.Labels["kubeskel-client"], "true"; got != want {
			t.Errorf("test pod label kubeskel-client = %q, want %q (else the NetworkPolicy blocks helm test)", got, want)
		}
		pdb := r.objectsOfKind("PodDisruptionBudget")[0].Obj.(*policyv1.PodDisruptionBudget)
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.String() != "50%" || pdb.Spec.MaxUnavailable != nil {
			t.Errorf("PDB minAvailable = %v, maxUnavailable = %v, want 50%% and unset", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
		}
		var metricsSvc *corev1.Service
		for _, o := range r.objectsOfKind("Service") {
			if s := o.Obj.(*corev1.Service); s.Name == "kubeskel-metrics" {
				metricsSvc = s
			}
		}
		if metricsSvc == nil {
			t.Fatalf("no kubeskel-metrics Service for the ServiceMonitor")
		}
		if !metricsSvc.Spec.PublishNotReadyAddresses || metricsSvc.Spec.Ports[0].TargetPort.String() != "admin" {
			t.Errorf("metrics Service = %+v, want publishNotReadyAddresses and targetPort admin", metricsSvc.Spec)
		}
		if got, want := len(r.objectsOfKind("ServiceMonitor")), 1; got != want {
			t.Errorf("ServiceMonitors = %d, want %d", got, want)
		}
	})

	t.Run("long-durations", func(t *testing.T) {
		r := mustRender(t, byName["long-durations"])
		// 90s + 3600s + 1.5s + 1s admin stop + 2.5s = 3695s.
		if got, want := *r.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds, int64(3695); got != want {
			t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, want)
		}
	})

	t.Run("sidecars", func(t *testing.T) {
		r := mustRender(t, byName["sidecars"])
		spec := r.Deployment.Spec.Template.Spec
		if got, want := len(spec.InitContainers), 2; got != want {
			t.Fatalf("init containers = %d, want %d", got, want)
		}
		sidecar := spec.InitContainers[0]
		if got, want := sidecar.Name, "otel-collector"; got != want {
			t.Errorf("first init container = %q, want %q (native sidecars start first)", got, want)
		}
		if sidecar.RestartPolicy == nil || *sidecar.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("otel-collector restartPolicy = %v, want Always", sidecar.RestartPolicy)
		}
		if spec.InitContainers[1].RestartPolicy != nil {
			t.Errorf("regular init container has restartPolicy %v", *spec.InitContainers[1].RestartPolicy)
		}
		// extraEnv replaces the chart's variable in place.
		app := r.appContainer(t)
		if got, want := mustEnv(t, app, "APP_LOG_LEVEL"), "debug"; got != want {
			t.Errorf("APP_LOG_LEVEL = %q, want %q (from extraEnv)", got, want)
		}
		if got, want := mustEnv(t, app, "OTEL_EXPORTER_OTLP_ENDPOINT"), "http://127.0.0.1:4318"; got != want {
			t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT = %q, want %q", got, want)
		}
	})

	for _, tc := range []struct {
		preset, readyURL, quitURL string
		annotations               map[string]string
	}{
		{"istio", "http://127.0.0.1:15021/healthz/ready", "http://127.0.0.1:15020/quitquitquit", map[string]string{
			"proxy.istio.io/config": `{"holdApplicationUntilProxyStarts": true, "drainDuration": "5s", "terminationDrainDuration": "29s"}`,
		}},
		{"linkerd", "http://127.0.0.1:4191/ready", "http://127.0.0.1:4191/shutdown", map[string]string{
			"config.alpha.linkerd.io/proxy-wait-before-exit-seconds": "29",
			"config.linkerd.io/proxy-admin-shutdown":                 "enabled",
		}},
	} {
		t.Run(tc.preset, func(t *testing.T) {
			r := mustRender(t, byName[tc.preset])
			app := r.appContainer(t)
			if got, want := mustEnv(t, app, "APP_SIDECAR_READY_URL"), tc.readyURL; got != want {
				t.Errorf("APP_SIDECAR_READY_URL = %q, want %q", got, want)
			}
			if got, want := mustEnv(t, app, "APP_SIDECAR_QUIT_URL"), tc.quitURL; got != want {
				t.Errorf("APP_SIDECAR_QUIT_URL = %q, want %q", got, want)
			}
			// 5s + 20s + 2s + 1s quit + 1s admin stop = 29s of drain (the
			// proxy stays that long), plus the 2s margin.
			if got, want := *r.Deployment.Spec.Template.Spec.TerminationGracePeriodSeconds, int64(31); got != want {
				t.Errorf("terminationGracePeriodSeconds = %d, want %d", got, want)
			}
			ann := r.Deployment.Spec.Template.Annotations
			for k, want := range tc.annotations {
				if got := ann[k]; got != want {
					t.Errorf("annotation %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// duplicateEnv lists variable names a container sets more than once.
func duplicateEnv(c *corev1.Container) []string {
	seen := map[string]int{}
	var dups []string
	for _, e := range c.Env {
		if seen[e.Name]++; seen[e.Name] == 2 {
			dups = append(dups, e.Name)
		}
	}
	return dups
}

func mustEnv(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	v, ok := env(c, name)
	if !ok {
		t.Fatalf("%s is not set on container %s", name, c.Name)
	}
	return v
}

// TestRenderErrors checks values the templates refuse even when schema
// validation is skipped (helm --skip-schema-validation).
func TestRenderErrors(t *testing.T) {
	for _, tc := range []struct {
		name, values, kubeVersion, wantErr string
	}{
		{"negative duration", "lifecycle: {shutdownTimeout: -5s}", "", `invalid duration "-5s"`},
		{"words", "lifecycle: {telemetryFlushTimeout: five seconds}", "", `invalid duration "five seconds"`},
		{"unit missing", "lifecycle: {preStopDelay: \"5\"}", "", `invalid duration "5"`},
		{"margin below 1s", "lifecycle: {safetyMargin: 500ms}", "", "must be at least 1s"},
		{"kubernetes 1.29", "", "v1.29.0", "requires kubeVersion: >=1.30.0-0"},
		{"hpa without metric", "autoscaling: {enabled: true, targetCPUUtilizationPercentage: null}", "", "needs targetCPUUtilizationPercentage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(loadChart(t), parseValues(t, tc.values), renderOptions{SkipSchemaValidation: true, KubeVersion: tc.kubeVersion})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("render error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// labelsOf returns the labels of any rendered object.
func labelsOf(o object) map[string]string {
	return o.Obj.(metav1.Object).GetLabels()
}
