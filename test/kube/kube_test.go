//go:build kube

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	containerName = "kubeskel" // the chart's container (Chart.Name)
	release       = "e2e"
	deployment    = "e2e-kubeskel"
	namespace     = "kubeskel-e2e"
	// shortGrace is the control's terminationGracePeriodSeconds: shorter
	// than the 5 s in-process delay, so the kubelet must SIGKILL.
	shortGrace = 2
)

// suite holds what every step needs to reach the cluster.
type suite struct {
	t          *testing.T
	work       string
	kubectlBin string
	helmBin    string
	kubeconfig string
	chart      string
	values     string
	ns         string
	env        []string
}

func newSuite(t *testing.T) *suite {
	t.Helper()
	work, err := filepath.Abs(envOr("KUBESKEL_KUBE_WORK", ".work"))
	if err != nil {
		t.Fatal(err)
	}
	s := &suite{
		t:          t,
		work:       work,
		kubectlBin: envOr("KUBESKEL_KUBECTL", "kubectl"),
		helmBin:    envOr("KUBESKEL_HELM", "helm"),
		kubeconfig: filepath.Join(work, "admin.kubeconfig"),
		chart:      envOr("KUBESKEL_KUBE_CHART", "../../charts/kubeskel"),
		values:     "values-node.yaml",
		ns:         namespace,
	}
	if _, err := os.Stat(s.kubeconfig); err != nil {
		t.Fatalf("no cluster: %v; run `make e2e-kube` (or hack/kube-up.sh first)", err)
	}
	// Keep helm's and kubectl's caches in the work folder, not in $HOME.
	s.env = append(os.Environ(),
		"KUBECONFIG="+s.kubeconfig,
		"KUBECACHEDIR="+filepath.Join(work, "kubectl-cache"),
		"HELM_CACHE_HOME="+filepath.Join(work, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(work, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(work, "helm", "data"),
	)
	return s
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func (s *suite) logPath(component string) string {
	return filepath.Join(s.work, "logs", component+".log")
}

func (s *suite) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = s.env
	return cmd
}

// run runs bin with args and returns its combined output; the error names
// the command and carries the output.
func (s *suite) run(ctx context.Context, timeout time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := s.command(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *suite) kubectl(ctx context.Context, args ...string) (string, error) {
	return s.run(ctx, 2*time.Minute, s.kubectlBin, args...)
}

func (s *suite) helm(ctx context.Context, args ...string) (string, error) {
	return s.run(ctx, 3*time.Minute, s.helmBin, args...)
}

// mustKubectl and mustHelm fail the test at once when the command fails.
func (s *suite) mustKubectl(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *suite) mustHelm(ctx context.Context, t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.helm(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rollout waits for the Deployment's rollout. Helm's own --wait reports
// success too early with one replica and maxUnavailable 1.
func (s *suite) rollout(ctx context.Context, t *testing.T) {
	t.Helper()
	start := time.Now()
	s.mustKubectl(ctx, t, "-n", s.ns, "rollout", "status", "deployment/"+deployment, "--timeout=180s")
	t.Logf("rollout complete in %.1fs", time.Since(start).Seconds())
}

// readyPod returns the one Ready, not terminating pod of the release.
func (s *suite) readyPod(ctx context.Context, t *testing.T) podInfo {
	t.Helper()
	pods := s.readyPods(ctx, t, 1)
	return pods[0]
}

// readyPods waits up to a minute for exactly n Ready, not terminating pods
// of the release and returns them.
func (s *suite) readyPods(ctx context.Context, t *testing.T, n int) []podInfo {
	t.Helper()
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := s.mustKubectl(ctx, t, "-n", s.ns, "get", "pods", "-l", "app.kubernetes.io/instance="+release, "-o", "json")
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		var ready []podInfo
		for _, raw := range list.Items {
			if p, ok := parsePod(t, raw); ok {
				ready = append(ready, p)
			}
		}
		if len(ready) == n {
			return ready
		}
		if time.Now().After(deadline) {
			t.Fatalf("want exactly %d Ready pods of release %s, have %d:\n%s", n, release, len(ready), out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// parsePod reads the termination settings of a pod that is Running, Ready
// and not terminating.
func parsePod(t *testing.T, raw json.RawMessage) (podInfo, bool) {
	t.Helper()
	var pod struct {
		Metadata struct {
			Name              string     `json:"name"`
			UID               string     `json:"uid"`
			DeletionTimestamp *time.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds int64 `json:"terminationGracePeriodSeconds"`
			Containers                    []struct {
				Name      string `json:"name"`
				Resources struct {
					Limits map[string]string `json:"limits"`
				} `json:"resources"`
				Env []struct {
					Name  string `json:"name"`
					Value string `json:"value"`
				} `json:"env"`
				Lifecycle *struct {
					PreStop *struct {
						Sleep *struct {
							Seconds int64 `json:"seconds"`
						} `json:"sleep"`
					} `json:"preStop"`
				} `json:"lifecycle"`
			} `json:"containers"`
		} `json:"spec"`
		Status podStatus `json:"status"`
	}
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Metadata.DeletionTimestamp != nil || pod.Status.Phase != "Running" || !pod.Status.ready() {
		return podInfo{}, false
	}
	p := podInfo{
		name:  pod.Metadata.Name,
		uid:   pod.Metadata.UID,
		grace: time.Duration(pod.Spec.TerminationGracePeriodSeconds) * time.Second,
		env:   map[string]string{},
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != containerName {
			continue
		}
		for _, e := range c.Env {
			p.env[e.Name] = e.Value
		}
		p.memoryLimit = c.Resources.Limits["memory"]
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
			p.preStopSleep = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
		}
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == containerName {
			_, p.containerID, _ = strings.Cut(c.ContainerID, "://")
		}
	}
	var err error
	if p.appDelay, err = time.ParseDuration(p.env["APP_PRESTOP_DELAY"]); err != nil {
		t.Fatalf("pod %s: APP_PRESTOP_DELAY: %v", p.name, err)
	}
	// The pod listens on its pod IP: the admin port is reached there.
	_, adminPort, err := net.SplitHostPort(p.env["APP_ADMIN_ADDR"])
	if err != nil {
		t.Fatalf("pod %s: APP_ADMIN_ADDR: %v", p.name, err)
	}
	if p.containerID == "" || pod.Status.PodIP == "" {
		t.Fatalf("pod %s: no container ID or pod IP", p.name)
	}
	p.adminAddr = net.JoinHostPort(pod.Status.PodIP, adminPort)
	return p, true
}

// terminateAndCheck terminates the ready pod with trigger, prints the
// timeline and returns the problems check found.
func (s *suite) terminateAndCheck(ctx context.Context, t *testing.T, how string, trigger func(pod podInfo) error) []string {
	t.Helper()
	pod := s.readyPod(ctx, t)
	obs, err := s.terminate(ctx, how, pod, func() error { return trigger(pod) })
	if err != nil {
		t.Fatal(err)
	}
	tl := timeline(obs)
	t.Log("\n" + tl)
	s.saveArtifact(t, strings.ReplaceAll(t.Name(), "/", "_")+".timeline.txt", tl)
	return check(obs)
}

// serviceURL returns the http:// URL of the release's traffic Service at its
// ClusterIP, which kube-proxy routes to the ready pods.
func (s *suite) serviceURL(ctx context.Context, t *testing.T) string {
	t.Helper()
	out := s.mustKubectl(ctx, t, "-n", s.ns, "get", "service", deployment,
		"-o", `jsonpath={.spec.clusterIP} {.spec.ports[?(@.name=="http")].port}`)
	ip, port, ok := strings.Cut(strings.TrimSpace(out), " ")
	if !ok || net.ParseIP(ip) == nil || port == "" {
		t.Fatalf("service %s: clusterIP and port = %q", deployment, out)
	}
	return "http://" + net.JoinHostPort(ip, port) + "/"
}

func (s *suite) saveArtifact(t *testing.T, name, text string) {
	t.Helper()
	dir := filepath.Join(s.work, "artifacts")
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
	}
	if err != nil {
		t.Logf("saving %s: %v", name, err)
	}
}

func (s *suite) deletePod(ctx context.Context) func(podInfo) error {
	return func(pod podInfo) error {
		_, err := s.kubectl(ctx, "-n", s.ns, "delete", "pod", pod.name, "--wait=false")
		return err
	}
}

func TestKube(t *testing.T) {
	s := newSuite(t)
	ctx := t.Context()
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpState()
		}
	})

	s.mustKubectl(ctx, t, "create", "namespace", s.ns)
	waitFor(t, 60*time.Second, "service account "+s.ns+"/default", func() bool {
		_, err := s.kubectl(ctx, "-n", s.ns, "get", "serviceaccount", "default")
		return err == nil
	})

	steps := []struct {
		name string
		run  func(t *testing.T)
		// blocking: the later steps need this one to have passed.
		blocking bool
	}{
		{"install", func(t *testing.T) {
			s.mustHelm(ctx, t, "install", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
			pod := s.readyPod(ctx, t)
			url := s.serviceURL(ctx, t)
			// A Ready pod is routable only once kube-proxy has synced its
			// endpoint (it syncs at most once a second); until then the
			// ClusterIP refuses connections.
			s.waitRouted(ctx, t, url)
			body := httpGet(t, url)
			if !strings.Contains(body, pod.name) {
				t.Errorf("GET %s = %q, want it to name pod %s", url, body, pod.name)
			}
		}, true},
		{"memory-limit", func(t *testing.T) {
			// The binary reads the limit from the container's cgroup, not
			// from the pod spec: compare the two.
			pod := s.readyPod(ctx, t)
			limit, err := parseQuantity(pod.memoryLimit)
			if err != nil {
				t.Fatalf("pod %s resources.limits.memory: %v", pod.name, err)
			}
			ratio, err := strconv.ParseFloat(pod.env["APP_MEMORY_LIMIT_RATIO"], 64)
			if err != nil {
				t.Fatalf("pod %s APP_MEMORY_LIMIT_RATIO: %v", pod.name, err)
			}
			logs := s.mustKubectl(ctx, t, "-n", s.ns, "logs", pod.name, "-c", containerName)
			bad := checkMemoryLimit(logs, limit, ratio)
			for _, p := range bad {
				t.Error(p)
			}
			for line := range strings.Lines(logs) {
				if strings.Contains(line, `"msg":"memory limit"`) {
					t.Logf("pod limit %s = %d bytes, ratio %v, want gomemlimit %d; the pod logged: %s",
						pod.memoryLimit, limit, ratio, int64(math.Floor(float64(limit)*ratio)), strings.TrimSpace(line))
				}
			}
		}, false},
		{"helm-test", func(t *testing.T) {
			// No cluster DNS: the test pod probes the Service's ClusterIP.
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values,
				"--set", "tests.url="+s.serviceURL(ctx, t))
			s.rollout(ctx, t)
			out := s.mustHelm(ctx, t, "test", release, "-n", s.ns, "--timeout", "2m")
			t.Logf("helm test:\n%s", out)
		}, false},
		{"clusterip-routing", func(t *testing.T) {
			// Three replicas behind the ClusterIP: kube-proxy's rules must
			// spread new connections over all of them.
			const replicas = 3
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values,
				"--set", fmt.Sprintf("replicaCount=%d", replicas))
			s.rollout(ctx, t)
			want := map[string]bool{}
			for _, p := range s.readyPods(ctx, t, replicas) {
				want[p.name] = true
			}
			url := s.serviceURL(ctx, t)
			// The suite runs in the node's namespace: kube-proxy's nftables
			// table there must hold the ClusterIP.
			out, err := s.run(ctx, 30*time.Second, "nft", "list", "table", "ip", "kube-proxy")
			if err != nil {
				t.Fatal(err)
			}
			u, err := neturl.Parse(url)
			if err != nil {
				t.Fatal(err)
			}
			clusterIP := u.Hostname()
			if !strings.Contains(out, clusterIP) {
				t.Fatalf("kube-proxy's nftables table has no rule for ClusterIP %s:\n%s", clusterIP, out)
			}
			seen := s.spread(ctx, t, url, want)
			if len(seen) != replicas {
				t.Errorf("requests through the ClusterIP reached %d of %d replicas: %v", len(seen), replicas, seen)
			}
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
		}, true},
		{"rollout-under-load", func(t *testing.T) {
			o := s.rolloutUnderLoad(ctx, t, 3, 2)
			table := o.table("rollout under load (chart defaults, APP_PRESTOP_DELAY=5s)")
			t.Log("\n" + table)
			s.saveArtifact(t, "rollout-under-load.txt", table)
			for _, p := range o.problems() {
				t.Error(p)
			}
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
		}, true},
		{"control-no-prestop-delay-under-load", func(t *testing.T) {
			// The seed's pattern: Shutdown at SIGTERM, while kube-proxy still
			// routes new connections and conntrack pins old ones to the pod.
			o := s.rolloutUnderLoad(ctx, t, 1, 1, "--set", "lifecycle.preStopDelay=0s")
			table := o.table("control: APP_PRESTOP_DELAY=0s")
			t.Log("\n" + table)
			s.saveArtifact(t, "control-no-prestop-delay.txt", table)
			if o.sum.Failed() == 0 {
				t.Errorf("control: no failed request with APP_PRESTOP_DELAY=0s over %d requests; the harness cannot see the drop it guards against", o.sum.Requests)
			}
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
		}, true},
		{"control-no-connection-close-under-load", func(t *testing.T) {
			// The delay kept, but no "Connection: close" during it: pooled
			// connections that conntrack pins to the terminating pod keep
			// sending to it until its Shutdown closes them. extraEnv
			// replaces the chart's own value of the variable.
			o := s.rolloutUnderLoad(ctx, t, 2, 1,
				"--set", "extraEnv[0].name=APP_DRAIN_CONNECTION_CLOSE", "--set-string", "extraEnv[0].value=false")
			table := o.table("control: APP_DRAIN_CONNECTION_CLOSE=false (delay kept)")
			t.Log("\n" + table)
			s.saveArtifact(t, "control-no-connection-close.txt", table)
			// What Connection: close does is move pooled connections off the
			// pod during the delay; the main run asserts it for every pod.
			// Without it, conntrack keeps them on the pod until Shutdown.
			stayed := o.stayedUntilShutdown()
			t.Logf("control: pods that served GET / less than %s before their Shutdown: %v", movedAway, stayed)
			if len(stayed) == 0 {
				t.Errorf("control: every pod's pooled connections left more than %s before its Shutdown without Connection: close; the harness cannot see what it buys", movedAway)
			}
			// Requests lost to the close race are a consequence, not certain
			// in one run: reported, not asserted (failed in 2 of the first 3 runs).
			t.Logf("control: %d failed requests (%s), %d idle keep-alive connections closed by Shutdown over %d terminations",
				o.sum.Failed(), o.sum.FailureLine(), sum(o.lags.idleClosed), o.terminations)
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
		}, true},
		{"delete-pod", func(t *testing.T) {
			for _, p := range s.terminateAndCheck(ctx, t, "kubectl delete pod", s.deletePod(ctx)) {
				t.Error(p)
			}
			s.rollout(ctx, t)
		}, true},
		{"rollout-restart", func(t *testing.T) {
			bad := s.terminateAndCheck(ctx, t, "kubectl rollout restart", func(podInfo) error {
				_, err := s.kubectl(ctx, "-n", s.ns, "rollout", "restart", "deployment/"+deployment)
				return err
			})
			for _, p := range bad {
				t.Error(p)
			}
			s.rollout(ctx, t)
		}, true},
		{"grpc-readiness-probe", func(t *testing.T) { s.grpcReadinessProbe(ctx, t) }, false},
		{"native-prestop-sleep", func(t *testing.T) {
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values,
				"--set", "lifecycle.preStopSleep.enabled=true")
			s.rollout(ctx, t)
			pod := s.readyPod(ctx, t)
			if pod.preStopSleep != 5*time.Second || pod.appDelay != 0 {
				t.Fatalf("rendering: preStop sleep %s and APP_PRESTOP_DELAY %s, want 5s and 0s", pod.preStopSleep, pod.appDelay)
			}
			for _, p := range s.terminateAndCheck(ctx, t, "kubectl delete pod (native preStop sleep)", s.deletePod(ctx)) {
				t.Error(p)
			}
			s.rollout(ctx, t)
		}, true},
		// The OpenTelemetry Collector as a native sidecar (issue 13), and
		// its control as an ordinary container; sidecar_test.go.
		{"sidecar-collector", s.sidecarCollectorStep(ctx), true},
		{"sidecar-collector-prestop-sleep", s.sidecarPreStopSleepStep(ctx), true},
		{"control-sidecar-as-ordinary-container", s.sidecarOrdinaryControlStep(ctx), true},
		{"control-short-grace", func(t *testing.T) {
			// The chart always derives a grace period longer than the drain,
			// so the control patches the rendering: terminationGracePeriodSeconds
			// shorter than the 5 s in-process delay (APP_TERMINATION_GRACE_PERIOD
			// keeps the rendered value, so the binary still starts).
			s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
			s.rollout(ctx, t)
			patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/template/spec/terminationGracePeriodSeconds","value":%d}]`, shortGrace)
			s.mustKubectl(ctx, t, "-n", s.ns, "patch", "deployment", deployment, "--type=json", "-p", patch)
			s.rollout(ctx, t)
			bad := s.terminateAndCheck(ctx, t, fmt.Sprintf("kubectl delete pod (control: grace %ds < drain)", shortGrace), s.deletePod(ctx))
			t.Logf("check reports, as it must for the control:\n  %s", strings.Join(bad, "\n  "))
			if !containsAny(bad, "exited 137") {
				t.Errorf("check did not report exit code 137 for a grace period shorter than the drain; it reported %q", bad)
			}
			s.rollout(ctx, t)
		}, true},
		{"uninstall", func(t *testing.T) {
			s.mustHelm(ctx, t, "uninstall", release, "-n", s.ns, "--wait", "--timeout", "2m")
			waitFor(t, 60*time.Second, "no pods left in "+s.ns, func() bool {
				out, err := s.kubectl(ctx, "-n", s.ns, "get", "pods", "-o", "name")
				return err == nil && strings.TrimSpace(out) == ""
			})
		}, true},
	}
	for _, st := range steps {
		if !t.Run(st.name, st.run) && st.blocking {
			return // the later steps build on the release this one left
		}
	}
}

func sum(list []int) int {
	n := 0
	for _, v := range list {
		n += v
	}
	return n
}

func containsAny(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitRouted waits up to 30 s for GET url to answer 200 and logs how long
// that took.
func (s *suite) waitRouted(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	start := time.Now()
	var last error
	for time.Since(start) < 30*time.Second {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("%s answered 200 %.2fs after the rollout", url, time.Since(start).Seconds())
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s: no 200 within 30s of the rollout; last: %v", url, last)
}

// spread sends GET url on a new connection each, every 50 ms for at most a
// minute (kube-proxy may take a second or more to add a new pod's
// endpoint), until the bodies have named every pod in want, and returns how
// many answers named each pod. A failed request, or a body naming no pod of
// want, fails the test.
func (s *suite) spread(ctx context.Context, t *testing.T, url string, want map[string]bool) map[string]int {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	seen := map[string]int{}
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < 1200 && len(seen) < len(want) && time.Now().Before(deadline); i++ {
		if i > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s (request %d): %v", url, i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s (request %d): %s, %v: %s", url, i+1, resp.Status, err, body)
		}
		named := ""
		for name := range want {
			if strings.Contains(string(body), name) {
				named = name
			}
		}
		if named == "" {
			t.Fatalf("GET %s (request %d) = %q, names none of the ready pods %v", url, i+1, body, want)
		}
		seen[named]++
	}
	t.Logf("GET %s on new connections: answers per pod %v", url, seen)
	return seen
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
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
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body)
}

// dumpState prints what the cluster holds, for a failed run; the component
// logs themselves are printed by hack/kube-e2e.sh.
func (s *suite) dumpState() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"-n", s.ns, "get", "all", "-o", "wide"},
		{"-n", s.ns, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", s.ns, "describe", "pods"},
	} {
		out, _ := s.run(ctx, 20*time.Second, s.kubectlBin, args...)
		s.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}
