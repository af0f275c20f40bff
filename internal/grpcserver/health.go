package grpcserver

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthService is grpc-go's health service with one change: a Watch
// stream ends once the graceful stop of the generation serving it begins.
//
// Why: health.Server.Shutdown sends NOT_SERVING but leaves Watch streams
// open, and a client with client-side health checking keeps one open on
// every connection; GracefulStop waits for every RPC, so each drain would
// last until the shutdown deadline. The health protocol lets the server end
// a Watch: a client retries any end but UNIMPLEMENTED, and here the retry
// goes to a new connection (the old one got GOAWAY) or finds the port
// closed. The stream ends with Unavailable, not OK: a Watch never completes,
// and Unavailable is the code for "this server is going away, try again".
//
// Why a wrapper: the status map, its de-duplication and fan-out stay
// grpc-go's; only the stream's lifetime is ours. The inner Watch runs with a
// context also cancelled at the stop; since its select may pick that over a
// NOT_SERVING still queued, the wrapper sends the final status itself when
// the client has not seen it, so watchers always see NOT_SERVING first.
type healthService struct {
	*health.Server
	// stopping is done when the generation's graceful stop begins, after
	// health.Server.Shutdown has set every status NOT_SERVING for good.
	stopping context.Context
}

// Watch is health.Server.Watch, ended as healthService describes.
func (h *healthService) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(h.stopping, cancel)()
	ws := &watchStream{Health_WatchServer: stream, ctx: ctx, last: -1}
	err := h.Server.Watch(in, ws)
	if h.stopping.Err() == nil || stream.Context().Err() != nil || ws.sendErr != nil {
		return err // the client went away, or handlers were cancelled: not the stop
	}
	// Shutdown has run, so Check gives the final status (NotFound: an
	// unknown service, whose watcher saw SERVICE_UNKNOWN, which stays).
	if r, cerr := h.Check(ctx, in); cerr == nil && r.GetStatus() != ws.last {
		if err := stream.Send(r); err != nil {
			return status.Error(codes.Canceled, "stream has ended")
		}
	}
	return status.Error(codes.Unavailable, "server is shutting down: watch again on a new connection")
}

// watchStream is the stream the inner Watch sees: its context ends at the
// stop too, and it remembers the last status sent. Send and the read of last
// happen on the handler's goroutine.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx     context.Context
	last    healthpb.HealthCheckResponse_ServingStatus
	sendErr error
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	if err := w.Health_WatchServer.Send(r); err != nil {
		w.sendErr = err
		return err
	}
	w.last = r.GetStatus()
	return nil
}
