package grpcserver_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kubeskel/kubeskel/internal/grpcapp"
	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
	"github.com/kubeskel/kubeskel/internal/grpcserver"
)

func echoDeps() grpcapp.Deps {
	return grpcapp.Deps{Host: "test", MaxInterval: time.Minute, MaxCount: 1000}
}

// start binds and serves a server on 127.0.0.1:0; it is closed when the test ends.
func start(t *testing.T, o grpcserver.Options) *grpcserver.Server {
	t.Helper()
	if o.Register == nil {
		o.Register = func(r grpc.ServiceRegistrar) { grpcapp.Register(r, echoDeps()) }
	}
	o.ReadyInterval = 10 * time.Millisecond
	s, err := grpcserver.Listen("grpc", "127.0.0.1:0", o)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve = %v, want nil after Close", err)
		}
	})
	return s
}

// client dials s and counts the TCP connections it opens.
func client(t *testing.T, s *grpcserver.Server) (*grpc.ClientConn, *atomic.Int32) {
	t.Helper()
	var dials atomic.Int32
	cc, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			dials.Add(1)
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, &dials
}

func TestListenPortInUse(t *testing.T) {
	l, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = grpcserver.Listen("grpc", l.Addr().String(), grpcserver.Options{})
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Listen on a port in use = %v, want an error naming %s", err, l.Addr())
	}
}

// The health service follows Ready, and a Watch stream sees NOT_SERVING as
// soon as draining starts, whatever Ready says.
func TestHealthFollowsReadinessAndDrain(t *testing.T) {
	var notReady atomic.Bool
	notReady.Store(true)
	s := start(t, grpcserver.Options{Ready: func() error {
		if notReady.Load() {
			return errors.New("not ready")
		}
		return nil
	}})
	cc, _ := client(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{Service: "kubeskel.echo.v1.Echo"})
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch.Recv: %v", err)
		}
		return r.GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status before ready = %s, want NOT_SERVING", got)
	}
	notReady.Store(false)
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status once ready = %s, want SERVING", got)
	}
	began := time.Now()
	s.StartDraining()
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status after StartDraining = %s, want NOT_SERVING", got)
	}
	if d := time.Since(began); d > time.Second {
		t.Errorf("Watch saw NOT_SERVING %s after StartDraining, want at once", d)
	}
	r, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check(\"\") while draining = %v, %v; want NOT_SERVING", r, err)
	}
}

// rawConn is an HTTP/2 connection without a gRPC client above it: it sees
// the frames the server sends, GOAWAY included.
func rawGoAway(t *testing.T, addr string) <-chan *http2.GoAwayFrame {
	t.Helper()
	c, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	got := make(chan *http2.GoAwayFrame, 2)
	go func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				close(got)
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck() // a write error ends the read loop next
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = fr.WritePing(true, f.Data)
				}
			case *http2.GoAwayFrame:
				got <- f
			}
		}
	}()
	return got
}

// StartDraining sends GOAWAY to the connections already open while the
// listener keeps accepting: an RPC open on an old connection finishes, and
// the client's next call succeeds on a new connection.
func TestStartDrainingSendsGoAwayAndKeepsAccepting(t *testing.T) {
	s := start(t, grpcserver.Options{})
	goaway := rawGoAway(t, s.Addr().String())
	cc, dials := client(t, s)
	echo := echov1.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "before"}); err != nil {
		t.Fatal(err)
	}
	stream, err := echo.Count(ctx, &echov1.CountRequest{Count: 5, IntervalMs: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	s.StartDraining()
	select {
	case f, ok := <-goaway:
		if !ok {
			t.Fatal("raw connection closed without GOAWAY")
		}
		if f.ErrCode != http2.ErrCodeNo {
			t.Errorf("GOAWAY code = %s, want NO_ERROR", f.ErrCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no GOAWAY within 5s of StartDraining")
	}
	// The stream opened before the GOAWAY runs to its end.
	n := 1
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream open across StartDraining: %v after %d messages", err, n)
		}
		n++
	}
	if n != 5 {
		t.Errorf("stream got %d messages, want 5", n)
	}
	// The next calls succeed, on a new connection the listener accepted.
	for i := range 3 {
		if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "after"}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("call %d after StartDraining: %v", i, err)
		}
	}
	if got := dials.Load(); got != 2 {
		t.Errorf("client dialled %d connections, want 2 (the second after GOAWAY)", got)
	}
}

// blocking is an Echo whose Count ignores its context: only the deadline's
// Stop ends it.
type blocking struct {
	echov1.UnimplementedEchoServer
	started, release chan struct{}
}

func (b *blocking) Count(_ *echov1.CountRequest, stream grpc.ServerStreamingServer[echov1.CountResponse]) error {
	_ = stream.Send(&echov1.CountResponse{N: 1}) // the test waits on started, not on this message
	close(b.started)
	<-b.release // a handler that ignores cancellation
	return nil
}

func TestShutdownCutsRPCsAtDeadline(t *testing.T) {
	b := &blocking{started: make(chan struct{}), release: make(chan struct{})}
	s := start(t, grpcserver.Options{Register: func(r grpc.ServiceRegistrar) { echov1.RegisterEchoServer(r, b) }})
	t.Cleanup(func() { close(b.release) })
	cc, _ := client(t, s)
	stream, err := echov1.NewEchoClient(cc).Count(context.Background(), &echov1.CountRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-b.started
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cut, err := s.Shutdown(ctx, 100*time.Millisecond)
	if cut != 1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %d, %v; want 1 cut, deadline exceeded", cut, err)
	}
	_, _ = stream.Recv() // the message sent before blocking
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("cut stream ended with %v, want Unavailable", err)
	}
}

// A streaming handler that honours its context sees it cancelled
// CancelMargin before the deadline and ends cleanly: nothing is cut.
func TestShutdownCancelMarginEndsStreamsCleanly(t *testing.T) {
	s := start(t, grpcserver.Options{})
	cc, _ := client(t, s)
	stream, err := echov1.NewEchoClient(cc).Count(context.Background(), &echov1.CountRequest{Count: 1000, IntervalMs: 50})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var streamErr error
	wg.Go(func() {
		for {
			if _, streamErr = stream.Recv(); streamErr != nil {
				return
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	began := time.Now()
	cut, err := s.Shutdown(ctx, 500*time.Millisecond)
	took := time.Since(began)
	wg.Wait()
	if cut != 0 || err != nil {
		t.Errorf("Shutdown = %d, %v; want 0, nil", cut, err)
	}
	if !errors.Is(streamErr, io.EOF) {
		t.Errorf("stream ended with %v, want a clean end (EOF)", streamErr)
	}
	if took < 400*time.Millisecond || took > 900*time.Millisecond {
		t.Errorf("Shutdown took %s, want about the deadline minus the margin (500ms)", took)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	panics := 0
	s := start(t, grpcserver.Options{Obs: grpcserver.Observability{Panic: func() { panics++ }}})
	cc, _ := client(t, s)
	echo := echov1.NewEchoClient(cc)
	_, err := echo.Say(context.Background(), &echov1.SayRequest{Message: "panic"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("Say(panic) = %v, want Internal", err)
	}
	if _, err := echo.Say(context.Background(), &echov1.SayRequest{Message: "hi"}); err != nil {
		t.Fatalf("call after a panic: %v", err)
	}
	if panics != 1 {
		t.Errorf("panics counted = %d, want 1", panics)
	}
}

// Observe gets every RPC with its method, code and duration.
func TestObserveMethodAndCode(t *testing.T) {
	var mu sync.Mutex
	var got []string
	var durations []time.Duration
	s := start(t, grpcserver.Options{Obs: grpcserver.Observability{Observe: func(m, code string, d time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, m+" "+code)
		durations = append(durations, d)
	}}})
	cc, _ := client(t, s)
	echo := echov1.NewEchoClient(cc)
	if _, err := echo.Say(context.Background(), &echov1.SayRequest{}); err != nil {
		t.Fatal(err)
	}
	st, _ := echo.Count(context.Background(), &echov1.CountRequest{Count: 1, IntervalMs: 120_000})
	for _, err := st.Recv(); err == nil; _, err = st.Recv() {
	}
	// Two messages 30 ms apart: the stream takes at least 30 ms.
	const intervalMs = 30
	const interval = intervalMs * time.Millisecond
	before := time.Now()
	st, _ = echo.Count(context.Background(), &echov1.CountRequest{Count: 2, IntervalMs: intervalMs})
	for _, err := st.Recv(); err == nil; _, err = st.Recv() {
	}
	took := time.Since(before)
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/kubeskel.echo.v1.Echo/Say OK", "/kubeskel.echo.v1.Echo/Count InvalidArgument", "/kubeskel.echo.v1.Echo/Count OK"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("observed %v, want %v", got, want)
	}
	if d := durations[2]; d < interval || d > took {
		t.Errorf("Count observed taking %v, want at least %v and at most the %v the client waited", d, interval, took)
	}
	for i, d := range durations[:2] {
		if d < 0 || d > took {
			t.Errorf("RPC %d observed taking %v", i, d)
		}
	}
}

// A health Watch stream, which a client with client-side health checking
// keeps open on every connection, does not hold the drain: when graceful
// stop begins it gets NOT_SERVING and then ends with Unavailable (retry,
// elsewhere), so Shutdown returns as soon as the other RPCs are done, with
// nothing cut.
func TestWatchDoesNotHoldTheDrain(t *testing.T) {
	for _, tt := range []struct {
		name          string
		startDraining bool // StartDraining before Shutdown, as the lifecycle does
	}{
		{"StartDraining then Shutdown", true},
		{"Shutdown alone", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, grpcserver.Options{})
			cc, _ := client(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			watch, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatal(err)
			}
			for { // NOT_SERVING until the first readiness poll
				r, err := watch.Recv()
				if err != nil {
					t.Fatalf("Watch.Recv before the drain: %v", err)
				}
				if r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
					break
				}
			}

			if tt.startDraining {
				s.StartDraining()
			}
			const deadline = 5 * time.Second
			shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), deadline)
			defer cancelShutdown()
			began := time.Now()
			cut, err := s.Shutdown(shutdownCtx, time.Second)
			took := time.Since(began)
			if cut != 0 || err != nil {
				t.Errorf("Shutdown = %d, %v; want 0, nil: a Watch is not a cut RPC", cut, err)
			}
			if took > deadline/5 {
				t.Errorf("Shutdown took %s with a Watch open, want well before the %s deadline", took.Round(time.Millisecond), deadline)
			}
			r, err := watch.Recv()
			if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("Watch after Shutdown = %v, %v; want NOT_SERVING first", r, err)
			}
			if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
				t.Errorf("Watch ended with %v, want Unavailable", err)
			}
		})
	}
}

// With Reflection on, a grpc.reflection.v1 client lists the example
// service; with it off, the reflection service is Unimplemented.
func TestReflection(t *testing.T) {
	for _, tt := range []struct {
		name       string
		reflection bool
		want       codes.Code
	}{
		{"on", true, codes.OK},
		{"off", false, codes.Unimplemented},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, grpcserver.Options{Reflection: tt.reflection})
			cc, _ := client(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// A stream's status arrives with the first Recv, not at open.
			err = stream.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
			})
			if err != nil && !errors.Is(err, io.EOF) { // EOF: the status follows on Recv
				t.Fatal(err)
			}
			r, err := stream.Recv()
			if got := status.Code(err); got != tt.want {
				t.Fatalf("ListServices = %v, want %s", err, tt.want)
			}
			if tt.want != codes.OK {
				return
			}
			var names []string
			for _, svc := range r.GetListServicesResponse().GetService() {
				names = append(names, svc.GetName())
			}
			if !slices.Contains(names, "kubeskel.echo.v1.Echo") {
				t.Errorf("reflection lists %v, want kubeskel.echo.v1.Echo among them", names)
			}
		})
	}
}

// MaxConnectionAge sends GOAWAY to a connection that old, and the client's
// next call succeeds over a new connection.
func TestMaxConnectionAgeSendsGoAway(t *testing.T) {
	s := start(t, grpcserver.Options{MaxConnectionAge: 200 * time.Millisecond, MaxConnectionAgeGrace: 100 * time.Millisecond})
	goaway := rawGoAway(t, s.Addr().String())
	cc, dials := client(t, s)
	echo := echov1.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "first"}); err != nil {
		t.Fatal(err)
	}
	select {
	case f, ok := <-goaway:
		if !ok {
			t.Error("raw connection closed without GOAWAY")
		} else if f.ErrCode != http2.ErrCodeNo {
			t.Errorf("GOAWAY code = %s, want NO_ERROR", f.ErrCode)
		}
	case <-time.After(2 * time.Second):
		t.Error("no GOAWAY within 2s on a connection with MaxConnectionAge 200ms")
	}
	// The client reconnects on its next call after its own GOAWAY; every
	// call succeeds.
	calls := 1
	for deadline := time.Now().Add(3 * time.Second); dials.Load() < 2 && time.Now().Before(deadline); calls++ {
		if _, err := echo.Say(ctx, &echov1.SayRequest{Message: "again"}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := dials.Load(); got < 2 {
		t.Errorf("client dialled %d connection(s) in %d calls over 3s, want a second one after MaxConnectionAge", got, calls)
	}
}

// h2Conn is a raw HTTP/2 client connection whose frames the test writes
// itself (a grpc-go client will not ping more often than every 10s). A
// reader acks the server's SETTINGS and PINGs and reports what it reads.
type h2Conn struct {
	mu     sync.Mutex // the Framer's writes are not safe for concurrent use
	fr     *http2.Framer
	events chan h2Event // closed when the connection ends
}

// h2Event is what the reader saw: a Frame is only valid until the next
// ReadFrame, so the fields the tests need are copied out.
type h2Event struct {
	typ    http2.FrameType
	ack    bool          // SETTINGS and PING
	code   http2.ErrCode // GOAWAY
	debug  string        // GOAWAY
	stream uint32
}

// dialH2 opens c and waits until the server has acked its SETTINGS.
func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	nc, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &h2Conn{fr: http2.NewFramer(nc, nc), events: make(chan h2Event, 64)}
	if _, err := io.WriteString(nc, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c.write(t, func(fr *http2.Framer) error { return fr.WriteSettings() })
	go c.read()
	c.next(t, func(e h2Event) bool { return e.typ == http2.FrameSettings && e.ack })
	return c
}

func (c *h2Conn) write(t *testing.T, w func(*http2.Framer) error) {
	t.Helper()
	if err := c.tryWrite(w); err != nil {
		t.Fatal(err)
	}
}

// tryWrite is write for frames that may follow the server closing the
// connection: the reader reports what happened.
func (c *h2Conn) tryWrite(w func(*http2.Framer) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return w(c.fr)
}

func (c *h2Conn) read() {
	defer close(c.events)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		e := h2Event{typ: f.Header().Type, stream: f.Header().StreamID}
		c.mu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if e.ack = f.IsAck(); !e.ack {
				err = c.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if e.ack = f.IsAck(); !e.ack {
				err = c.fr.WritePing(true, f.Data)
			}
		case *http2.GoAwayFrame:
			e.code, e.debug = f.ErrCode, string(f.DebugData())
		}
		c.mu.Unlock()
		if err != nil {
			return
		}
		c.events <- e
	}
}

// next waits up to 5s for an event that match accepts; it fails the test if
// the connection ends first.
func (c *h2Conn) next(t *testing.T, match func(h2Event) bool) h2Event {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				t.Fatal("connection ended")
			}
			if match(e) {
				return e
			}
		case <-timeout:
			t.Fatal("no matching frame within 5s")
		}
	}
}

// openWatch opens a health Watch on stream 1 for a service nobody sets, so
// the stream stays open and the server writes nothing after its first
// message, and waits for that message.
func (c *h2Conn) openWatch(t *testing.T, addr string) {
	t.Helper()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Watch"},
		{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := proto.Marshal(&healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) //nolint:gosec // G115: a few bytes
	body = append(body, msg...)
	c.write(t, func(fr *http2.Framer) error {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		return fr.WriteData(1, true, body)
	})
	c.next(t, func(e h2Event) bool { return e.typ == http2.FrameData && e.stream == 1 })
}

// The keepalive enforcement policy: a client that pings more often than
// KeepaliveMinTime while an RPC is open, or at all with none open unless
// KeepalivePermitWithoutStream, gets GOAWAY ENHANCE_YOUR_CALM
// "too_many_pings" (grpc-go allows two strikes); one that keeps to the
// policy keeps its connection.
func TestKeepaliveEnforcement(t *testing.T) {
	for _, tt := range []struct {
		name       string
		minTime    time.Duration
		permit     bool // KeepalivePermitWithoutStream
		stream     bool // a Watch open while pinging
		gap        time.Duration
		wantGoAway bool
	}{
		{"faster than MinTime with an RPC open", time.Minute, false, true, 0, true},
		{"slower than MinTime with an RPC open", 20 * time.Millisecond, false, true, 100 * time.Millisecond, false},
		{"no RPC open, PermitWithoutStream", 20 * time.Millisecond, true, false, 100 * time.Millisecond, false},
		// grpc-go then allows one ping every two hours, whatever MinTime.
		{"no RPC open, PermitWithoutStream false", 20 * time.Millisecond, false, false, 100 * time.Millisecond, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, grpcserver.Options{KeepaliveMinTime: tt.minTime, KeepalivePermitWithoutStream: tt.permit})
			c := dialH2(t, s.Addr().String())
			if tt.stream {
				c.openWatch(t, s.Addr().String())
			}
			for i := range byte(5) {
				time.Sleep(tt.gap)
				_ = c.tryWrite(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{i}) }) // after a GOAWAY, the write may fail
			}
			// A SETTINGS fence: the server acks frames in order, so its ack
			// comes after any GOAWAY the pings caused, and a GOAWAY closes
			// the connection before the ack is written.
			_ = c.tryWrite(func(fr *http2.Framer) error { return fr.WriteSettings() }) // likewise
			e := c.next(t, func(e h2Event) bool {
				return e.typ == http2.FrameGoAway || e.typ == http2.FrameSettings && e.ack
			})
			gotGoAway := e.typ == http2.FrameGoAway
			if gotGoAway != tt.wantGoAway {
				t.Fatalf("after 5 pings %s apart: GOAWAY = %t (%s %q), want %t", tt.gap, gotGoAway, e.code, e.debug, tt.wantGoAway)
			}
			if gotGoAway && (e.code != http2.ErrCodeEnhanceYourCalm || e.debug != "too_many_pings") {
				t.Errorf("GOAWAY = %s %q, want ENHANCE_YOUR_CALM \"too_many_pings\"", e.code, e.debug)
			}
		})
	}
}

// goroutineEcho records the goroutine each Say runs on.
type goroutineEcho struct {
	echov1.UnimplementedEchoServer
	mu  sync.Mutex
	ids []string
}

func (g *goroutineEcho) Say(context.Context, *echov1.SayRequest) (*echov1.SayResponse, error) {
	buf := make([]byte, 64)
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf[:runtime.Stack(buf, false)]), "goroutine "), " ")
	g.mu.Lock()
	g.ids = append(g.ids, id)
	g.mu.Unlock()
	return &echov1.SayResponse{}, nil
}

// With StreamWorkers, sequential RPCs reuse the workers' goroutines (and
// their grown stacks); without, each RPC runs on a goroutine of its own.
// A worker that has not yet returned to wait for the next stream lets that
// stream fall back to a new goroutine, so reuse is asserted for most calls,
// not all.
func TestStreamWorkersReuseGoroutines(t *testing.T) {
	const calls = 40
	for _, tt := range []struct {
		workers   int
		minReused int
		maxReused int
	}{
		{workers: 0, minReused: 0, maxReused: 0},
		{workers: 2, minReused: calls / 2, maxReused: calls - 1},
	} {
		t.Run(fmt.Sprintf("workers=%d", tt.workers), func(t *testing.T) {
			g := &goroutineEcho{}
			s := start(t, grpcserver.Options{StreamWorkers: tt.workers,
				Register: func(r grpc.ServiceRegistrar) { echov1.RegisterEchoServer(r, g) }})
			cc, _ := client(t, s)
			echo := echov1.NewEchoClient(cc)
			for range calls {
				if _, err := echo.Say(t.Context(), &echov1.SayRequest{}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond) // let the worker wait for the next stream
			}
			seen := map[string]bool{}
			reused := 0
			for _, id := range g.ids {
				if seen[id] {
					reused++
				}
				seen[id] = true
			}
			if reused < tt.minReused || reused > tt.maxReused {
				t.Errorf("%d of %d calls ran on a goroutine that had run an earlier one, want %d to %d (goroutines %v)",
					reused, calls, tt.minReused, tt.maxReused, g.ids)
			}
		})
	}
}
