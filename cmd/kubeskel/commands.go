package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kubeskel/kubeskel/internal/buildinfo"
	"github.com/kubeskel/kubeskel/internal/certs"
	"github.com/kubeskel/kubeskel/internal/config"
	"github.com/kubeskel/kubeskel/internal/probe"
)

// runCommand handles the command-line forms other than plain "kubeskel":
// help, version, check-config and probe.
func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "-h", "-help", "--help", "help":
		// Compose the help in memory, where writes cannot fail, and write
		// it once, so a failed write to stdout is reported.
		var help strings.Builder
		fmt.Fprintf(&help, `kubeskel %s: an HTTP service skeleton that drains cleanly on Kubernetes.

Usage:
  kubeskel                 run the service, configured by the variables below
  kubeskel probe [-timeout 2s] [-insecure] URL
                           exit 0 if GET URL answers 200, 1 otherwise
  kubeskel check-config    validate the variables below and print the shutdown
                           budget arithmetic; exit 0 if valid, 2 otherwise
  kubeskel version         print the version
  kubeskel -h | --help     print this help

Environment variables (durations in Go syntax: 1500ms, 5s, 1m30s):

`, buildinfo.Version)
		if err := config.Usage(&help); err != nil {
			return fmt.Errorf("print usage: %w", err)
		}
		help.WriteString(`
The standard OpenTelemetry variables are honoured: OTEL_TRACES_EXPORTER (otlp,
console or none; none when unset), OTEL_EXPORTER_OTLP_*, OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_PROPAGATORS, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*.

Exit codes: 0 clean drain; 1 start-up, bind or serve failure; 2 configuration
error; 3 the shutdown cut requests; 4 second signal.
`)
		if _, err := io.WriteString(stdout, help.String()); err != nil {
			return fmt.Errorf("print usage: %w", err)
		}
		return flag.ErrHelp
	case "version", "-version", "--version":
		_, err := fmt.Fprintln(stdout, buildinfo.Version)
		return err
	case "check-config":
		if len(args) > 1 {
			return usageError{fmt.Errorf("check-config takes no arguments (got %q)", args[1:])}
		}
		cfg, err := config.Load()
		if err != nil {
			return fmt.Errorf("configuration error (see kubeskel -h):\n%w", err)
		}
		if cfg.TLS() {
			// The files as the service would load them at start-up.
			if _, err := certs.New(tlsOptions(cfg)); err != nil {
				return fmt.Errorf("configuration error (see kubeskel -h):\n%w", tlsError(err))
			}
		}
		_, err = fmt.Fprintf(stdout, "configuration valid; shutdown budget: %s\n", cfg.BudgetArithmetic())
		return err
	case "probe":
		err := probe.Run(ctx, args[1:], stderr)
		if errors.Is(err, probe.ErrUsage) {
			return usageError{err}
		}
		return err
	}
	return usageError{fmt.Errorf("unknown command %q (try kubeskel -h)", args[0])}
}
