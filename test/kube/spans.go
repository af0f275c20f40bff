//go:build kube

package kube

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// spanSinkAddr is where the suite's OTLP/HTTP receiver listens: the node IP
// (KUBE_NODE_IP in hack/kube-lib.sh) inside the node's network namespace,
// which the pods reach through their bridge. values-sidecar.yaml points the
// collector's otlphttp exporter at it.
const spanSinkAddr = "10.250.0.1:14318"

// spanSink is a minimal OTLP/HTTP trace receiver, the "backend" behind the
// collector sidecar: it decodes protobuf export requests (gzip or not) and
// records when each trace ID first arrived.
type spanSink struct {
	srv *http.Server

	mu      sync.Mutex
	traces  map[string]time.Time // hex trace ID -> first arrival
	spans   int
	exports int
	bad     []string // export requests it could not decode
}

// startSpanSink listens on spanSinkAddr and serves until the test ends.
func startSpanSink(t testing.TB) *spanSink {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(t.Context(), "tcp", spanSinkAddr)
	if err != nil {
		t.Fatalf("span sink: listen on %s: %v", spanSinkAddr, err)
	}
	k := &spanSink{traces: map[string]time.Time{}}
	k.srv = &http.Server{Handler: k, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- k.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := k.srv.Shutdown(ctx); err != nil {
			t.Errorf("span sink: shut down: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("span sink: serve: %v", err)
		}
	})
	return k
}

func (k *spanSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := decodeExport(r)
	if err != nil {
		k.mu.Lock()
		k.bad = append(k.bad, err.Error())
		k.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	k.mu.Lock()
	k.exports++
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				k.spans++
				id := hex.EncodeToString(sp.GetTraceId())
				if _, ok := k.traces[id]; !ok {
					k.traces[id] = now
				}
			}
		}
	}
	k.mu.Unlock()
	// Recorded before answering: once the collector has its response, the
	// spans are in the map.
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func decodeExport(r *http.Request) (*collectortrace.ExportTraceServiceRequest, error) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		return nil, fmt.Errorf("%s %s: want POST /v1/traces", r.Method, r.URL.Path)
	}
	var body io.Reader = r.Body
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, fmt.Errorf("gunzip export request: %w", err)
		}
		defer zr.Close()
		body = zr
	default:
		return nil, fmt.Errorf("content encoding %q not supported", enc)
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read export request: %w", err)
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, fmt.Errorf("decode export request: %w", err)
	}
	return &req, nil
}

// snapshot returns a copy of the trace IDs received so far and the counts.
func (k *spanSink) snapshot() (traces map[string]time.Time, spans, exports int, bad []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	traces = make(map[string]time.Time, len(k.traces))
	for id, at := range k.traces {
		traces[id] = at
	}
	return traces, k.spans, k.exports, append([]string(nil), k.bad...)
}

// tracedRequest is one GET of the traced load. Each carries its own W3C
// traceparent, so the app's server span for it has that trace ID.
type tracedRequest struct {
	target  string // "service" or "pod"
	traceID string
	start   time.Time
	done    time.Time
	status  int
	body    string
	err     error
}

// newTraceparent returns a sampled W3C traceparent and its trace ID.
func newTraceparent() (header, traceID string) {
	var b [24]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	traceID = hex.EncodeToString(b[:16])
	return "00-" + traceID + "-" + hex.EncodeToString(b[16:]) + "-01", traceID
}

// tracedLoad sends GET url, one at a time on a new connection each (so
// every request is routed anew and a closed listener shows at once), every
// interval, until stop is closed, ctx ends or limit requests were sent.
func tracedLoad(ctx context.Context, target, url string, interval time.Duration, limit int, stop <-chan struct{}) []tracedRequest {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var out []tracedRequest
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for len(out) < limit {
		select {
		case <-stop:
			return out
		case <-ctx.Done():
			return out
		case <-tick.C:
		}
		tp, id := newTraceparent()
		r := tracedRequest{target: target, traceID: id, start: time.Now()}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			r.err = err
			out = append(out, r)
			return out
		}
		req.Header.Set("Traceparent", tp)
		resp, err := client.Do(req)
		if err == nil {
			var b []byte
			b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			r.status, r.body = resp.StatusCode, string(b)
		}
		r.err, r.done = err, time.Now()
		out = append(out, r)
	}
	return out
}

// spanReport is what the span check found for one termination.
type spanReport struct {
	// servedByPod are the requests the terminated pod answered 200.
	servedByPod int
	// servedAfterDelete of those completed after the delete; servedInDelay
	// between the delete and the end of the pre-stop delay (the app's
	// shutting_down phase).
	servedAfterDelete, servedInDelay int
	// missing, missingAfterDelete, missingInDelay count the requests of
	// each group whose trace never reached the sink.
	missing, missingAfterDelete, missingInDelay int
	// lastMissing describes the last few missing requests.
	lastMissing []string
	// otherPod, failed: requests answered by another pod, or not answered 200.
	otherPod, failed int
	perTarget        map[string]int // requests sent per target
}

// checkSpans matches the requests pod answered against the traces that
// reached the sink. delayEnd is when the app left its pre-stop delay
// (zero: unknown, then no request counts as served in the delay).
func checkSpans(reqs []tracedRequest, pod string, deleteAt, delayEnd time.Time, traces map[string]time.Time) spanReport {
	r := spanReport{perTarget: map[string]int{}}
	for _, q := range reqs {
		r.perTarget[q.target]++
		if q.err != nil || q.status != http.StatusOK {
			r.failed++
			continue
		}
		if !strings.Contains(q.body, pod) {
			r.otherPod++
			continue
		}
		_, ok := traces[q.traceID]
		afterDelete := q.done.After(deleteAt)
		inDelay := afterDelete && !delayEnd.IsZero() && q.start.Before(delayEnd)
		r.servedByPod++
		if !ok {
			r.missing++
		}
		if afterDelete {
			r.servedAfterDelete++
			if !ok {
				r.missingAfterDelete++
			}
		}
		if inDelay {
			r.servedInDelay++
			if !ok {
				r.missingInDelay++
			}
		}
		if !ok {
			r.lastMissing = append(r.lastMissing, fmt.Sprintf("%s trace %s answered at %+.3fs", q.target, q.traceID, q.done.Sub(deleteAt).Seconds()))
			if len(r.lastMissing) > 5 {
				r.lastMissing = r.lastMissing[1:]
			}
		}
	}
	return r
}

func (r spanReport) String() string {
	return fmt.Sprintf("requests sent %v; answered 200 by the terminated pod: %d, spans received for %d; "+
		"after the delete: %d, spans received for %d; during the pre-stop delay: %d, spans received for %d; "+
		"answered by another pod %d, not answered 200 %d",
		r.perTarget, r.servedByPod, r.servedByPod-r.missing, r.servedAfterDelete, r.servedAfterDelete-r.missingAfterDelete,
		r.servedInDelay, r.servedInDelay-r.missingInDelay, r.otherPod, r.failed)
}

// errNoSpans is returned by waitSpans when the sink saw nothing in time.
var errNoSpans = errors.New("no span reached the receiver")

// waitSpans waits up to limit for the trace of id to reach the sink.
func (k *spanSink) waitTrace(ctx context.Context, id string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		k.mu.Lock()
		_, ok := k.traces[id]
		k.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("trace %s: %w within %s", id, errNoSpans, limit)
}
