//go:build kube

package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// sidecarName is the collector container in values-sidecar.yaml.
const sidecarName = "otel-collector"

// sidecarWatch follows the pod's status and the collector's own log while
// the pod terminates: the pod-status half of the sidecar timeline (the
// containerd half comes from the observation's containerd records).
type sidecarWatch struct {
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu sync.Mutex
	// First terminated state of each container in the pod status, and when
	// the watch saw it.
	appStatus, sidecarStatus         *terminatedState
	appStatusSeen, sidecarStatusSeen time.Time
	// The collector's log lines for the signal and the end of its shutdown,
	// stamped by the container runtime.
	logSignal, logShutdown time.Time
	logLines               []string
}

// watchSidecar starts following pod; stop it with stop.
func (s *suite) watchSidecar(ctx context.Context, pod string) (*sidecarWatch, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &sidecarWatch{cancel: cancel}
	watch := s.command(ctx, s.kubectlBin, "get", "pod", pod, "-n", s.ns, "-w", "--output-watch-events", "-o", "json")
	logs := s.command(ctx, s.kubectlBin, "logs", "-n", s.ns, "-f", "--timestamps", "-c", sidecarName, pod)
	wOut, err := watch.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	lOut, err := logs.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := watch.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start pod watch: %w", err)
	}
	if err := logs.Start(); err != nil {
		cancel()
		_ = watch.Wait() // killed by cancel; the start error is the one to report
		return nil, fmt.Errorf("start collector log stream: %w", err)
	}
	// Both commands run until stop cancels them, so their exit status says
	// nothing: what they delivered is checked instead.
	w.done.Add(2)
	go func() { defer w.done.Done(); w.statuses(bufio.NewReader(wOut)); _ = watch.Wait() }()
	go func() { defer w.done.Done(); w.collectorLog(bufio.NewReader(lOut)); _ = logs.Wait() }()
	return w, nil
}

func (w *sidecarWatch) stop() {
	w.cancel()
	w.done.Wait()
}

type containerStatus struct {
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	State       struct {
		Terminated *terminatedState `json:"terminated"`
	} `json:"state"`
}

func (w *sidecarWatch) statuses(r *bufio.Reader) {
	dec := json.NewDecoder(r)
	for {
		var ev struct {
			Object struct {
				Status struct {
					InitContainerStatuses []containerStatus `json:"initContainerStatuses"`
					ContainerStatuses     []containerStatus `json:"containerStatuses"`
				} `json:"status"`
			} `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			return
		}
		now := time.Now()
		w.mu.Lock()
		for _, c := range slices.Concat(ev.Object.Status.InitContainerStatuses, ev.Object.Status.ContainerStatuses) {
			if c.State.Terminated == nil {
				continue
			}
			switch {
			case c.Name == containerName && w.appStatus == nil:
				w.appStatus, w.appStatusSeen = c.State.Terminated, now
			case c.Name == sidecarName && w.sidecarStatus == nil:
				w.sidecarStatus, w.sidecarStatusSeen = c.State.Terminated, now
			}
		}
		w.mu.Unlock()
	}
}

// collectorLog reads "<runtime timestamp> <collector log line>" and notes
// the collector's "Received signal from OS" and "Shutdown complete." lines.
func (w *sidecarWatch) collectorLog(r *bufio.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		ts, line, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		w.mu.Lock()
		w.logLines = append(w.logLines, line)
		switch {
		case strings.Contains(line, "Received signal from OS"):
			setFirst(&w.logSignal, at)
		case strings.Contains(line, "Shutdown complete"):
			setFirst(&w.logShutdown, at)
		}
		w.mu.Unlock()
	}
}

// sidecarMoments are the sidecar's points of one termination.
type sidecarMoments struct {
	containerID            string
	sigterm, sigkill, exit time.Time // containerd
	exitStatus             *int      // containerd's exit status
	status                 *terminatedState
	statusSeen             time.Time
	logSignal, logShutdown time.Time
}

// sidecarMomentsOf reads the sidecar container's SIGTERM, SIGKILL and exit
// from containerd's records, with the same rules moments applies to the app.
func sidecarMomentsOf(containerd []logRecord, cid string, w *sidecarWatch) sidecarMoments {
	m := sidecarMoments{containerID: cid}
	for _, r := range containerd {
		if !strings.Contains(r.msg, cid) {
			continue
		}
		switch {
		case strings.HasPrefix(r.msg, "Stop container") && strings.HasSuffix(r.msg, "with signal terminated"):
			setFirst(&m.sigterm, r.at)
		case strings.HasPrefix(r.msg, "Kill container"):
			setFirst(&m.sigkill, r.at)
		case strings.HasPrefix(r.msg, "received exit event") && strings.Contains(r.msg, ",ID:"+cid+","):
			m.exit = r.at
			if at, st, ok := parseTaskExit(r.msg); ok {
				m.exit, m.exitStatus = at, &st
			}
		}
	}
	if w != nil {
		w.mu.Lock()
		m.status, m.statusSeen = w.sidecarStatus, w.sidecarStatusSeen
		m.logSignal, m.logShutdown = w.logSignal, w.logShutdown
		w.mu.Unlock()
	}
	return m
}

// checkSidecarOrder returns every way the termination broke the native
// sidecar's contract: the app exits 0 first, only then does the sidecar get
// SIGTERM, and it exits 0 without SIGKILL, all inside the grace period.
func checkSidecarOrder(app moments, sc sidecarMoments, grace time.Duration) []string {
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	since := func(t time.Time) float64 { return t.Sub(app.delete).Seconds() }
	switch {
	case app.exit.IsZero():
		fail("no exit of the app container found")
	case app.runtimeExitStatus == nil || *app.runtimeExitStatus != 0:
		fail("app container exit status %v at the runtime, want 0", deref(app.runtimeExitStatus))
	}
	switch {
	case sc.sigterm.IsZero():
		fail("no SIGTERM to the sidecar %s in the containerd log", sc.containerID)
	case !app.exit.IsZero() && sc.sigterm.Before(app.exit.Add(-clockSlack)):
		fail("sidecar got SIGTERM at %+.3fs, before the app exited at %+.3fs", since(sc.sigterm), since(app.exit))
	}
	if !sc.sigkill.IsZero() {
		fail("containerd sent the sidecar SIGKILL at %+.3fs", since(sc.sigkill))
	}
	switch {
	case sc.exit.IsZero():
		fail("no exit of the sidecar found in the containerd log")
	case sc.exitStatus == nil || *sc.exitStatus != 0:
		fail("sidecar exit status %v at the runtime, want 0", deref(sc.exitStatus))
	case sc.exit.Sub(app.delete) > grace:
		fail("sidecar exited %.3fs after the delete, beyond the grace period of %s", since(sc.exit), grace)
	case !sc.sigterm.IsZero() && sc.exit.Before(sc.sigterm):
		fail("sidecar exited at %+.3fs, before its SIGTERM at %+.3fs: it did not outlive the app's flush by design", since(sc.exit), since(sc.sigterm))
	}
	switch {
	case sc.status == nil:
		fail("no terminated state of the sidecar in the pod status")
	case sc.status.ExitCode != 0:
		fail("pod status: sidecar exitCode %d (reason %s), want 0", sc.status.ExitCode, sc.status.Reason)
	}
	return bad
}

// sidecarTimeline renders the app's and the sidecar's termination in time
// order, relative to the delete, with what the span sink saw.
func sidecarTimeline(o *observation, sc sidecarMoments, app moments, rep spanReport, lastSpan time.Time) string {
	type row struct {
		at         time.Time
		name, text string
	}
	var rows []row
	add := func(at time.Time, name, format string, args ...any) {
		if !at.IsZero() {
			rows = append(rows, row{at, name, fmt.Sprintf(format, args...)})
		}
	}
	add(app.delete, "delete", "%s", o.how)
	add(app.preStopStart, "app preStop", "kubelet: running preStop hook (sleep %s)", o.pod.preStopSleep)
	add(app.preStopEnd, "app preStop", "kubelet: preStop hook completed")
	add(app.sigterm, "app SIGTERM", "%s", app.sigtermSource)
	add(app.draining, "app", "app: phase draining (pre-stop delay %s)", o.pod.appDelay)
	add(app.shuttingDown, "app", "app: phase shutting_down (delay over)")
	add(app.flushing, "app", "app: phase flushing (exports the last spans to the collector)")
	add(app.stopped, "app", "app: phase stopped exit_code=%v", deref(app.appExitCode))
	add(app.exit, "app exit", "%s exit_status=%v", app.exitSource, deref(app.runtimeExitStatus))
	add(sc.sigterm, "sidecar TERM", "containerd kill SIGTERM to %s", sidecarName)
	add(sc.logSignal, "sidecar", "collector: Received signal from OS")
	add(sc.logShutdown, "sidecar", "collector: Shutdown complete")
	add(sc.sigkill, "sidecar KILL", "containerd: Kill container %s", sidecarName)
	add(sc.exit, "sidecar exit", "containerd: task exit event exit_status=%v", deref(sc.exitStatus))
	add(lastSpan, "receiver", "last span of the terminated pod's requests arrived")
	if app.statusExit != nil {
		add(app.statusExitSeen, "status", "pod status: %s terminated exitCode=%d", containerName, app.statusExit.ExitCode)
	}
	if sc.status != nil {
		add(sc.statusSeen, "status", "pod status: %s terminated exitCode=%d", sidecarName, sc.status.ExitCode)
	}
	add(o.endAt, "gone", "pod object deleted")
	slices.SortStableFunc(rows, func(a, b row) int { return a.at.Compare(b.at) })
	var b strings.Builder
	fmt.Fprintf(&b, "timeline of %s: pod %s, terminationGracePeriodSeconds=%d, preStop sleep %s, APP_PRESTOP_DELAY=%s\n",
		o.how, o.pod.name, int(o.pod.grace.Seconds()), o.pod.preStopSleep, o.pod.env["APP_PRESTOP_DELAY"])
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+8.3fs  %-13s %s\n", r.at.Sub(app.delete).Seconds(), r.name, r.text)
	}
	fmt.Fprintf(&b, "spans: %s\n", rep)
	return b.String()
}
