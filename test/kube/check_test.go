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
