package grpcserver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kubeskel/kubeskel/internal/logging"
)

// Observability is what every RPC reports. Nil fields are skipped.
type Observability struct {
	// StartSpan extracts the caller's trace context through get (a
	// metadata lookup) and starts a server span for fullMethod
	// ("/pkg.Service/Method"); end is called with the status code exactly
	// once, when the RPC is done.
	StartSpan func(ctx context.Context, fullMethod string, get func(key string) string) (context.Context, func(code uint32, msg string))
	// Observe records one finished RPC with its code name ("OK").
	Observe func(fullMethod, code string, d time.Duration)
	// Panic counts a recovered handler panic.
	Panic func()
	// Logger logs panics and, if RequestLog is set, one line per RPC; the
	// context passed carries the span, for trace_id and span_id.
	Logger     *slog.Logger
	RequestLog bool
}

func (o *Observability) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o.Logger
}

// mdGetter looks keys up in the incoming metadata (lower-case keys, as
// propagators ask), one key at a time: metadata.FromIncomingContext would
// copy the whole map on every RPC, traced or not.
func mdGetter(ctx context.Context) func(string) string {
	return func(key string) string {
		if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// begin counts the RPC, ties its context to the server's handler
// cancellation, and starts its span. The returned finish must be called
// with the handler's error (after recovery).
func (s *Server) begin(ctx context.Context, fullMethod string) (context.Context, func(err error) error) {
	// Health checks (the kubelet's probe) are not requests a load balancer
	// routes: they must not hold the quiet period open.
	if !strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") {
		s.arrivals.Add(1)
	}
	s.inFlight.Add(1)
	start := s.clock.Now()
	ctx, cancel := context.WithCancel(ctx)
	unlink := context.AfterFunc(s.handlers, cancel)
	o := &s.opts.Obs
	end := func(uint32, string) {}
	if o.StartSpan != nil {
		ctx, end = o.StartSpan(ctx, fullMethod, mdGetter(ctx))
	}
	return ctx, func(err error) error {
		st, _ := status.FromError(err)
		code := st.Code()
		d := s.clock.Now() - start
		end(uint32(code), st.Message())
		if o.Observe != nil {
			o.Observe(fullMethod, code.String(), d)
		}
		if o.RequestLog && o.Logger != nil {
			logging.LogAttrsAt(ctx, o.Logger, time.Now(), slog.LevelInfo, "rpc",
				slog.String("method", fullMethod), slog.String("code", code.String()),
				slog.Float64("duration_ms", float64(d.Microseconds())/1000))
		}
		unlink()
		cancel()
		s.inFlight.Add(-1)
		return err
	}
}

// recovered turns a handler panic into codes.Internal, logged and counted,
// with the process alive.
func (s *Server) recovered(ctx context.Context, fullMethod string, err *error) {
	p := recover()
	if p == nil {
		return
	}
	o := &s.opts.Obs
	if o.Panic != nil {
		o.Panic()
	}
	o.logger().LogAttrs(ctx, slog.LevelError, "handler panic", slog.String("method", fullMethod),
		slog.String("panic", fmt.Sprint(p)), slog.String("stack", string(debug.Stack())))
	*err = status.Error(codes.Internal, "internal error")
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	ctx, finish := s.begin(ctx, info.FullMethod)
	defer func() { err = finish(err) }()
	defer s.recovered(ctx, info.FullMethod, &err)
	return handler(ctx, req)
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	ctx, finish := s.begin(ss.Context(), info.FullMethod)
	defer func() { err = finish(err) }()
	defer s.recovered(ctx, info.FullMethod, &err)
	return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
}

// serverStream gives a stream handler the context begin made.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
