//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// sseStream is one GET /events through the load balancer, from open to end.
type sseStream struct {
	host  string // the instance serving it, from its first tick ("" before)
	final bool   // received "event: shutdown" naming host
	ended bool
	// err is why the stream ended: nil for a clean end of stream (end of the
	// chunked body, or END_STREAM), else the status or transport error.
	err     error
	stopped bool // ended by the harness at the end of the run: not an outcome
}

// ok: the stream ended cleanly right after its final event. Only the live
// instance can produce that: HAProxy cannot make up an SSE event, and a
// process that exits (or is killed) with the stream open makes HAProxy
// abort the client's stream, which the client sees as an error.
func (s *sseStream) ok() bool { return s.ended && s.err == nil && s.final }

// streamWatch keeps n SSE streams open through the load balancer for the
// whole run, each reconnecting as soon as its stream ends, like an
// EventSource.
type streamWatch struct {
	url    string
	client *http.Client
	mu     sync.Mutex
	all    []*sseStream
	wg     sync.WaitGroup
}

// watchStreams opens n streams to url (GET /events?every=100ms) until ctx
// ends. With h2, every stream is multiplexed on one h2c connection.
func watchStreams(ctx context.Context, url string, h2 bool, n int) *streamWatch {
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	if h2 {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	w := &streamWatch{url: url + "/events?every=100ms", client: &http.Client{Transport: tr}}
	for range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for ctx.Err() == nil {
				w.follow(ctx)
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond): // reconnect pause
				}
			}
		}()
	}
	return w
}

// wait returns once every stream has ended; call it after cancelling ctx.
func (w *streamWatch) wait() { w.wg.Wait() }

// follow opens one stream and reads it to its end.
func (w *streamWatch) follow(ctx context.Context) {
	s := &sseStream{}
	w.mu.Lock()
	w.all = append(w.all, s)
	w.mu.Unlock()
	end := func(err error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		s.ended, s.err = true, err
		s.stopped = err != nil && ctx.Err() != nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		panic(err) // a bug in the harness
	}
	resp, err := w.client.Do(req)
	if err != nil {
		end(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		end(fmt.Errorf("status %d", resp.StatusCode))
		return
	}
	rd := bufio.NewReader(resp.Body)
	var event string
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) && line == "" && event == "" {
				err = nil // a clean end of stream, between events
			} else if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			end(err)
			return
		}
		line = strings.TrimSuffix(line, "\n")
		k, v, _ := strings.Cut(line, ": ")
		switch k {
		case "":
			event = ""
		case "event":
			event = v
		case "data":
			w.mu.Lock()
			switch {
			case event == "tick" && s.host == "":
				if _, host, ok := strings.Cut(v, " "); ok {
					s.host = host
				}
			case event == "shutdown":
				// A final event is only good from the instance that served
				// the stream, and only once.
				s.final = v == s.host && !s.final
			}
			w.mu.Unlock()
		}
	}
}

// openOn returns the streams open on instance host now.
func (w *streamWatch) openOn(host string) []*sseStream {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*sseStream
	for _, s := range w.all {
		if !s.ended && s.host == host {
			out = append(out, s)
		}
	}
	return out
}

// settled waits up to timeout for every stream of ss to end and returns
// how many ended ok.
func (w *streamWatch) settled(ss []*sseStream, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		w.mu.Lock()
		ended, ok := 0, 0
		for _, s := range ss {
			if s.ended {
				ended++
			}
			if s.ok() {
				ok++
			}
		}
		w.mu.Unlock()
		if ended == len(ss) || time.Now().After(deadline) {
			return ok
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// streamSummary counts the streams of a run.
type streamSummary struct {
	opened, final, stopped int
	failures               []string // one line per stream that ended badly
}

func (w *streamWatch) summarize() streamSummary {
	w.mu.Lock()
	defer w.mu.Unlock()
	var s streamSummary
	s.opened = len(w.all)
	for _, st := range w.all {
		switch {
		case st.ok():
			s.final++
		case st.stopped:
			s.stopped++
		case st.err != nil:
			s.failures = append(s.failures, fmt.Sprintf("stream on %q: %v (final event: %v)", st.host, st.err, st.final))
		default:
			s.failures = append(s.failures, fmt.Sprintf("stream on %q ended cleanly without the final event", st.host))
		}
	}
	return s
}

// TestStreamKillControl is the control of the streaming check: an instance
// killed (SIGKILL) with streams open must show up as failed streams through
// HAProxy, in both protocols, never as a clean end with a final event. If
// HAProxy turned an aborted stream into a clean end, the check in
// TestRollingRestart would prove nothing.
func TestStreamKillControl(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "h2"}[h2], func(t *testing.T) {
			lb := startHAProxy(t, false, h2, checkInter, 1)
			inst := startInstance(t, scenario{prestop: time.Second}.env())
			inst.waitReady(t, 10*time.Second)
			lb.add(t, inst)
			lb.waitUp(t, inst, 10*time.Second)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := watchStreams(ctx, "http://"+lb.addr, h2, 4)
			deadline := time.Now().Add(10 * time.Second)
			for len(w.openOn(inst.name)) < 4 {
				if time.Now().After(deadline) {
					t.Fatalf("%d of 4 streams open on %s after 10s", len(w.openOn(inst.name)), inst.name)
				}
				time.Sleep(10 * time.Millisecond)
			}
			open := w.openOn(inst.name)
			if err := inst.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-inst.exited
			ok := w.settled(open, 10*time.Second)
			cancel()
			w.wait()
			failed := 0
			for _, s := range open {
				if s.ended && !s.ok() && !s.stopped {
					failed++
				}
			}
			t.Logf("killed with %d streams open: %d ended with the final event, %d failed", len(open), ok, failed)
			if ok != 0 || failed != len(open) {
				t.Errorf("after SIGKILL %d of %d streams ended ok and %d failed; want 0 ok and all failed", ok, len(open), failed)
			}
		})
	}
}
