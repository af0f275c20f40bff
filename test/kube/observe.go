//go:build kube

// Package kube is the e2e-kube suite: it installs the real Helm chart on the
// single-node cluster that hack/kube-up.sh starts, terminates and rolls the
// pod, and checks from the app's logs, the kubelet's and containerd's logs and
// the pod status that the drain ran inside the grace period.
// Run it through `make e2e-kube` (hack/kube-e2e.sh).
package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// podInfo is what the suite reads from the live pod before terminating it.
type podInfo struct {
	name        string
	uid         string
	containerID string // without the "containerd://" prefix
	adminAddr   string // the pod IP and APP_ADMIN_ADDR's port
	grace       time.Duration
	// preStopSleep is the kubelet's native preStop sleep; 0 when none.
	preStopSleep time.Duration
	// appDelay is APP_PRESTOP_DELAY, the in-process delay.
	appDelay time.Duration
	env      map[string]string
	// memoryLimit is the container's resources.limits.memory ("" when none).
	memoryLimit string
}

// appRecord is one JSON log line of the app.
type appRecord struct {
	at       time.Time
	msg      string
	phase    string
	exitCode *int
	line     string
}

// logRecord is one JSON log line of the kubelet or containerd.
type logRecord struct {
	at     time.Time
	msg    string
	fields map[string]any
}

// podSnapshot is one watch event of the pod, stamped when it arrived.
type podSnapshot struct {
	at         time.Time
	typ        string // ADDED, MODIFIED, DELETED
	ready      bool
	terminated *terminatedState
}

type terminatedState struct {
	ExitCode   int       `json:"exitCode"`
	Reason     string    `json:"reason"`
	Signal     int       `json:"signal"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// observation is everything recorded around one pod termination.
type observation struct {
	how      string
	pod      podInfo
	deleteAt time.Time
	endAt    time.Time

	app        []appRecord
	kubelet    []logRecord
	containerd []logRecord
	watch      []podSnapshot
	// pollNotReady is when GET /ready first answered non-200;
	// pollRefused when the admin port first refused the connection.
	pollNotReady, pollRefused time.Time
	pollReadyBefore           int // 200 answers seen after the trigger
}

// The pod watch as kubectl prints it with --output-watch-events -o json.
type watchEvent struct {
	Type   string `json:"type"`
	Object struct {
		Metadata struct {
			Name              string     `json:"name"`
			UID               string     `json:"uid"`
			DeletionTimestamp *time.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status podStatus `json:"status"`
	} `json:"object"`
}

type podStatus struct {
	Phase      string `json:"phase"`
	PodIP      string `json:"podIP"`
	Conditions []struct {
		Type   string `json:"type"`
		Status string `json:"status"`
	} `json:"conditions"`
	ContainerStatuses []struct {
		Name        string `json:"name"`
		ContainerID string `json:"containerID"`
		Ready       bool   `json:"ready"`
		State       struct {
			Running    *struct{}        `json:"running"`
			Terminated *terminatedState `json:"terminated"`
		} `json:"state"`
	} `json:"containerStatuses"`
}

func (s podStatus) ready() bool {
	for _, c := range s.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

// observer streams the app's logs and the pod's watch events and polls
// /ready while a termination runs.
type observer struct {
	s      *suite
	pod    podInfo
	cancel context.CancelFunc

	mu           sync.Mutex
	app          []appRecord
	watch        []podSnapshot
	pollNotReady time.Time
	pollRefused  time.Time
	poll200After int
	triggered    time.Time

	deleted  chan struct{} // closed on the DELETED watch event
	logsDone chan struct{} // closed when the log stream ends
	done     sync.WaitGroup
	errs     []error
}

// observe starts the observers for pod and waits until both streams have
// delivered their first record, so nothing after the trigger is missed.
func (s *suite) observe(ctx context.Context, pod podInfo) (*observer, error) {
	ctx, cancel := context.WithCancel(ctx)
	o := &observer{s: s, pod: pod, cancel: cancel, deleted: make(chan struct{}), logsDone: make(chan struct{})}
	firstLog := make(chan struct{})
	firstWatch := make(chan struct{})

	logs := s.command(ctx, s.kubectlBin, "logs", "-n", s.ns, "-f", "--timestamps", "-c", containerName, pod.name)
	if err := o.stream(logs, firstLog, o.logs, o.logsDone); err != nil {
		cancel()
		return nil, err
	}
	watch := s.command(ctx, s.kubectlBin, "get", "pod", pod.name, "-n", s.ns, "-w", "--output-watch-events", "-o", "json")
	if err := o.stream(watch, firstWatch, o.watchEvents, nil); err != nil {
		cancel()
		return nil, err
	}
	o.done.Add(1)
	go o.pollReady(ctx)

	for name, ch := range map[string]chan struct{}{"app log stream": firstLog, "pod watch": firstWatch} {
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			o.stop()
			return nil, fmt.Errorf("%s of pod %s delivered nothing in 20s (errors: %v)", name, pod.name, o.errs)
		}
	}
	return o, nil
}

// stream runs cmd and hands its stdout to consume; first is closed by
// consume on the first record, end (if not nil) when stdout ends.
func (o *observer) stream(cmd *exec.Cmd, first chan struct{}, consume func(io.Reader, chan struct{}), end chan struct{}) error {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	o.done.Add(1)
	go func() {
		defer o.done.Done()
		consume(out, first)
		if end != nil {
			close(end)
		}
		if err := cmd.Wait(); err != nil && cmd.ProcessState != nil && !strings.Contains(err.Error(), "killed") {
			o.mu.Lock()
			o.errs = append(o.errs, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args[1:], " "), err, strings.TrimSpace(stderr.String())))
			o.mu.Unlock()
		}
	}()
	return nil
}

func (o *observer) logs(r io.Reader, first chan struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	once := sync.OnceFunc(func() { close(first) })
	for sc.Scan() {
		rec, ok := parseAppLine(sc.Text())
		if !ok {
			continue
		}
		o.mu.Lock()
		o.app = append(o.app, rec)
		o.mu.Unlock()
		once()
	}
}

// parseAppLine parses "<kubectl timestamp> <JSON>"; the app's own "time"
// wins over the kubelet's timestamp when present.
func parseAppLine(line string) (appRecord, bool) {
	ts, body, ok := strings.Cut(line, " ")
	if !ok {
		return appRecord{}, false
	}
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return appRecord{}, false
	}
	rec := appRecord{line: body}
	rec.at, _ = time.Parse(time.RFC3339Nano, ts)
	if s, ok := m["time"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			rec.at = t
		}
	}
	rec.msg, _ = m["msg"].(string)
	rec.phase, _ = m["phase"].(string)
	if f, ok := m["exit_code"].(float64); ok {
		c := int(f)
		rec.exitCode = &c
	}
	return rec, true
}

func (o *observer) watchEvents(r io.Reader, first chan struct{}) {
	dec := json.NewDecoder(r)
	once := sync.OnceFunc(func() { close(first) })
	deleted := sync.OnceFunc(func() { close(o.deleted) })
	for {
		var ev watchEvent
		if err := dec.Decode(&ev); err != nil {
			return
		}
		snap := podSnapshot{at: time.Now(), typ: ev.Type, ready: ev.Object.Status.ready()}
		for _, c := range ev.Object.Status.ContainerStatuses {
			if c.Name == containerName && c.State.Terminated != nil {
				snap.terminated = c.State.Terminated
			}
		}
		o.mu.Lock()
		o.watch = append(o.watch, snap)
		o.mu.Unlock()
		once()
		if ev.Type == "DELETED" {
			deleted()
		}
	}
}

// pollReady asks the admin port's /ready every 20 ms, as a load balancer's
// health check would, and records when it stops answering 200.
func (o *observer) pollReady(ctx context.Context) {
	defer o.done.Done()
	client := &http.Client{
		Timeout:   500 * time.Millisecond,
		Transport: &http.Transport{DisableKeepAlives: true},
	}
	url := "http://" + o.pod.adminAddr + "/ready"
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return // cannot happen: the URL is built from a host:port
		}
		resp, err := client.Do(req)
		at := time.Now() // when the answer (or refusal) was seen
		if ctx.Err() != nil {
			// Stopped mid-request: the failure is ours, not the pod's.
			if resp != nil {
				resp.Body.Close()
			}
			return
		}
		o.mu.Lock()
		switch {
		case err != nil:
			if o.pollRefused.IsZero() && !o.triggered.IsZero() {
				o.pollRefused = at
			}
		case resp.StatusCode != http.StatusOK:
			if o.pollNotReady.IsZero() {
				o.pollNotReady = at
			}
		default:
			if !o.triggered.IsZero() {
				o.poll200After++
			}
		}
		o.mu.Unlock()
		if resp != nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

func (o *observer) stop() {
	o.cancel()
	o.done.Wait()
}

// terminate runs trigger against the observed pod and waits until the pod
// object is gone (its container has exited and the kubelet has reported it),
// then collects the kubelet's and containerd's log records of that window.
func (s *suite) terminate(ctx context.Context, how string, pod podInfo, trigger func() error) (*observation, error) {
	o, err := s.observe(ctx, pod)
	if err != nil {
		return nil, err
	}
	obs := &observation{how: how, pod: pod}
	obs.deleteAt = time.Now()
	o.mu.Lock()
	o.triggered = obs.deleteAt
	o.mu.Unlock()
	if err := trigger(); err != nil {
		o.stop()
		return nil, fmt.Errorf("%s: %w", how, err)
	}
	limit := pod.grace + 60*time.Second
	select {
	case <-o.deleted:
	case <-time.After(limit):
		o.stop()
		return nil, fmt.Errorf("pod %s still exists %s after %s", pod.name, limit, how)
	}
	select {
	case <-o.logsDone:
	case <-time.After(10 * time.Second):
	}
	obs.endAt = time.Now()
	o.stop()

	o.mu.Lock()
	obs.app, obs.watch = o.app, o.watch
	obs.pollNotReady, obs.pollRefused, obs.pollReadyBefore = o.pollNotReady, o.pollRefused, o.poll200After
	o.mu.Unlock()

	from := obs.deleteAt.Add(-time.Second)
	if obs.kubelet, err = readComponentLog(s.logPath("kubelet"), from, parseKubeletLine); err != nil {
		return nil, err
	}
	if obs.containerd, err = readComponentLog(s.logPath("containerd"), from, parseContainerdLine); err != nil {
		return nil, err
	}
	return obs, nil
}

// readComponentLog returns the records of a component's log at or after from.
func readComponentLog(path string, from time.Time, parse func([]byte) (logRecord, bool)) ([]logRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var recs []logRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4<<20), 4<<20)
	for sc.Scan() {
		rec, ok := parse(sc.Bytes())
		if ok && !rec.at.Before(from) {
			recs = append(recs, rec)
		}
	}
	return recs, sc.Err()
}

// parseKubeletLine reads the kubelet's --logging-format=json lines, whose
// "ts" is Unix time in milliseconds.
func parseKubeletLine(b []byte) (logRecord, bool) {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return logRecord{}, false
	}
	ts, ok := m["ts"].(float64)
	if !ok {
		return logRecord{}, false
	}
	msg, _ := m["msg"].(string)
	return logRecord{at: time.UnixMicro(int64(ts * 1000)), msg: msg, fields: m}, true
}

// parseContainerdLine reads containerd's JSON log lines (debug.format json).
func parseContainerdLine(b []byte) (logRecord, bool) {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return logRecord{}, false
	}
	s, _ := m["time"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return logRecord{}, false
	}
	msg, _ := m["msg"].(string)
	return logRecord{at: at, msg: msg, fields: m}, true
}

// field returns a log record's field as a string ("" when absent).
func (r logRecord) field(name string) string {
	switch v := r.fields[name].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case map[string]any:
		if n, ok := v["name"].(string); ok {
			return n
		}
	}
	return ""
}
