//go:build kube

package kube

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// propagation records, during a run under load, when each pod's deletion
// was seen, when its endpoint first stopped being ready in the Service's
// EndpointSlice, and every kube-proxy rules sync (from its /metrics).
type propagation struct {
	mu        sync.Mutex
	deletedAt map[string]time.Time // pod watch: deletionTimestamp first seen
	epGoneAt  map[string]time.Time // EndpointSlice watch: terminating first seen
	syncs     []time.Time          // kubeproxy_sync_proxy_rules_last_timestamp_seconds values
	progSum0  float64              // kubeproxy_network_programming_duration_seconds at the start
	progCnt0  float64
	progSum1  float64 // and at the end
	progCnt1  float64
}

func newPropagation() *propagation {
	return &propagation{deletedAt: map[string]time.Time{}, epGoneAt: map[string]time.Time{}}
}

func (p *propagation) podDeleted(name string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.deletedAt[name]; !ok {
		p.deletedAt[name] = at
	}
}

// watchEndpointSlices records when each pod's endpoint is marked terminating,
// until ctx ends; the returned function waits for the watcher to exit.
func (s *suite) watchEndpointSlices(ctx context.Context, t *testing.T, p *propagation) func() {
	t.Helper()
	cmd := s.command(ctx, s.kubectlBin, "-n", s.ns, "get", "endpointslices",
		"-l", "kubernetes.io/service-name="+deployment, "-w", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(out)
		for {
			var slice struct {
				Endpoints []struct {
					Conditions struct {
						Ready       *bool `json:"ready"`
						Terminating *bool `json:"terminating"`
					} `json:"conditions"`
					TargetRef struct {
						Name string `json:"name"`
					} `json:"targetRef"`
				} `json:"endpoints"`
			}
			if err := dec.Decode(&slice); err != nil {
				io.Copy(io.Discard, out)
				return
			}
			at := time.Now()
			p.mu.Lock()
			for _, ep := range slice.Endpoints {
				if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
					if _, ok := p.epGoneAt[ep.TargetRef.Name]; !ok {
						p.epGoneAt[ep.TargetRef.Name] = at
					}
				}
			}
			p.mu.Unlock()
		}
	}()
	return func() {
		<-done
		_ = cmd.Wait() // killed by ctx
	}
}

// pollProxyMetrics reads kube-proxy's /metrics every 100 ms until ctx ends
// and records each new rules-sync timestamp; first and last snapshots of
// the network programming histogram go to progSum/progCnt.
func (p *propagation) pollProxyMetrics(ctx context.Context, url string) {
	client := &http.Client{Timeout: time.Second}
	first := true
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		if resp, err := client.Do(req); err == nil {
			m := parseMetrics(resp.Body)
			resp.Body.Close()
			p.mu.Lock()
			if ts, ok := m["kubeproxy_sync_proxy_rules_last_timestamp_seconds"]; ok {
				at := time.Unix(0, int64(ts*1e9))
				if n := len(p.syncs); n == 0 || !p.syncs[n-1].Equal(at) {
					p.syncs = append(p.syncs, at)
				}
			}
			sum, cnt := m["kubeproxy_network_programming_duration_seconds_sum"], m["kubeproxy_network_programming_duration_seconds_count"]
			if first {
				p.progSum0, p.progCnt0, first = sum, cnt, false
			}
			p.progSum1, p.progCnt1 = sum, cnt
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// parseMetrics reads the IPv4 samples of a Prometheus text page (kube-proxy
// labels its metrics with ip_family), by metric name; unlabelled samples
// count too.
func parseMetrics(r io.Reader) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		series, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		name, labels, labelled := strings.Cut(series, "{")
		if labelled && labels != `ip_family="IPv4"}` {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m
}

// propagationLags are the lags measured over the terminations of one run.
type propagationLags struct {
	sigtermToSync  []time.Duration // app's SIGTERM (phase draining) -> kube-proxy rules synced
	deletionToSync []time.Duration // pod deletion seen -> kube-proxy rules synced
	idleClosed     []int           // idle keep-alive connections the app's shutdown closed
	// servedUntil is, per pod that answered a GET / during the run, how long
	// before its Shutdown began it answered the last one: how long before
	// the end of the pre-stop delay its pooled connections had left.
	servedUntil map[string]time.Duration
}

// timeline prints, per terminated pod, from the app's SIGTERM (its own
// "phase draining" log line, +0): deletion seen (pod watch), endpoint marked
// terminating (EndpointSlice watch), the first kube-proxy rules sync to
// finish after that, the last GET / the pod answered (the load's own
// record), the start of its shutdown, its exit (phase stopped), and how many
// idle keep-alive connections its shutdown closed; then the median and max
// lag from SIGTERM to the rules sync. The watches are separate streams, so
// their order can be off by a few tens of milliseconds; and the sync that
// finished first may have started just before the change, so the lag is a
// lower bound.
func (p *propagation) timeline(logs *podLogs, lastServed map[string]time.Time) (string, propagationLags) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for n := range p.deletedAt {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	lags := propagationLags{servedUntil: map[string]time.Duration{}}
	rel := func(at, base time.Time) string {
		if at.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%+.3fs", at.Sub(base).Seconds())
	}
	fmt.Fprintf(&b, "  propagation per termination (the app's SIGTERM = +0; deletion seen, endpoint terminating, kube-proxy rules synced, last GET / served, shutdown began, exit; idle keep-alive connections closed by the shutdown):\n")
	for _, n := range names {
		del := p.deletedAt[n]
		app, followed := logs.moments(n)
		base := app.draining
		if base.IsZero() {
			fmt.Fprintf(&b, "    %-32s no SIGTERM in the app's log (followed: %v); deletion seen = +0\n", n, followed)
			base = del
		}
		ep, epSeen := p.epGoneAt[n]
		var sync time.Time
		if epSeen {
			for _, s := range p.syncs {
				if !s.Before(ep) {
					sync = s
					break
				}
			}
		}
		idle := "-"
		if app.idleLogged {
			idle = strconv.Itoa(app.idleClosed)
			lags.idleClosed = append(lags.idleClosed, app.idleClosed)
		}
		if last := lastServed[n]; !last.IsZero() && !app.shuttingDown.IsZero() {
			lags.servedUntil[n] = app.shuttingDown.Sub(last)
		}
		fmt.Fprintf(&b, "    %-32s deleted %s, endpoint %s, rules synced %s, last GET / %s, shutdown %s, exit %s, idle closed %s\n",
			n, rel(del, base), rel(ep, base), rel(sync, base), rel(lastServed[n], base), rel(app.shuttingDown, base), rel(app.stopped, base), idle)
		if sync.IsZero() {
			continue
		}
		lags.deletionToSync = append(lags.deletionToSync, sync.Sub(del))
		if !app.draining.IsZero() {
			lags.sigtermToSync = append(lags.sigtermToSync, sync.Sub(app.draining))
		}
	}
	stat := func(what string, d []time.Duration) {
		if len(d) == 0 {
			fmt.Fprintf(&b, "  %s: not measured\n", what)
			return
		}
		sorted := slices.Clone(d)
		slices.Sort(sorted)
		fmt.Fprintf(&b, "  %s: median %.3fs, max %.3fs over %d terminations\n",
			what, sorted[len(sorted)/2].Seconds(), sorted[len(sorted)-1].Seconds(), len(sorted))
	}
	if len(lags.servedUntil) > 0 {
		var gaps []time.Duration
		for _, d := range lags.servedUntil {
			gaps = append(gaps, d)
		}
		slices.Sort(gaps)
		fmt.Fprintf(&b, "  last GET / served before Shutdown began: min %.3fs, median %.3fs over %d terminations\n",
			gaps[0].Seconds(), gaps[len(gaps)/2].Seconds(), len(gaps))
	}
	stat("SIGTERM -> kube-proxy rules synced", lags.sigtermToSync)
	stat("deletion -> kube-proxy rules synced", lags.deletionToSync)
	if len(lags.idleClosed) > 0 {
		total := 0
		for _, n := range lags.idleClosed {
			total += n
		}
		fmt.Fprintf(&b, "  idle keep-alive connections closed by Shutdown: %d over %d terminations (max %d in one)\n",
			total, len(lags.idleClosed), slices.Max(lags.idleClosed))
	}
	if c := p.progCnt1 - p.progCnt0; c > 0 {
		fmt.Fprintf(&b, "  kube-proxy's own network programming duration: mean %.3fs over %.0f changes\n", (p.progSum1-p.progSum0)/c, c)
	} else if !math.IsNaN(p.progCnt1) {
		fmt.Fprintf(&b, "  kube-proxy's network programming duration: no change counted\n")
	}
	return b.String(), lags
}
