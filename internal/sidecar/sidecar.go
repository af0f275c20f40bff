// Package sidecar coordinates with a sidecar container, typically a service
// mesh proxy: wait for it before taking traffic, and tell it to exit after
// the drain.
package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// WaitReady polls rawURL with GET every interval until it answers 200. It
// returns nil then, or an error when ctx ends first. The error never
// contains the URL, which may carry credentials.
func WaitReady(ctx context.Context, rawURL string, interval time.Duration) error {
	client := &http.Client{Timeout: max(interval, time.Second)}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last := "no answer yet"
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
		if err != nil {
			return fmt.Errorf("sidecar readiness request: invalid URL")
		}
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close() // only the status matters
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "last status " + resp.Status
		} else if ctx.Err() == nil {
			// An attempt cut short by our own deadline says nothing about
			// the sidecar: keep the previous answer.
			last = "last attempt failed to connect"
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sidecar not ready (%s): %w", last, ctx.Err())
		case <-tick.C:
		}
	}
}

// Quit POSTs to rawURL (for example Istio's /quitquitquit or Linkerd's
// /shutdown) and returns an error unless it answers 2xx before ctx ends.
func Quit(ctx context.Context, rawURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, nil)
	if err != nil {
		return fmt.Errorf("sidecar quit request: invalid URL")
	}
	// No redirects: following one would turn the POST into a GET.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("sidecar quit request: %w", ctx.Err())
		}
		return errors.New("sidecar quit request failed: could not connect") // the URL may hold credentials
	}
	_ = resp.Body.Close() // only the status matters
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("sidecar quit request: status %s", resp.Status)
	}
	return nil
}
