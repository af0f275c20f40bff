// Command bare is the baseline for `make bench`: a plain net/http server
// serving kubeskel's own application handlers (internal/app, mounted on a
// server.Mux without observability, which is a thin http.ServeMux wrapper),
// with none of the skeleton around them: no traffic middleware, metrics,
// tracing, admin server or lifecycle. It still shuts down gracefully on
// SIGTERM so its shutdown time is a fair baseline.
//
// BARE_SETTINGS=1 gives the http.Server the settings of kubeskel's traffic
// server at its defaults (timeouts, header limit, h2c), and the grpc.Server
// those of kubeskel's gRPC server (keepalive enforcement, connection age,
// stream workers); without it both have their libraries' zero settings (no
// timeouts).
//
// BARE_H2C=1 also serves cleartext HTTP/2 with prior knowledge, the way
// kubeskel does with APP_HTTP2=h2c (http.Server.Protocols), for the h2load
// comparison. BARE_GRPC_ADDR also serves the example gRPC service
// (internal/grpcapp) on a plain grpc.Server, bound before the HTTP port, for
// the grpc comparison. BARE_PPROF_ADDR serves net/http/pprof there, as
// kubeskel's admin port does with APP_PPROF=true, for the pprof section; only
// in a build with -tags benchpprof, so that the baseline's binary, start-up
// and memory do not include net/http/pprof.
//
//	BARE_ADDR=127.0.0.1:8080 [BARE_SETTINGS=1] [BARE_H2C=1] [BARE_GRPC_ADDR=127.0.0.1:9090] [BARE_PPROF_ADDR=127.0.0.1:6060] bare
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/kubeskel/kubeskel/internal/app"
	"github.com/kubeskel/kubeskel/internal/config"
	"github.com/kubeskel/kubeskel/internal/grpcapp"
	"github.com/kubeskel/kubeskel/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	addr := os.Getenv("BARE_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	host, _ := os.Hostname()
	mux := server.NewMux(server.Observability{})
	app.AddRoutes(mux, app.Deps{Version: "bench", Host: host, SlowMax: 30 * time.Second})

	// With BARE_SETTINGS=1, the settings of kubeskel's servers at their
	// defaults (config.Load with no APP_* variable set: the bench sets none
	// for bare): what those settings cost is then reported apart from what
	// the skeleton costs.
	var cfg *config.Config
	switch settings := os.Getenv("BARE_SETTINGS"); settings {
	case "", "0":
	case "1":
		c, err := config.Load()
		if err != nil {
			return fmt.Errorf("kubeskel defaults: %w", err)
		}
		cfg = &c
	default:
		return fmt.Errorf("BARE_SETTINGS must be 1 or 0, not %q", settings)
	}

	if gaddr := os.Getenv("BARE_GRPC_ADDR"); gaddr != "" {
		gln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", gaddr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", gaddr, err)
		}
		var opts []grpc.ServerOption
		if cfg != nil { // the options grpcserver.Listen derives from them; it is not linked here to keep the baseline small
			opts = append(opts,
				grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
					MinTime: cfg.GRPCKeepaliveMinTime, PermitWithoutStream: cfg.GRPCKeepalivePermitWithoutStream,
				}),
				grpc.KeepaliveParams(keepalive.ServerParameters{
					MaxConnectionAge: cfg.GRPCMaxConnectionAge, MaxConnectionAgeGrace: cfg.GRPCMaxConnectionAgeGrace,
				}))
			if cfg.GRPCStreamWorkers > 0 && cfg.GRPCStreamWorkers <= config.MaxGRPCStreamWorkers {
				opts = append(opts, grpc.NumStreamWorkers(uint32(cfg.GRPCStreamWorkers)))
			}
		}
		gs := grpc.NewServer(opts...)
		grpcapp.Register(gs, grpcapp.Deps{Version: "bench", Host: host, MaxInterval: 30 * time.Second, MaxCount: 10000})
		go func() { _ = gs.Serve(gln) }() // returns at Stop
		defer gs.Stop()
	}
	if paddr := os.Getenv("BARE_PPROF_ADDR"); paddr != "" {
		stop, err := servePprof(paddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	ln, err := new(net.ListenConfig).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// Plain: net/http's zero settings, no timeouts (what a hello-world
	// service runs).
	srv := &http.Server{Handler: mux}
	h2c := os.Getenv("BARE_H2C")
	if cfg != nil {
		srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout = cfg.ReadHeaderTimeout, cfg.ReadTimeout, cfg.WriteTimeout
		srv.IdleTimeout, srv.MaxHeaderBytes = cfg.IdleTimeout, cfg.MaxHeaderBytes
		if h2c == "" && cfg.HTTP2 == "h2c" { // as APP_HTTP2=h2c does
			h2c = "1"
		}
	}
	switch h2c {
	case "", "0":
	case "1":
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = &p
	default:
		return fmt.Errorf("BARE_H2C must be 1 or 0, not %q", h2c)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
