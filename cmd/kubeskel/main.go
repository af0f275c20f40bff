// Command kubeskel is an HTTP service that starts, serves and stops the way
// Kubernetes and load balancers need: see the README for the lifecycle.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubeskel/kubeskel/internal/config"
	"github.com/kubeskel/kubeskel/internal/lifecycle"
)

func main() {
	// The first SIGTERM or SIGINT starts the graceful shutdown; a second one
	// exits at once (an operator pressing Ctrl-C twice, or a kubelet that
	// has given up waiting).
	ctx, stop := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		stop(fmt.Errorf("received %s", <-signals))
		sig := <-signals
		slog.New(slog.NewJSONHandler(os.Stdout, nil)).Error("second signal: exiting at once",
			"signal", sig.String(), "exit_code", lifecycle.ExitSecondSignal)
		os.Exit(lifecycle.ExitSecondSignal)
	}()

	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "kubeskel: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// usageError is a bad command line or configuration outside APP_* (an
// OTEL_* variable, say): exit code 2 like a config.Error.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var cfgErr *config.Error
	var usageErr usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &cfgErr), errors.As(err, &usageErr):
		return lifecycle.ExitConfig
	}
	return lifecycle.ExitCode(err)
}

// run is the whole program; it returns instead of exiting so that it can be
// tested and so that deferred cleanups run.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return runCommand(ctx, args, stdout, stderr)
	}
	cfg, err := config.Load()
	if err != nil {
		return fmt.Errorf("configuration error (see kubeskel -h):\n%w", err)
	}
	return serve(ctx, cfg, stdout)
}
