//go:build kube

package kube

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// These run without a cluster: go test -tags kube -run 'TestCheck|TestParse' ./test/kube

const testCID = "f38ca1ff63c627abaacdeeddf7849a86f10fb1b409bb1e827b172b3008d8b592"

func TestParseTaskExit(t *testing.T) {
	msg := "received exit event &TaskExit{ContainerID:" + testCID + ",ID:" + testCID +
		",Pid:30648,ExitStatus:137,ExitedAt:2026-11-27 20:28:09.43318184 +0000 UTC,XXX_unrecognized:[],}"
	at, st, ok := parseTaskExit(msg)
	if !ok {
		t.Fatal("parseTaskExit failed")
	}
	if got, want := st, 137; got != want {
		t.Errorf("exit status = %d, want %d", got, want)
	}
	if got, want := at, time.Date(2026, 11, 27, 20, 28, 9, 433181840, time.UTC); !got.Equal(want) {
		t.Errorf("exited at = %v, want %v", got, want)
	}
}

// synthetic builds the observation of one termination from offsets: the
// app drains appDelay after SIGTERM, and the process is SIGKILLed when the
// drain outlasts grace.
func synthetic(grace, preStopSleep, appDelay time.Duration) *observation {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := t0.Add
	o := &observation{
		how:      "synthetic",
		deleteAt: t0,
		pod: podInfo{name: "p", uid: "u", containerID: testCID, grace: grace,
			preStopSleep: preStopSleep, appDelay: appDelay,
			env: map[string]string{"APP_PRESTOP_DELAY": appDelay.String()}},
	}
	kubelet := func(d time.Duration, msg string) {
		o.kubelet = append(o.kubelet, logRecord{at: at(d), msg: msg,
			fields: map[string]any{"containerID": "containerd://" + testCID, "podUID": "u", "probeType": "Readiness", "containerName": containerName}})
	}
	runtime := func(d time.Duration, msg string) {
		o.containerd = append(o.containerd, logRecord{at: at(d), msg: msg})
	}
	phase := func(d time.Duration, p string, code *int) {
		o.app = append(o.app, appRecord{at: at(d), msg: "phase", phase: p, exitCode: code})
	}
	sigterm := 200 * time.Millisecond
	if preStopSleep > 0 {
		kubelet(100*time.Millisecond, "Running preStop hook")
		kubelet(100*time.Millisecond+preStopSleep, "PreStop hook completed")
		sigterm = 200*time.Millisecond + preStopSleep
	}
	runtime(sigterm, fmt.Sprintf("Stop container %q with signal terminated", testCID))
	phase(sigterm+10*time.Millisecond, "draining", nil)
	o.pollNotReady = at(sigterm + 20*time.Millisecond)
	if appDelay >= 2*time.Second {
		kubelet(sigterm+900*time.Millisecond, "Probe failed")
	}
	drained := sigterm + 10*time.Millisecond + appDelay
	exit, status := drained+5*time.Millisecond, 0
	if killAt := 100*time.Millisecond + grace; drained > killAt {
		runtime(killAt, fmt.Sprintf("Stop container %q with signal terminated timed out", testCID))
		runtime(killAt, fmt.Sprintf("Kill container %q", testCID))
		exit, status = killAt+10*time.Millisecond, 137
	} else {
		zero := 0
		phase(drained, "shutting_down", nil)
		phase(drained, "flushing", nil)
		phase(drained+time.Millisecond, "stopped", &zero)
	}
	runtime(exit, fmt.Sprintf("received exit event &TaskExit{ContainerID:%s,ID:%s,Pid:1,ExitStatus:%d,ExitedAt:%s,XXX_unrecognized:[],}",
		testCID, testCID, status, at(exit).Format("2006-01-02 15:04:05.999999999 -0700 MST")))
	o.pollRefused = at(exit)
	reason := "Completed"
	if status != 0 {
		reason = "Error"
	}
	o.watch = append(o.watch, podSnapshot{at: at(exit + 200*time.Millisecond), typ: "MODIFIED",
		terminated: &terminatedState{ExitCode: status, Reason: reason}})
	return o
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name                       string
		grace, preStopSleep, delay time.Duration
		wantProblem                string // "" for none
	}{
		{"in-process delay", 30 * time.Second, 0, 5 * time.Second, ""},
		{"native preStop sleep", 30 * time.Second, 5 * time.Second, 0, ""},
		{"grace shorter than the drain", 2 * time.Second, 0, 5 * time.Second, "exited 137"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := synthetic(tt.grace, tt.preStopSleep, tt.delay)
			bad := check(o)
			if tt.wantProblem == "" && len(bad) > 0 {
				t.Errorf("check found problems in a good termination:\n%s\n%s", strings.Join(bad, "\n"), timeline(o))
			}
			if tt.wantProblem != "" && !containsAny(bad, tt.wantProblem) {
				t.Errorf("check = %q, want a problem containing %q\n%s", bad, tt.wantProblem, timeline(o))
			}
			if m := o.moments(); tt.wantProblem != "" && !m.sigterm.Before(m.sigkill) {
				t.Errorf("SIGTERM at %v is not before SIGKILL at %v", m.sigterm, m.sigkill)
			}
		})
	}
}

func TestCheckMemoryLimit(t *testing.T) {
	const limit = 128 << 20 // the chart's default
	line := func(gomemlimit, memoryLimit int64, source string) string {
		return fmt.Sprintf(`{"time":"2026-12-01T22:00:00Z","level":"INFO","msg":"memory limit","gomemlimit":%d,"memory_limit":%d,"ratio":0.9,"source":%q,"GOMAXPROCS":2}`+"\n",
			gomemlimit, memoryLimit, source)
	}
	other := `{"time":"2026-12-01T22:00:00Z","level":"INFO","msg":"listening","server":"http"}` + "\n"
	tests := []struct {
		name, logs string
		want       []string // substrings of the problems; none means no problem
	}{
		{"90 percent of the cgroup limit", other + line(120795955, limit, "cgroup") + other, nil},
		// Control: what the old chart did (GOMEMLIMIT = the whole limit).
		{"control: whole limit from env", line(limit, limit, "env"), []string{"source = env", "gomemlimit = 134217728, want floor(0.9 × 134217728) = 120795955"}},
		{"control: limit not found", line(math.MaxInt64, 0, "none"), []string{"source = none", "memory_limit = 0"}},
		{"control: no record", other, []string{"0 \"memory limit\" log records"}},
		{"control: two records", line(120795955, limit, "cgroup") + line(120795955, limit, "cgroup"), []string{"2 \"memory limit\" log records"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := checkMemoryLimit(tt.logs, limit, 0.9)
			if len(tt.want) == 0 && len(bad) > 0 {
				t.Errorf("checkMemoryLimit reported %q, want nothing", bad)
			}
			for _, w := range tt.want {
				if !containsAny(bad, w) {
					t.Errorf("checkMemoryLimit reported %q, want a problem containing %q", bad, w)
				}
			}
		})
	}
}

func TestParseQuantity(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{{"128Mi", 128 << 20}, {"1Gi", 1 << 30}, {"512Ki", 512 << 10}, {"1000000", 1000000}} {
		if got, err := parseQuantity(tt.in); err != nil || got != tt.want {
			t.Errorf("parseQuantity(%q) = %d, %v, want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "128M", "lots", "-1Mi", "0"} {
		if _, err := parseQuantity(in); err == nil {
			t.Errorf("parseQuantity(%q) returned no error", in)
		}
	}
}

// The sidecar checks (sidecar.go, spans.go), without a cluster.

func TestCheckSpans(t *testing.T) {
	del := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return del.Add(time.Duration(s * float64(time.Second))) }
	reqs := []tracedRequest{
		{target: "pod", traceID: "a", start: at(-1), done: at(-0.9), status: 200, body: "kubeskel on pod-1"},
		{target: "pod", traceID: "b", start: at(1), done: at(1.1), status: 200, body: "kubeskel on pod-1"},
		{target: "service", traceID: "c", start: at(4.9), done: at(5.1), status: 200, body: "kubeskel on pod-1"},
		{target: "pod", traceID: "d", start: at(6), done: at(6.1), status: 200, body: "kubeskel on pod-1"},
		{target: "service", traceID: "e", start: at(2), done: at(2.1), status: 200, body: "kubeskel on pod-2"},
		{target: "pod", traceID: "f", start: at(7), done: at(7.1), err: fmt.Errorf("refused")},
	}
	all := map[string]time.Time{"a": at(0), "b": at(7), "c": at(7), "d": at(7), "e": at(3)}
	r := checkSpans(reqs, "pod-1", del, at(5), all)
	if r.servedByPod != 4 || r.servedAfterDelete != 3 || r.servedInDelay != 2 || r.missing != 0 || r.otherPod != 1 || r.failed != 1 {
		t.Errorf("all spans present: %+v", r)
	}
	// Control: the spans of the requests answered after the delete never
	// arrived.
	lost := map[string]time.Time{"a": at(0), "e": at(3)}
	r = checkSpans(reqs, "pod-1", del, at(5), lost)
	if r.missing != 3 || r.missingAfterDelete != 3 || r.missingInDelay != 2 || len(r.lastMissing) != 3 {
		t.Errorf("spans lost after the delete: %+v", r)
	}
}

func TestCheckSidecarOrder(t *testing.T) {
	del := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return del.Add(time.Duration(s * float64(time.Second))) }
	zero := 0
	app := moments{delete: del, exit: at(6), runtimeExitStatus: &zero}
	good := sidecarMoments{containerID: testCID, sigterm: at(6.2), exit: at(6.4), exitStatus: &zero,
		status: &terminatedState{ExitCode: 0}}
	if bad := checkSidecarOrder(app, good, 12*time.Second); len(bad) != 0 {
		t.Fatalf("control input rejected: %v", bad)
	}
	one := 1
	for _, tc := range []struct {
		name   string
		break_ func(m *sidecarMoments)
		want   string
	}{
		{"SIGTERM with the app", func(m *sidecarMoments) { m.sigterm, m.exit = at(0.2), at(0.3) }, "before the app exited"},
		{"no SIGTERM seen", func(m *sidecarMoments) { m.sigterm = time.Time{} }, "no SIGTERM"},
		{"SIGKILL", func(m *sidecarMoments) { m.sigkill = at(12) }, "SIGKILL"},
		{"non-zero exit", func(m *sidecarMoments) { m.exitStatus = &one }, "exit status 1"},
		{"past the grace period", func(m *sidecarMoments) { m.exit = at(12.5) }, "beyond the grace period"},
		{"status exit code", func(m *sidecarMoments) { m.status = &terminatedState{ExitCode: 143, Reason: "Error"} }, "exitCode 143"},
		{"no status", func(m *sidecarMoments) { m.status = nil }, "no terminated state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			tc.break_(&m)
			bad := checkSidecarOrder(app, m, 12*time.Second)
			if !containsAny(bad, tc.want) {
				t.Errorf("checkSidecarOrder = %q, want a problem containing %q", bad, tc.want)
			}
		})
	}
}

func TestSidecarMomentsOf(t *testing.T) {
	at := time.Date(2026, 12, 5, 8, 0, 6, 0, time.UTC)
	recs := []logRecord{
		{at: at, msg: `Stop container "` + testCID + `" with signal terminated`},
		{at: at.Add(time.Second), msg: "received exit event &TaskExit{ContainerID:" + testCID + ",ID:" + testCID +
			",Pid:30648,ExitStatus:0,ExitedAt:2026-12-05 08:00:06.5 +0000 UTC,XXX_unrecognized:[],}"},
		{at: at, msg: `Stop container "other" with signal terminated`},
	}
	m := sidecarMomentsOf(recs, testCID, nil)
	if !m.sigterm.Equal(at) || m.exitStatus == nil || *m.exitStatus != 0 || !m.exit.Equal(at.Add(500*time.Millisecond)) {
		t.Errorf("sidecarMomentsOf = %+v", m)
	}
}

func TestIdleCount(t *testing.T) {
	tests := []struct {
		line   string
		want   int
		wantOK bool
	}{
		{`{"msg":"closing idle keep-alive connections","server":"http","connections":5}`, 5, true},
		{`{"msg":"closing idle keep-alive connections","server":"admin","connections":0}`, 0, false},
		{`{"msg":"closing idle keep-alive connections","server":"http"}`, 0, false},
		{`not json`, 0, false},
	}
	for _, tt := range tests {
		if got, ok := idleCount(tt.line); got != tt.want || ok != tt.wantOK {
			t.Errorf("idleCount(%s) = %d, %v; want %d, %v", tt.line, got, ok, tt.want, tt.wantOK)
		}
	}
}
