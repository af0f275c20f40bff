// Command kubeskel is an HTTP service that starts, serves and stops the way
// Kubernetes and load balancers need: see the README for the lifecycle.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubeskel/kubeskel/internal/config"
	"github.com/kubeskel/kubeskel/internal/lifecycle"
)

func main() {
	// The first SIGTERM or SIGINT starts the graceful shutdown (stop); a
	// second one exits at once (abort), for an operator pressing Ctrl-C
	// twice. A kubelet sends SIGTERM only once: at the end of the grace
	// period it sends SIGKILL, which cannot be caught.
	stop, cancelStop := context.WithCancelCause(context.Background())
	abort, cancelAbort := context.WithCancelCause(context.Background())
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		cancelStop(fmt.Errorf("received %s", <-signals))
		cancelAbort(secondSignal{<-signals})
	}()

	err := run(stop, abort, os.Args[1:], os.Stdout, os.Stderr)
	var second secondSignal
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.As(err, &second) {
		fmt.Fprintf(os.Stderr, "kubeskel: %v\n", err)
	}
	os.Exit(exitCode(err))
}

// secondSignal is the cause of the abort context and the error run returns
// when it ends the process at once: exit code 4. It is logged by the
// service's own logger, in the configured format.
type secondSignal struct{ sig os.Signal }

func (e secondSignal) Error() string {
	return "second signal (" + e.sig.String() + "): exiting at once"
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
	case errors.As(err, new(secondSignal)):
		return lifecycle.ExitSecondSignal
	case errors.As(err, &cfgErr), errors.As(err, &usageErr):
		return lifecycle.ExitConfig
	}
	return lifecycle.ExitCode(err)
}

// run is the whole program; it returns instead of exiting so that it can be
// tested and so that deferred cleanups run. stop is done on the first
// signal, abort on the second (its cause a secondSignal).
func run(stop, abort context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return runCommand(stop, args, stdout, stderr)
	}
	cfg, err := config.Load()
	if err != nil {
		return fmt.Errorf("configuration error (see kubeskel -h):\n%w", err)
	}
	return serve(stop, abort, cfg, stdout)
}
