//go:build kube

package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// sidecarValues layers the collector sidecar over values-node.yaml.
const sidecarValues = "values-sidecar.yaml"

// sidecarRun is the outcome of one termination of a pod with the collector.
type sidecarRun struct {
	obs      *observation
	app      moments
	sidecar  sidecarMoments
	spans    spanReport
	timeline string
}

// upgradeSidecar installs values-sidecar.yaml over the node values, plus
// extra helm arguments, and waits for the rollout.
func (s *suite) upgradeSidecar(ctx context.Context, t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"upgrade", release, s.chart, "-n", s.ns, "-f", s.values, "-f", sidecarValues}, extra...)
	s.mustHelm(ctx, t, args...)
	s.rollout(ctx, t)
}

// ordinaryCollectorArgs returns helm arguments that move the collector the
// chart renders from values-sidecar.yaml out of the native-sidecar slot
// into extraContainers: the same container, but an ordinary one, which the
// kubelet sends SIGTERM together with the app.
func (s *suite) ordinaryCollectorArgs(ctx context.Context, t *testing.T) []string {
	t.Helper()
	// helm template assumes an old Kubernetes unless told the cluster's.
	var version struct {
		ServerVersion struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(s.mustKubectl(ctx, t, "version", "-o", "json")), &version); err != nil {
		t.Fatal(err)
	}
	rendered := s.mustHelm(ctx, t, "template", release, s.chart, "-n", s.ns, "-f", s.values, "-f", sidecarValues,
		"--kube-version", version.ServerVersion.GitVersion, "--show-only", "templates/deployment.yaml")
	file := filepath.Join(t.TempDir(), "deployment.yaml")
	if err := os.WriteFile(file, []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	out := s.mustKubectl(ctx, t, "create", "--dry-run=client", "-o", "json", "-f", file)
	var d struct {
		Spec struct {
			Template struct {
				Spec struct {
					InitContainers []map[string]any `json:"initContainers"`
				} `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	for _, c := range d.Spec.Template.Spec.InitContainers {
		if c["name"] != sidecarName {
			continue
		}
		if c["restartPolicy"] != "Always" {
			t.Fatalf("the chart rendered %s without restartPolicy Always: %v", sidecarName, c)
		}
		delete(c, "restartPolicy")
		b, err := json.Marshal([]any{c})
		if err != nil {
			t.Fatal(err)
		}
		return []string{"--set-json", "nativeSidecars=[]", "--set-json", "extraContainers=" + string(b)}
	}
	t.Fatalf("the chart rendered no init container %s from %s", sidecarName, sidecarValues)
	return nil
}

// containerID returns the ID (without the runtime prefix) of the named
// container of pod, init or regular.
func (s *suite) containerID(ctx context.Context, t *testing.T, pod, name string) string {
	t.Helper()
	for _, field := range []string{"initContainerStatuses", "containerStatuses"} {
		out := s.mustKubectl(ctx, t, "-n", s.ns, "get", "pod", pod,
			"-o", fmt.Sprintf(`jsonpath={.status.%s[?(@.name=="%s")].containerID}`, field, name))
		if _, id, ok := strings.Cut(strings.TrimSpace(out), "://"); ok {
			return id
		}
	}
	t.Fatalf("pod %s has no container %s", pod, name)
	return ""
}

// sidecarTermination deletes the ready pod while traced requests go to it
// through the Service and directly, and returns what the app, the sidecar
// and the span sink did. The pod's collector must already forward to the
// sink: one request's span is awaited before the delete.
func (s *suite) sidecarTermination(ctx context.Context, t *testing.T, how string) sidecarRun {
	t.Helper()
	sink := startSpanSink(t)
	pod := s.readyPod(ctx, t)
	sidecarID := s.containerID(ctx, t, pod.name, sidecarName)
	podIP, _, err := net.SplitHostPort(pod.adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	_, httpPort, err := net.SplitHostPort(pod.env["APP_HTTP_ADDR"])
	if err != nil {
		t.Fatalf("pod %s: APP_HTTP_ADDR: %v", pod.name, err)
	}
	podURL := "http://" + net.JoinHostPort(podIP, httpPort) + "/"
	serviceURL := s.serviceURL(ctx, t)
	s.waitRouted(ctx, t, serviceURL)

	// The path app -> collector -> sink works before anything is deleted
	// (the app's batch processor exports every 5 s).
	warm := tracedLoad(ctx, "pod", podURL, time.Millisecond, 1, nil)
	if len(warm) != 1 || warm[0].err != nil || warm[0].status != 200 {
		t.Fatalf("warm-up request to %s failed: %+v", podURL, warm)
	}
	if err := sink.waitTrace(ctx, warm[0].traceID, 20*time.Second); err != nil {
		t.Fatalf("app -> collector -> receiver path: %v", err)
	}

	w, err := s.watchSidecar(ctx, pod.name)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var mu sync.Mutex
	var reqs []tracedRequest
	var wg sync.WaitGroup
	// Bounded: at most 3000 requests per target (a minute at 20 ms).
	for target, url := range map[string]string{"service": serviceURL, "pod": podURL} {
		wg.Go(func() {
			r := tracedLoad(ctx, target, url, 20*time.Millisecond, 3000, stop)
			mu.Lock()
			reqs = append(reqs, r...)
			mu.Unlock()
		})
	}
	time.Sleep(500 * time.Millisecond)
	obs, err := s.terminate(ctx, how, pod, func() error { return s.deletePod(ctx)(pod) })
	close(stop)
	wg.Wait()
	// The pod object is gone, so the collector has exited: whatever it
	// forwarded has arrived. Nothing later can.
	traces, spans, exports, bad := sink.snapshot()
	w.stop()
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Errorf("the receiver rejected %d export requests: %v", len(bad), bad)
	}
	app := obs.moments()
	sc := sidecarMomentsOf(obs.containerd, sidecarID, w)
	rep := checkSpans(reqs, pod.name, obs.deleteAt, app.shuttingDown, traces)
	var lastSpan time.Time
	for _, q := range reqs {
		if at, ok := traces[q.traceID]; ok && strings.Contains(q.body, pod.name) && at.After(lastSpan) {
			lastSpan = at
		}
	}
	run := sidecarRun{obs: obs, app: app, sidecar: sc, spans: rep,
		timeline: sidecarTimeline(obs, sc, app, rep, lastSpan)}
	t.Logf("receiver: %d export requests, %d spans, %d traces", exports, spans, len(traces))
	t.Log("\n" + run.timeline)
	s.saveArtifact(t, strings.ReplaceAll(t.Name(), "/", "_")+".timeline.txt", run.timeline)
	return run
}

// assertSidecarHeld fails t unless the termination kept the whole
// contract: the app's drain, the order app exit -> sidecar SIGTERM -> sidecar
// exit inside the grace period, and a span for every request the pod
// answered, including those answered during the pre-stop delay.
func assertSidecarHeld(t *testing.T, run sidecarRun) {
	t.Helper()
	for _, p := range check(run.obs) {
		t.Error(p)
	}
	for _, p := range checkSidecarOrder(run.app, run.sidecar, run.obs.pod.grace) {
		t.Error(p)
	}
	r := run.spans
	if r.servedInDelay == 0 {
		t.Errorf("no request answered by the pod during the pre-stop delay: the check saw nothing it could lose (%s)", r)
	}
	if r.missing > 0 {
		t.Errorf("%d requests answered by the pod have no span at the receiver after the pod is gone (%d of %d during the pre-stop delay); last: %v",
			r.missing, r.missingInDelay, r.servedInDelay, r.lastMissing)
	}
}

// The e2e-kube steps of the collector sidecar (issue 13); kube_test.go
// lists them.

// sidecarCollectorStep: the collector in the native-sidecar slot keeps every
// span of a pod deleted under traffic.
func (s *suite) sidecarCollectorStep(ctx context.Context) func(*testing.T) {
	return func(t *testing.T) {
		s.upgradeSidecar(ctx, t)
		run := s.sidecarTermination(ctx, t, "kubectl delete pod (collector as native sidecar)")
		assertSidecarHeld(t, run)
	}
}

// sidecarPreStopSleepStep: the same with the kubelet's preStop sleep in
// place of the in-process delay.
func (s *suite) sidecarPreStopSleepStep(ctx context.Context) func(*testing.T) {
	return func(t *testing.T) {
		s.upgradeSidecar(ctx, t, "--set", "lifecycle.preStopSleep.enabled=true")
		run := s.sidecarTermination(ctx, t, "kubectl delete pod (collector as native sidecar, native preStop sleep)")
		if run.obs.pod.preStopSleep != 5*time.Second || run.obs.pod.appDelay != 0 {
			t.Fatalf("rendering: preStop sleep %s and APP_PRESTOP_DELAY %s, want 5s and 0s", run.obs.pod.preStopSleep, run.obs.pod.appDelay)
		}
		assertSidecarHeld(t, run)
	}
}

// sidecarOrdinaryControlStep: the same collector next to the app as an
// ordinary container gets SIGTERM with the app and is gone (it shuts down
// in well under a second) before the app's flush after the delay, so spans
// of the last requests must be lost. It ends on the node values.
func (s *suite) sidecarOrdinaryControlStep(ctx context.Context) func(*testing.T) {
	return func(t *testing.T) {
		s.upgradeSidecar(ctx, t, s.ordinaryCollectorArgs(ctx, t)...)
		run := s.sidecarTermination(ctx, t, "kubectl delete pod (control: collector as an ordinary container)")
		r := run.spans
		t.Logf("control: %d of %d requests answered during the pre-stop delay lost their span (%d of %d over the whole run); last lost: %v",
			r.missingInDelay, r.servedInDelay, r.missing, r.servedByPod, r.lastMissing)
		t.Logf("control: the order check reports, as it must:\n  %s",
			strings.Join(checkSidecarOrder(run.app, run.sidecar, run.obs.pod.grace), "\n  "))
		if r.missingInDelay == 0 {
			t.Errorf("control: every span of the %d requests answered during the pre-stop delay arrived with the collector as an ordinary container; the check cannot see the loss it guards against", r.servedInDelay)
		}
		s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
		s.rollout(ctx, t)
	}
}
