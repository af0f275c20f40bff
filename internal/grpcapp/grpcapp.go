// Package grpcapp is the example gRPC service (kubeskel.echo.v1.Echo), the
// counterpart of package app for the gRPC port. Copy it to start your own.
package grpcapp

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
)

// Deps is what the service needs.
type Deps struct {
	Version, Host string
	// MaxInterval caps Count's interval_ms; MaxCount caps its count.
	MaxInterval time.Duration
	MaxCount    uint32
}

// Register adds the Echo service to s.
func Register(s grpc.ServiceRegistrar, d Deps) {
	echov1.RegisterEchoServer(s, &echo{d: d})
}

// Registrar returns Register bound to d, as grpcserver.Options.Register
// takes it.
func Registrar(d Deps) func(grpc.ServiceRegistrar) {
	return func(s grpc.ServiceRegistrar) { Register(s, d) }
}

type echo struct {
	echov1.UnimplementedEchoServer
	d Deps
}

func (e *echo) Say(_ context.Context, r *echov1.SayRequest) (*echov1.SayResponse, error) {
	if r.GetMessage() == "panic" {
		panic("grpcapp: asked to panic") // shows panic recovery into codes.Internal
	}
	return &echov1.SayResponse{Message: r.GetMessage(), Host: e.d.Host, Version: e.d.Version}, nil
}

// Count sends count messages, one every interval. When the stream's context
// ends (the client went away, or the server cancels handlers before its
// shutdown deadline) it returns nil: the client sees a stream that ended
// cleanly, with fewer messages than asked.
func (e *echo) Count(r *echov1.CountRequest, stream grpc.ServerStreamingServer[echov1.CountResponse]) error {
	interval := time.Duration(r.GetIntervalMs()) * time.Millisecond
	if interval > e.d.MaxInterval {
		return status.Errorf(codes.InvalidArgument, "interval_ms %d above the maximum %s", r.GetIntervalMs(), e.d.MaxInterval)
	}
	if r.GetCount() > e.d.MaxCount {
		return status.Errorf(codes.InvalidArgument, "count %d above the maximum %d", r.GetCount(), e.d.MaxCount)
	}
	ctx := stream.Context()
	var tick <-chan time.Time // interval 0: as fast as the client reads
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for n := uint32(1); n <= r.GetCount(); n++ {
		if err := stream.Send(&echov1.CountResponse{N: n, Host: e.d.Host}); err != nil {
			return err
		}
		if n == r.GetCount() {
			break
		}
		if tick == nil {
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
	return nil
}
