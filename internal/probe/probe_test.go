package probe_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kubeskel/kubeskel/internal/probe"
)

func TestRun(t *testing.T) {
	release := make(chan struct{})
	var gotMethod atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			gotMethod.Store(r.Method)
		case "/ready":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/created":
			w.WriteHeader(http.StatusCreated)
		case "/redirect":
			http.Redirect(w, r, "/ready", http.StatusFound)
		case "/hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	defer close(release)

	tests := []struct {
		name      string
		args      []string
		wantErr   bool
		wantInErr string
		wantIs    error // nil: the error must not wrap probe.ErrUsage
	}{
		{name: "200", args: []string{srv.URL + "/ok"}},
		{name: "200 with timeout flag", args: []string{"-timeout", "5s", srv.URL + "/ok"}},
		{name: "503", args: []string{srv.URL + "/ready"}, wantErr: true, wantInErr: "503"},
		{name: "201 is not 200", args: []string{srv.URL + "/created"}, wantErr: true, wantInErr: "201"},
		{name: "redirect followed to 503", args: []string{srv.URL + "/redirect"}, wantErr: true, wantInErr: "503"},
		{name: "timeout honoured", args: []string{"-timeout", "50ms", srv.URL + "/hang"}, wantErr: true, wantIs: context.DeadlineExceeded},
		{name: "no URL", args: nil, wantErr: true, wantInErr: "one URL", wantIs: probe.ErrUsage},
		{name: "two URLs", args: []string{srv.URL, srv.URL}, wantErr: true, wantInErr: "got 2", wantIs: probe.ErrUsage},
		{name: "not http", args: []string{"ftp://example.com/x"}, wantErr: true, wantInErr: "not an http(s) URL", wantIs: probe.ErrUsage},
		{name: "no host", args: []string{"http:///ready"}, wantErr: true, wantInErr: "not an http(s) URL", wantIs: probe.ErrUsage},
		{name: "unparsable", args: []string{"http://[::1/x"}, wantErr: true, wantInErr: "not an http(s) URL", wantIs: probe.ErrUsage},
		{name: "bad timeout", args: []string{"-timeout", "soon", srv.URL}, wantErr: true, wantInErr: "timeout", wantIs: probe.ErrUsage},
		{name: "unknown flag", args: []string{"-retries", "3", srv.URL}, wantErr: true, wantInErr: "retries", wantIs: probe.ErrUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := probe.Run(context.Background(), tt.args, &stderr)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Run(%q) = %v, want error: %t", tt.args, err, tt.wantErr)
			}
			if err == nil {
				return
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Errorf("Run(%q) error wraps flag.ErrHelp; only -h should", tt.args)
			}
			if tt.wantInErr != "" && !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tt.wantIs)
			}
			if !errors.Is(tt.wantIs, probe.ErrUsage) && errors.Is(err, probe.ErrUsage) {
				t.Errorf("error %q wraps probe.ErrUsage, but the command line was fine", err)
			}
		})
	}
	if got := gotMethod.Load(); got != http.MethodGet {
		t.Errorf("probe used method %v, want GET", got)
	}
}

func TestRunHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var stderr bytes.Buffer
			err := probe.Run(context.Background(), []string{arg}, &stderr)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Run(%s) = %v, want flag.ErrHelp", arg, err)
			}
			if errors.Is(err, probe.ErrUsage) {
				t.Errorf("Run(%s) = %v wraps ErrUsage; help is not a usage error", arg, err)
			}
			for _, want := range []string{"usage: kubeskel probe", "-timeout"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("usage %q does not contain %q", stderr.String(), want)
				}
			}
		})
	}
}

func TestRunHonoursParentContext(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := probe.Run(ctx, []string{"-timeout", "1h", srv.URL}, &bytes.Buffer{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context = %v, want context.Canceled", err)
	}
}

// TestRunInsecure: an https URL whose certificate the probe does not trust
// fails, unless -insecure.
func TestRunInsecure(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	var stderr bytes.Buffer
	if err := probe.Run(context.Background(), []string{srv.URL}, &stderr); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Run(%s) = %v, want a certificate error", srv.URL, err)
	}
	if err := probe.Run(context.Background(), []string{"-insecure", srv.URL}, &stderr); err != nil {
		t.Errorf("Run(-insecure %s) = %v, want nil", srv.URL, err)
	}
}
