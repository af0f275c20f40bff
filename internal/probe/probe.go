// Package probe implements "kubeskel probe URL": an HTTP check for images
// without curl (Docker HEALTHCHECK, exec probes, helm test).
package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// ErrUsage wraps errors in the command line itself (exit code 2).
var ErrUsage = errors.New("usage")

// Run parses args (flags then one URL), GETs the URL and returns nil if it
// answers 200 within the timeout. It returns flag.ErrHelp when help was
// asked for, and an error wrapping ErrUsage for a bad command line.
func Run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	insecure := fs.Bool("insecure", false, "with https, accept any server certificate (checks reachability, not identity)")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(stderr, "usage: kubeskel probe [-timeout 2s] [-insecure] URL\n\nExits 0 if a GET of URL answers 200, 1 otherwise.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: probe: %w", ErrUsage, err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("%w: probe: want exactly one URL, got %d arguments", ErrUsage, fs.NArg())
	}
	if u, err := url.Parse(fs.Arg(0)); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: probe: %q is not an http(s) URL", ErrUsage, fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fs.Arg(0), nil)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	client := http.DefaultClient
	if *insecure {
		// helm test against a pod that serves a certificate from an issuer
		// the test pod does not know: it checks the route, not the identity.
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // G402: asked for by -insecure, documented
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr}
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("probe %s: %w", fs.Arg(0), err)
	}
	defer func() { _ = resp.Body.Close() }() // only the status matters
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("probe %s: status %s", fs.Arg(0), resp.Status)
	}
	return nil
}
