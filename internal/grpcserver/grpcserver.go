// Package grpcserver is the gRPC traffic server: a grpc-go server bound at
// Listen, with the standard health service, optional reflection, and a
// drain that implements lifecycle.Server. It is the only package that knows
// about google.golang.org/grpc's server side.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/kubeskel/kubeskel/internal/stopwatch"
)

// Options configures a Server. Zero durations take grpc-go's defaults
// unless said otherwise.
type Options struct {
	// Register adds the application's services to a grpc-go server. It is
	// called once per generation (see StartDraining), so it must only
	// register.
	Register func(grpc.ServiceRegistrar)
	// Ready is the readiness the health service reports: SERVING while it
	// returns nil. It is polled every ReadyInterval (default 200ms) until
	// StartDraining, which sets NOT_SERVING at once and for good.
	Ready         func() error
	ReadyInterval time.Duration
	Reflection    bool // register grpc.reflection.v1 and v1alpha (reflectionServer: without protodesc)

	// KeepaliveMinTime is the shortest interval between client pings the
	// server accepts; a client pinging more often gets GOAWAY
	// ("too_many_pings"). PermitWithoutStream lets clients ping with no
	// RPC open.
	KeepaliveMinTime             time.Duration
	KeepalivePermitWithoutStream bool
	// MaxConnectionAge sends GOAWAY to a connection this long after it was
	// opened (±10% jitter, grpc-go), so long-lived clients rebalance; 0 is
	// unlimited. MaxConnectionAgeGrace then bounds the RPCs still open on
	// it; 0 is unlimited.
	MaxConnectionAge      time.Duration
	MaxConnectionAgeGrace time.Duration
	// StreamWorkers is the number of goroutines each generation keeps to
	// run streams (grpc.NumStreamWorkers); 0 starts a goroutine per stream.
	// See Listen.
	StreamWorkers int

	Obs Observability
}

// Server is a bound gRPC server. Create it with Listen; it implements
// lifecycle.Server.
//
// How clients are made to move during the pre-stop delay: grpc-go has no
// public way to send GOAWAY to one connection while the listener keeps
// accepting (GracefulStop does both at once; MaxConnectionAge cannot be
// changed on a running server; grpc.Server.ServeHTTP is experimental and
// slow). So the bound listener feeds connections to a *generation*: a
// grpc.Server of its own behind an in-memory listener. StartDraining starts
// a new generation, routes every new connection to it, and calls
// GracefulStop on the old one: each old connection gets GOAWAY, its open
// RPCs finish, and the client's next call opens a new connection, which the
// listener still accepts. Connections opened during the delay get GOAWAY
// at Shutdown.
type Server struct {
	name string
	lis  net.Listener
	opts Options

	health *health.Server
	srvOpt []grpc.ServerOption

	mu       sync.Mutex
	current  *generation
	all      []*generation
	stopping bool          // Shutdown or Close called
	stopped  chan struct{} // closed with stopping
	draining bool

	inFlight atomic.Int64
	arrivals atomic.Uint64
	clock    stopwatch.Epoch // times RPCs
	// handlers is the parent of every handler's context: cancelled
	// CancelMargin before the shutdown deadline.
	handlers      context.Context
	stopHandlers  context.CancelFunc
	readyStopOnce sync.Once
	readyStop     chan struct{}
}

// generation is one grpc.Server with the listener that feeds it.
type generation struct {
	srv   *grpc.Server
	lis   *chanListener
	serve chan error // Serve's result
	// endWatches ends the health Watch streams open on srv: see
	// healthService.
	endWatches context.CancelFunc
}

// gracefulStop ends g's health Watch streams, then sends GOAWAY to its
// connections and waits for their RPCs. health.Server.Shutdown must have
// run, so that watchers see NOT_SERVING before their stream ends.
func (g *generation) gracefulStop() {
	g.endWatches()
	g.srv.GracefulStop()
}

// Listen binds addr at once (a port in use fails here, naming the address)
// and returns a Server that serves once Serve is called. name is used in
// errors and logs ("grpc").
func Listen(name, addr string, o Options) (*Server, error) {
	lis, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s: %w", name, addr, err)
	}
	if o.ReadyInterval <= 0 {
		o.ReadyInterval = 200 * time.Millisecond
	}
	s := &Server{name: name, lis: lis, opts: o, health: health.NewServer(), clock: stopwatch.New(),
		stopped: make(chan struct{}), readyStop: make(chan struct{})}
	s.handlers, s.stopHandlers = context.WithCancel(context.Background())
	s.srvOpt = []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: o.KeepaliveMinTime, PermitWithoutStream: o.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge: o.MaxConnectionAge, MaxConnectionAgeGrace: o.MaxConnectionAgeGrace,
		}),
		grpc.ChainUnaryInterceptor(s.unary),
		grpc.ChainStreamInterceptor(s.stream),
	}
	if o.StreamWorkers > 0 && o.StreamWorkers <= math.MaxInt32 { // config caps it at 4096
		// A goroutine per stream starts with a small stack that every RPC
		// grows again (runtime.newstack, copystack). Workers keep their
		// grown stacks: bare grpc-go with them runs 0.57x its default
		// instructions per unary call (BENCHMARKS.md, run I). test/bench/bare
		// sets the same options for its BARE_SETTINGS baseline; keep the
		// two alike (bare must not link this package: it would carry
		// health and reflection into the baseline's size and start-up). A
		// stream arriving while all are busy gets its own goroutine, as
		// without them, so the workers only change which goroutine runs a
		// handler, never whether or when.
		// Stop and GracefulStop end them after the connections (grpc-go
		// v1.84 server.go). The option is marked experimental in grpc-go;
		// a release that drops it fails the build here, not at run time.
		s.srvOpt = append(s.srvOpt, grpc.NumStreamWorkers(uint32(o.StreamWorkers)))
	}
	s.current = s.newGeneration()
	s.all = []*generation{s.current}
	// Not serving until the first readiness poll says otherwise.
	s.setAll(healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// InFlight is the number of RPCs being served.
func (s *Server) InFlight() int64 { return s.inFlight.Load() }

// Arrivals counts the RPCs received since Listen, health checks excepted.
func (s *Server) Arrivals() uint64 { return s.arrivals.Load() }

func (s *Server) newGeneration() *generation {
	srv := grpc.NewServer(s.srvOpt...)
	stopping, endWatches := context.WithCancel(context.Background())
	healthpb.RegisterHealthServer(srv, &healthService{Server: s.health, stopping: stopping})
	if s.opts.Register != nil {
		s.opts.Register(srv)
	}
	if s.opts.Reflection {
		registerReflection(srv)
	}
	return &generation{srv: srv, lis: newChanListener(s.lis.Addr()), serve: make(chan error, 1), endWatches: endWatches}
}

func (s *Server) startGeneration(g *generation) {
	go func() { g.serve <- g.srv.Serve(g.lis) }()
}

// services are the names the health service answers for: "" (the whole
// server) and every registered service.
func (s *Server) services() []string {
	names := []string{""}
	for name := range s.current.srv.GetServiceInfo() {
		names = append(names, name)
	}
	return names
}

func (s *Server) setAll(st healthpb.HealthCheckResponse_ServingStatus) {
	for _, name := range s.services() {
		s.health.SetServingStatus(name, st)
	}
}

// Serve accepts connections until Shutdown or Close and then returns nil; it
// returns an error if accepting fails for another reason. Called after
// Shutdown or Close it closes the listener and returns nil at once.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		_ = s.lis.Close() // nothing was served on it; Close reports its error
		return nil
	}
	s.startGeneration(s.current)
	s.mu.Unlock()
	go s.pollReady()

	var backoff time.Duration
	for {
		c, err := s.lis.Accept()
		if err != nil {
			select {
			case <-s.stopped:
				return nil
			default:
			}
			// Like net/http: out of file descriptors is worth a retry.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.opts.Obs.logger().Warn("accept failed; retrying", "server", s.name, "err", err, "retry_in", backoff.String())
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept on %s: %w", s.lis.Addr(), err)
		}
		backoff = 0
		s.dispatch(c)
	}
}

// dispatch hands c to the current generation. If that generation has just
// been replaced and its listener closed, the loop picks the new one.
func (s *Server) dispatch(c net.Conn) {
	for {
		s.mu.Lock()
		g, stopping := s.current, s.stopping
		s.mu.Unlock()
		if stopping {
			_ = c.Close() // accepted after Shutdown: nothing was read from it
			return
		}
		if g.lis.deliver(c) {
			return
		}
	}
}

// pollReady keeps the health service in step with Ready until draining.
func (s *Server) pollReady() {
	tick := time.NewTicker(s.opts.ReadyInterval)
	defer tick.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_SERVING
		if s.opts.Ready != nil && s.opts.Ready() != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			return
		}
		if st != last {
			s.setAll(st) // under mu: StartDraining's NOT_SERVING is never overwritten
			last = st
		}
		s.mu.Unlock()
		select {
		case <-tick.C:
		case <-s.readyStop:
			return
		}
	}
}

// StartDraining sets every service NOT_SERVING (Watch streams see it at
// once, and for good) and sends GOAWAY to every open connection, while the
// listener keeps accepting new ones: see Server. RPCs open on the old
// connections keep running, except health Watch streams, which end with
// Unavailable after NOT_SERVING (see healthService).
func (s *Server) StartDraining() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining || s.stopping {
		return
	}
	s.draining = true
	s.health.Shutdown()
	old := s.current
	s.current = s.newGeneration()
	s.all = append(s.all, s.current)
	s.startGeneration(s.current)
	// GracefulStop closes old's listener first, so dispatch never hands
	// it another connection, then sends GOAWAY and waits for its RPCs: in
	// the background, Shutdown bounds it.
	go old.gracefulStop()
}

// Shutdown stops accepting, sends GOAWAY to every connection, and waits
// until every RPC has finished or ctx is done. Health Watch streams get
// NOT_SERVING and end with Unavailable at once, so they do not hold it. Handler contexts are
// cancelled cancelMargin before ctx's deadline so streaming handlers can end
// cleanly. At ctx's end every connection is closed, the RPCs still open are
// returned as cut with ctx's error, and Shutdown returns without waiting for
// handlers that ignore their context.
func (s *Server) Shutdown(ctx context.Context, cancelMargin time.Duration) (cut int, err error) {
	gens, lisErr := s.stop()
	s.health.Shutdown()
	if dl, ok := ctx.Deadline(); ok {
		t := time.AfterFunc(time.Until(dl)-cancelMargin, s.stopHandlers)
		defer t.Stop()
	}
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, g := range gens {
			wg.Go(g.gracefulStop)
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		cut = int(s.inFlight.Load())
		stopNow(gens)
		if cut > 0 {
			err = ctx.Err()
		}
	}
	s.stopHandlers()
	return cut, errors.Join(err, lisErr)
}

// Close closes the listener and every connection at once, without counting
// or waiting for handlers.
func (s *Server) Close() error {
	gens, err := s.stop()
	s.stopHandlers()
	stopNow(gens)
	return err
}

// stopNow closes every connection of gens and returns without waiting for
// their handlers: grpc-go's Stop waits for handlers to return, and one that
// ignores its context would hold the process forever.
func stopNow(gens []*generation) {
	for _, g := range gens {
		go g.srv.Stop()
	}
}

// stop marks the server stopping and closes the bound listener; it returns
// every generation. Called more than once, it returns no error.
func (s *Server) stop() ([]*generation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if !s.stopping {
		s.stopping, s.draining = true, true
		close(s.stopped)
		s.readyStopOnce.Do(func() { close(s.readyStop) })
		if cerr := s.lis.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close %s listener: %w", s.name, cerr)
		}
	}
	return append([]*generation(nil), s.all...), err
}

// chanListener is a net.Listener fed by the bound listener's accept loop.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

// deliver hands c to Accept; false if the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case <-l.closed:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
