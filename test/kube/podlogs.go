//go:build kube

package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"
)

// podLogs follows the app container's log of every pod of a run under load
// (started once the container runs, until it ends or the run's context is
// done) and keeps, per pod, the moments the app itself logged: SIGTERM
// (phase draining), the start of the shutdown, and the exit, and how many
// idle keep-alive connections its shutdown closed.
type podLogs struct {
	s   *suite
	ctx context.Context
	wg  sync.WaitGroup

	mu       sync.Mutex
	followed map[string]bool
	pods     map[string]*appMoments
}

// appMoments is what one pod's app logged about its termination.
type appMoments struct {
	draining, shuttingDown, stopped time.Time
	idleClosed                      int  // "closing idle keep-alive connections"
	idleLogged                      bool // that line was seen
}

func (s *suite) newPodLogs(ctx context.Context) *podLogs {
	return &podLogs{s: s, ctx: ctx, followed: map[string]bool{}, pods: map[string]*appMoments{}}
}

// follow starts following pod's app log, once per pod.
func (l *podLogs) follow(pod string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.followed[pod] {
		return
	}
	l.followed[pod] = true
	l.pods[pod] = &appMoments{}
	cmd := l.s.command(l.ctx, l.s.kubectlBin, "logs", "-n", l.s.ns, "-f", "--timestamps", "-c", containerName, pod)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return
	}
	if err := cmd.Start(); err != nil {
		return // the pod is gone already: its row says "no app log"
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.consume(pod, out)
		_ = cmd.Wait() // ends with the container, or killed by ctx
	}()
}

func (l *podLogs) consume(pod string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		rec, ok := parseAppLine(sc.Text())
		if !ok {
			continue
		}
		l.mu.Lock()
		m := l.pods[pod]
		switch {
		case rec.msg == "phase" && rec.phase == "draining":
			m.draining = rec.at
		case rec.msg == "phase" && rec.phase == "shutting_down":
			m.shuttingDown = rec.at
		case rec.msg == "phase" && rec.phase == "stopped":
			m.stopped = rec.at
		case rec.msg == "closing idle keep-alive connections":
			if n, ok := idleCount(rec.line); ok {
				m.idleClosed, m.idleLogged = n, true
			}
		}
		l.mu.Unlock()
	}
}

// idleCount reads the "connections" attribute of the traffic server's
// "closing idle keep-alive connections" line; the admin server logs one too.
func idleCount(line string) (int, bool) {
	var v struct {
		Server      string      `json:"server"`
		Connections json.Number `json:"connections"`
	}
	if json.Unmarshal([]byte(line), &v) != nil || v.Server != "http" {
		return 0, false
	}
	n, err := strconv.Atoi(v.Connections.String())
	return n, err == nil
}

// wait waits for every follower to end; cancel the run's context first.
func (l *podLogs) wait() { l.wg.Wait() }

// moments returns a copy of what pod's app logged, and whether it was followed.
func (l *podLogs) moments(pod string) (appMoments, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m, ok := l.pods[pod]
	if !ok {
		return appMoments{}, false
	}
	return *m, true
}
