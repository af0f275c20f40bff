package sidecar_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/sidecar"
)

const secret = "s3cr3t-t0ken"

// withSecrets adds credentials, a path and a query holding secret to base.
func withSecrets(base, path string) string {
	return strings.Replace(base, "http://", "http://admin:"+secret+"@", 1) + path + "?token=" + secret
}

// closedURL returns the URL of a server that no longer listens.
func closedURL() string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func checkNoSecret(t *testing.T, err error) {
	t.Helper()
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "admin") {
		t.Errorf("error %q contains the URL", err)
	}
}

func TestWaitReadyAfterSomeFailures(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			t.Errorf("method = %s, want GET", r.Method)
		}
		if calls.Add(1) <= 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sidecar.WaitReady(ctx, srv.URL+"/healthz/ready", time.Millisecond); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if got, want := calls.Load(), int32(4); got != want {
		t.Errorf("sidecar polled %d times, want %d (three 503s, then 200)", got, want)
	}
}

func TestWaitReadyOnlyAccepts200(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusNoContent) // 2xx, but not 200
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sidecar.WaitReady(ctx, srv.URL, time.Millisecond); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if got, want := calls.Load(), int32(2); got != want {
		t.Errorf("sidecar polled %d times, want %d", got, want)
	}
}

func TestWaitReadyTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	tests := []struct {
		name, url, wantInErr string
	}{
		// The deadline may end a poll in flight, so the reason varies.
		{"never ready", withSecrets(srv.URL, "/ready/"+secret), ""},
		{"not listening", withSecrets(closedURL(), "/ready"), "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			err := sidecar.WaitReady(ctx, tt.url, 5*time.Millisecond)
			if err == nil {
				t.Fatal("WaitReady: nil error, want a timeout")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %q does not wrap context.DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			checkNoSecret(t, err)
		})
	}
}

// When the deadline ends a poll in flight, the error must still report what
// the sidecar last answered, not claim it could not connect.
func TestWaitReadyTimeoutKeepsLastStatus(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		<-r.Context().Done() // later polls hang until the caller gives up
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := sidecar.WaitReady(ctx, srv.URL, time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady() = %v, want context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("error %q does not report the last status, 503", err)
	}
}

func TestWaitReadyInvalidURL(t *testing.T) {
	err := sidecar.WaitReady(context.Background(), "http://admin:"+secret+"@[::1/x", time.Millisecond)
	if err == nil {
		t.Fatal("WaitReady with an invalid URL: nil error")
	}
	checkNoSecret(t, err)
}

func TestQuit(t *testing.T) {
	type request struct{ method, path string }
	tests := []struct {
		name    string
		status  int
		wantErr bool
	}{
		{"200", http.StatusOK, false},
		{"204", http.StatusNoContent, false},
		{"404", http.StatusNotFound, true},
		{"500", http.StatusInternalServerError, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan request, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- request{r.Method, r.URL.Path}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			err := sidecar.Quit(ctx, withSecrets(srv.URL, "/quitquitquit"))
			if r := <-got; r != (request{http.MethodPost, "/quitquitquit"}) {
				t.Errorf("sidecar got %s %s, want POST /quitquitquit", r.method, r.path)
			}
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("Quit() error = %v, want error: %t", err, tt.wantErr)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tt.name) {
					t.Errorf("error %q does not give the status %s", err, tt.name)
				}
				checkNoSecret(t, err)
			}
		})
	}
}

func TestQuitTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := sidecar.Quit(ctx, withSecrets(srv.URL, "/quit"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Quit() = %v, want context.DeadlineExceeded", err)
	}
	checkNoSecret(t, err)
}

func TestQuitUnreachable(t *testing.T) {
	err := sidecar.Quit(context.Background(), withSecrets(closedURL(), "/quit"))
	if err == nil {
		t.Fatal("Quit() to a closed port: nil error")
	}
	checkNoSecret(t, err)
	// The context has not ended, so the error must explain the failure
	// rather than format a nil cause.
	if strings.Contains(err.Error(), "%!") {
		t.Errorf("error %q is badly formatted (nil cause)", err)
	}
}

func TestQuitInvalidURL(t *testing.T) {
	err := sidecar.Quit(context.Background(), "http://admin:"+secret+"@[::1/x")
	if err == nil {
		t.Fatal("Quit with an invalid URL: nil error")
	}
	checkNoSecret(t, err)
}
