//go:build kube

package kube

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Windows the checks allow. Measured on these machines: SIGTERM reaches the
// app 0.07-0.3 s after the preStop hook completes; a process past the grace
// period is SIGKILLed 0.1-0.3 s after it.
const (
	reactWindow      = 5 * time.Second        // delete -> kubelet acts (seen: 0.2-2.2 s)
	signalWindow     = time.Second            // preStop end -> SIGTERM -> app sees it
	pollWindow       = 500 * time.Millisecond // draining -> /ready 503 at the 20 ms poller
	clockSlack       = 50 * time.Millisecond  // same clock, different writers
	phaseLateWindow  = time.Second            // a phase may end this much later than planned
	exitAfterStopped = time.Second            // "stopped" log -> process gone
)

// moments are the points of one termination, read from every source.
type moments struct {
	delete                 time.Time
	preStopStart           time.Time // kubelet: Running preStop hook
	preStopEnd             time.Time // kubelet: PreStop hook completed
	preStopTimedOut        bool      // kubelet: PreStop hook not completed in grace period
	sigterm                time.Time // containerd: Stop container ... with signal terminated
	sigtermSource          string
	sigkill                time.Time // containerd: Kill container
	draining               time.Time // app: phase draining (it has SIGTERM)
	shuttingDown, flushing time.Time // app phases
	stopped                time.Time // app: phase stopped
	appExitCode            *int
	pollNotReady           time.Time // poller: /ready non-200
	pollRefused            time.Time // poller: admin port closed
	probeFailed            time.Time // kubelet: readiness probe failed
	statusNotReady         time.Time // pod watch: Ready condition False
	exit                   time.Time // the container's process is gone
	exitSource             string
	runtimeExitStatus      *int // containerd's exit status
	statusExit             *terminatedState
	statusExitSeen         time.Time
	killingGrace           string // kubelet: grace period it passed to StopContainer
	readinessProbeFailures int
}

func (o *observation) moments() moments {
	m := moments{delete: o.deleteAt, pollNotReady: o.pollNotReady, pollRefused: o.pollRefused}
	cid := o.pod.containerID
	for _, r := range o.kubelet {
		ours := strings.HasSuffix(r.field("containerID"), cid) || r.field("podUID") == o.pod.uid
		if !ours {
			continue
		}
		switch r.msg {
		case "Running preStop hook":
			setFirst(&m.preStopStart, r.at)
		case "PreStop hook completed":
			setFirst(&m.preStopEnd, r.at)
		case "PreStop hook not completed in grace period":
			setFirst(&m.preStopEnd, r.at)
			m.preStopTimedOut = true
		case "Killing container with a grace period":
			if m.sigterm.IsZero() {
				m.sigterm, m.sigtermSource = r.at, "kubelet StopContainer"
			}
			m.killingGrace = r.field("gracePeriod")
		case "Container exited normally":
			if m.exit.IsZero() {
				m.exit, m.exitSource = r.at, "kubelet: StopContainer returned"
			}
		case "Probe failed":
			if r.field("probeType") == "Readiness" && r.field("containerName") == containerName {
				setFirst(&m.probeFailed, r.at)
				m.readinessProbeFailures++
			}
		}
	}
	var runtimeSigterm time.Time
	for _, r := range o.containerd {
		if !strings.Contains(r.msg, cid) {
			continue
		}
		switch {
		case strings.HasPrefix(r.msg, "Stop container") && strings.HasSuffix(r.msg, "with signal terminated"):
			// Logged right before the kill(2); a later line of the same
			// text ending in "timed out" marks the end of the grace period.
			setFirst(&runtimeSigterm, r.at)
		case strings.HasPrefix(r.msg, "Kill container"):
			setFirst(&m.sigkill, r.at)
		case strings.HasPrefix(r.msg, "received exit event") && strings.Contains(r.msg, ",ID:"+cid+","):
			// The container's own task (not an exec) has exited.
			m.exit, m.exitSource = r.at, "containerd: task exit event"
			if at, st, ok := parseTaskExit(r.msg); ok {
				m.exit, m.runtimeExitStatus = at, &st
			}
		}
	}
	if !runtimeSigterm.IsZero() {
		// The runtime's own record of the kill wins over the kubelet's
		// intent to stop.
		m.sigterm, m.sigtermSource = runtimeSigterm, "containerd kill SIGTERM"
	}
	for _, a := range o.app {
		if a.at.Before(o.deleteAt.Add(-time.Second)) || a.msg != "phase" {
			continue
		}
		switch a.phase {
		case "draining":
			setFirst(&m.draining, a.at)
		case "shutting_down":
			setFirst(&m.shuttingDown, a.at)
		case "flushing":
			setFirst(&m.flushing, a.at)
		case "stopped":
			setFirst(&m.stopped, a.at)
			m.appExitCode = a.exitCode
		}
	}
	for _, w := range o.watch {
		if w.at.Before(o.deleteAt) {
			continue
		}
		if !w.ready {
			setFirst(&m.statusNotReady, w.at)
		}
		if w.terminated != nil && m.statusExit == nil {
			m.statusExit, m.statusExitSeen = w.terminated, w.at
		}
	}
	if m.exit.IsZero() && m.statusExit != nil {
		m.exit, m.exitSource = m.statusExit.FinishedAt, "pod status finishedAt (1 s resolution)"
	}
	return m
}

func setFirst(t *time.Time, at time.Time) {
	if t.IsZero() {
		*t = at
	}
}

// parseTaskExit reads ExitStatus and ExitedAt from containerd's
// "received exit event &TaskExit{...,ExitStatus:0,ExitedAt:2006-01-02
// 15:04:05.999999999 +0000 UTC,...}" debug line.
func parseTaskExit(msg string) (time.Time, int, bool) {
	_, rest, ok := strings.Cut(msg, "ExitStatus:")
	if !ok {
		return time.Time{}, 0, false
	}
	statusText, rest, _ := strings.Cut(rest, ",")
	st, err := strconv.Atoi(statusText)
	if err != nil {
		return time.Time{}, 0, false
	}
	_, rest, ok = strings.Cut(rest, "ExitedAt:")
	if !ok {
		return time.Time{}, 0, false
	}
	atText, _, _ := strings.Cut(rest, ",")
	at, err := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", atText)
	if err != nil {
		return time.Time{}, 0, false
	}
	return at, st, true
}

// check returns every way the observed termination broke the contract:
// SIGTERM (after the preStop sleep, when there is one) reaches the app,
// readiness fails at once, the drain runs for its planned time, and the
// container exits 0 inside the grace period. Empty means it held.
func check(o *observation) []string {
	m := o.moments()
	p := o.pod
	var bad []string
	fail := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	since := func(t time.Time) time.Duration { return t.Sub(m.delete) }

	// The exit: code 0 in the pod status and at the runtime, never SIGKILL.
	switch {
	case m.statusExit == nil:
		fail("no terminated state of container %s in the pod status", containerName)
	case m.statusExit.ExitCode == 137:
		fail("container exited 137 (SIGKILL, reason %s): the grace period of %s did not cover the drain", m.statusExit.Reason, p.grace)
	case m.statusExit.ExitCode != 0:
		fail("container exited %d (reason %s), want 0", m.statusExit.ExitCode, m.statusExit.Reason)
	}
	if m.runtimeExitStatus != nil && *m.runtimeExitStatus != 0 {
		fail("containerd reports exit status %d, want 0", *m.runtimeExitStatus)
	}
	if !m.sigkill.IsZero() {
		fail("containerd sent SIGKILL at %+.3fs (grace period %s)", since(m.sigkill).Seconds(), p.grace)
	}
	if m.exit.IsZero() {
		fail("no exit time of the container found")
	} else if since(m.exit) > p.grace {
		fail("container exited %.3fs after the delete, beyond the grace period of %s", since(m.exit).Seconds(), p.grace)
	}

	// The preStop sleep, then SIGTERM.
	if p.preStopSleep > 0 {
		switch {
		case m.preStopStart.IsZero() || m.preStopEnd.IsZero():
			fail("kubelet log has no preStop hook start/end for container %s", p.containerID)
		case m.preStopTimedOut:
			fail("preStop hook did not complete within the grace period")
		default:
			if d := since(m.preStopStart); d < 0 || d > reactWindow {
				fail("preStop hook started %+.3fs after the delete, want within %s", d.Seconds(), reactWindow)
			}
			if d := m.preStopEnd.Sub(m.preStopStart); d < p.preStopSleep-clockSlack || d > p.preStopSleep+phaseLateWindow {
				fail("preStop sleep took %.3fs, want %s", d.Seconds(), p.preStopSleep)
			}
		}
	} else if !m.preStopStart.IsZero() {
		fail("kubelet ran a preStop hook, but the pod has none")
	}
	if m.sigterm.IsZero() {
		fail("no SIGTERM to container %s found in the containerd or kubelet log", p.containerID)
	} else {
		after, what := m.delete, "the delete"
		window := reactWindow
		if p.preStopSleep > 0 && !m.preStopEnd.IsZero() {
			after, what, window = m.preStopEnd, "the preStop hook", signalWindow
		}
		if d := m.sigterm.Sub(after); d < -clockSlack || d > window {
			fail("SIGTERM sent %+.3fs after %s, want within %s", d.Seconds(), what, window)
		}
	}

	// The app got the signal: readiness 503 at once.
	if m.draining.IsZero() {
		fail("app never logged phase draining: SIGTERM did not reach PID 1")
	} else {
		if !m.sigterm.IsZero() {
			if d := m.draining.Sub(m.sigterm); d < -clockSlack || d > signalWindow {
				fail("app began draining %+.3fs after SIGTERM, want within %s", d.Seconds(), signalWindow)
			}
		}
		// With no in-process delay the app goes from draining to closed in
		// about a millisecond, too short for a poller to catch the 503; the
		// closed port is then the first failure it can see.
		notReady, how := m.pollNotReady, "answered 503"
		if p.appDelay < pollWindow && (notReady.IsZero() || (!m.pollRefused.IsZero() && m.pollRefused.Before(notReady))) {
			notReady, how = m.pollRefused, "refused"
		}
		switch {
		case notReady.IsZero():
			fail("/ready never failed after SIGTERM")
		case !m.sigterm.IsZero() && notReady.Before(m.sigterm.Add(-clockSlack)):
			fail("/ready %s at %+.3fs, before SIGTERM at %+.3fs", how, since(notReady).Seconds(), since(m.sigterm).Seconds())
		case notReady.Sub(m.draining) > pollWindow:
			fail("/ready still 200 %.3fs after draining began, want within %s", notReady.Sub(m.draining).Seconds(), pollWindow)
		}
		// The kubelet's own readiness probe must see it too when the drain
		// lasts long enough for a probe period (the values use 1 s).
		if p.appDelay >= 2*time.Second && (m.probeFailed.IsZero() || (!m.exit.IsZero() && m.probeFailed.After(m.exit))) {
			fail("kubelet readiness probe did not fail between SIGTERM and exit")
		}
	}

	// The drain ran in order and for its planned time.
	if m.shuttingDown.IsZero() || m.flushing.IsZero() || m.stopped.IsZero() {
		fail("app phases incomplete: shutting_down=%v flushing=%v stopped=%v",
			!m.shuttingDown.IsZero(), !m.flushing.IsZero(), !m.stopped.IsZero())
	} else {
		if !m.draining.IsZero() {
			if d := m.shuttingDown.Sub(m.draining); d < p.appDelay-clockSlack || d > p.appDelay+phaseLateWindow {
				fail("in-process delay (draining -> shutting_down) took %.3fs, want APP_PRESTOP_DELAY %s", d.Seconds(), p.appDelay)
			}
		}
		if m.flushing.Before(m.shuttingDown) || m.stopped.Before(m.flushing) {
			fail("app phases out of order")
		}
		if m.appExitCode == nil || *m.appExitCode != 0 {
			fail("app logged stopped with exit_code %v, want 0", deref(m.appExitCode))
		}
		if !m.exit.IsZero() && m.exitSource != "pod status finishedAt (1 s resolution)" && m.exit.Sub(m.stopped) > exitAfterStopped {
			fail("process exited %.3fs after logging stopped", m.exit.Sub(m.stopped).Seconds())
		}
	}
	return bad
}

func deref(p *int) any {
	if p == nil {
		return "none"
	}
	return *p
}

// timeline renders the termination in time order, relative to the trigger.
func timeline(o *observation) string {
	m := o.moments()
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
	add(m.delete, "delete", "%s", o.how)
	add(m.preStopStart, "preStop", "kubelet: running preStop hook (sleep %s)", o.pod.preStopSleep)
	add(m.preStopEnd, "preStop done", "kubelet: preStop hook completed (timed out: %v)", m.preStopTimedOut)
	add(m.sigterm, "SIGTERM", "%s (kubelet grace period left: %ss)", m.sigtermSource, m.killingGrace)
	add(m.draining, "draining", "app: phase draining (SIGTERM received, readiness 503)")
	add(m.pollNotReady, "not ready", "poller: GET /ready answered 503")
	add(m.probeFailed, "not ready", "kubelet: readiness probe failed (%d times)", m.readinessProbeFailures)
	add(m.statusNotReady, "not ready", "pod status: Ready=False (watch event)")
	add(m.shuttingDown, "drained", "app: phase shutting_down (in-process delay over, listener closing)")
	add(m.flushing, "drained", "app: phase flushing (HTTP drain done)")
	add(m.pollRefused, "closed", "poller: admin port refused")
	add(m.stopped, "stopped", "app: phase stopped exit_code=%v", deref(m.appExitCode))
	add(m.sigkill, "SIGKILL", "containerd: Kill container (grace period over)")
	add(m.exit, "exit", "%s exit_status=%v", m.exitSource, deref(m.runtimeExitStatus))
	if m.statusExit != nil {
		add(m.statusExitSeen, "status", "pod status: terminated exitCode=%d reason=%s", m.statusExit.ExitCode, m.statusExit.Reason)
	}
	slices.SortStableFunc(rows, func(a, b row) int { return a.at.Compare(b.at) })
	var b strings.Builder
	fmt.Fprintf(&b, "timeline of %s: pod %s, terminationGracePeriodSeconds=%d, preStop sleep %s, APP_PRESTOP_DELAY=%s\n",
		o.how, o.pod.name, int(o.pod.grace.Seconds()), o.pod.preStopSleep, o.pod.env["APP_PRESTOP_DELAY"])
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+8.3fs  %-12s %s\n", r.at.Sub(m.delete).Seconds(), r.name, r.text)
	}
	return b.String()
}

// checkMemoryLimit checks the app's one start-up "memory limit" record in
// logs (the container's JSON log lines) against the pod's memory limit
// (bytes) and APP_MEMORY_LIMIT_RATIO: the binary must have read the limit
// from its cgroup and set GOMEMLIMIT to floor(ratio × limit).
func checkMemoryLimit(logs string, limit int64, ratio float64) []string {
	var recs []map[string]any
	for line := range strings.Lines(logs) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "memory limit" {
			recs = append(recs, m)
		}
	}
	if len(recs) != 1 {
		return []string{fmt.Sprintf("%d \"memory limit\" log records at start-up, want exactly 1", len(recs))}
	}
	rec := recs[0]
	num := func(key string) int64 { f, _ := rec[key].(float64); return int64(f) }
	want := int64(math.Floor(float64(limit) * ratio))
	var bad []string
	if got := rec["source"]; got != "cgroup" {
		bad = append(bad, fmt.Sprintf("memory limit source = %v, want cgroup", got))
	}
	if got := num("memory_limit"); got != limit {
		bad = append(bad, fmt.Sprintf("memory_limit = %d, want the pod's limit %d", got, limit))
	}
	if got := num("gomemlimit"); got != want {
		bad = append(bad, fmt.Sprintf("gomemlimit = %d, want floor(%v × %d) = %d", got, ratio, limit, want))
	}
	return bad
}

// parseQuantity reads a Kubernetes memory quantity in the forms the chart
// uses: plain bytes or a binary suffix (Ki, Mi, Gi).
func parseQuantity(q string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30} {
		if n, ok := strings.CutSuffix(q, suffix); ok {
			q, mult = n, m
			break
		}
	}
	n, err := strconv.ParseInt(q, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory quantity %q: want bytes or a Ki, Mi or Gi multiple", q)
	}
	return n * mult, nil
}
