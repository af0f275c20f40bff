//go:build benchpprof

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/kubeskel/kubeskel/internal/admin"
)

// servePprof serves net/http/pprof on addr until stop is called.
func servePprof(addr string) (stop func(), err error) {
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: admin.Routes(http.NotFoundHandler(), http.NotFoundHandler(), true), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }() // returns at Close
	return func() { _ = srv.Close() }, nil
}
