package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/kubeskel/kubeskel/internal/lifecycle"
	"github.com/kubeskel/kubeskel/internal/server"
)

// A service binds its listeners first, then hands them to Run, which serves
// until the stop context is cancelled (by the first SIGTERM in main) and
// then drains in order.
func ExampleController_Run() {
	opts := server.Options{ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 1 << 20}
	trafficOpts := opts
	trafficOpts.Traffic = &server.Observability{}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") })
	traffic, err := server.Listen("http", "127.0.0.1:0", hello, trafficOpts)
	if err != nil {
		fmt.Println(err) // a port in use fails here, before anything is ready
		return
	}
	admin, err := server.Listen("admin", "127.0.0.1:0", http.NotFoundHandler(), opts)
	if err != nil {
		fmt.Println(err)
		return
	}

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := lifecycle.New(logger, func(prev, next string, _ time.Duration) { fmt.Println(next) })
	stop, signal := context.WithCancelCause(context.Background())
	go func() {
		// Stands in for the kubelet's SIGTERM once the service is ready.
		for c.Ready() != nil {
			time.Sleep(time.Millisecond)
		}
		signal(errors.New("received terminated"))
	}()
	err = c.Run(stop, lifecycle.Plan{
		Traffic: []lifecycle.Traffic{{Name: "http", Server: traffic}}, Admin: admin,
		PrestopDelay:    50 * time.Millisecond, // seconds in production: see the README
		ShutdownTimeout: time.Second,
		CancelMargin:    100 * time.Millisecond,
		FlushTimeout:    time.Second,
		Flush:           func(context.Context) error { fmt.Println("  flush telemetry"); return nil },
	})
	fmt.Println("exit code", lifecycle.ExitCode(err))
	// Output:
	// starting
	// ready
	// draining
	// shutting_down
	// flushing
	//   flush telemetry
	// stopped
	// exit code 0
}
