package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/kubeskel/kubeskel/internal/admin"
	"github.com/kubeskel/kubeskel/internal/app"
	"github.com/kubeskel/kubeskel/internal/buildinfo"
	"github.com/kubeskel/kubeskel/internal/certs"
	"github.com/kubeskel/kubeskel/internal/config"
	"github.com/kubeskel/kubeskel/internal/grpcapp"
	"github.com/kubeskel/kubeskel/internal/grpcserver"
	"github.com/kubeskel/kubeskel/internal/health"
	"github.com/kubeskel/kubeskel/internal/lifecycle"
	"github.com/kubeskel/kubeskel/internal/logging"
	"github.com/kubeskel/kubeskel/internal/memlimit"
	"github.com/kubeskel/kubeskel/internal/metrics"
	"github.com/kubeskel/kubeskel/internal/server"
	"github.com/kubeskel/kubeskel/internal/sidecar"
	"github.com/kubeskel/kubeskel/internal/telemetry"
)

// serve wires the packages together and hands them to the lifecycle
// controller. stop is done on the first SIGTERM or SIGINT; once abort is
// done (a second signal) serve logs it and returns its cause at once,
// without waiting for the drain.
func serve(stop, abort context.Context, cfg config.Config, stdout io.Writer) error {
	logger, err := logging.New(stdout, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return usageError{err}
	}
	// Memory: the soft limit below the cgroup's leaves room for what the
	// heap does not count; an explicit GOMEMLIMIT wins.
	mem, err := memlimit.Apply(memlimit.Options{Ratio: cfg.MemoryLimitRatio, Fallback: memlimit.ProcSelf})
	memAttrs := []any{"gomemlimit", mem.GoMemLimit, "memory_limit", mem.MemoryLimit, "ratio", mem.Ratio,
		"source", string(mem.Source), "GOMAXPROCS", runtime.GOMAXPROCS(0)}
	if err != nil {
		logger.Warn("memory limit", append(memAttrs, "error", err.Error())...)
	} else {
		logger.Info("memory limit", memAttrs...)
	}
	reg := metrics.New()
	lc := lifecycle.New(logger.With("version", buildinfo.Version), reg.SetPhase)
	for _, name := range config.Unknown(os.Environ()) {
		logger.Warn("ignoring unknown variable; is it a typo? (kubeskel -h lists the known ones)", "variable", name)
	}

	tel, err := telemetry.Setup(context.Background(), telemetry.Options{
		ServiceName: "kubeskel", ServiceVersion: buildinfo.Version, Logger: logger,
	})
	if err != nil {
		return usageError{err}
	}
	// Run flushes telemetry after the drain; if start-up fails before Run,
	// shut the provider down here so it is never left running.
	running := false
	defer func() {
		if !running {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.TelemetryFlushTimeout)
			defer cancel()
			_ = tel.Shutdown(ctx) // nothing was traced yet: there is nothing to lose
		}
	}()

	// Readiness: started and not draining, and every dependency check.
	probes := health.New(reg.Registerer())
	probes.AddReadiness("lifecycle", lc.Ready)
	checks, stopChecks := context.WithCancel(context.Background())
	defer stopChecks()
	for _, addr := range cfg.CheckTCP {
		probes.AddAsyncReadiness(checks, "tcp:"+addr, health.TCPCheck(addr, cfg.CheckTimeout), cfg.CheckInterval)
	}
	for _, u := range cfg.CheckHTTP {
		probes.AddAsyncReadiness(checks, health.CheckName(u), health.HTTPCheck(u, cfg.CheckTimeout), cfg.CheckInterval)
	}

	host, _ := os.Hostname()
	if pod := os.Getenv("POD_NAME"); pod != "" {
		host = pod
	}
	obs := &server.Observability{
		StartSpan:  tel.StartServerSpan,
		Route:      func(route, method string) server.RouteObserver { return reg.Route(route, method) },
		Panic:      reg.Panic,
		Logger:     logger,
		RequestLog: cfg.RequestLog,
	}
	mux := server.NewMux(*obs)
	app.AddRoutes(mux, app.Deps{Version: buildinfo.Version, Host: host, SlowMax: cfg.SlowMax, Logger: logger})

	// Bind both listeners now: a port in use must fail start-up at once,
	// before anything reports ready.
	opts := server.Options{
		ReadHeaderTimeout: cfg.ReadHeaderTimeout, ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout,
		IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: cfg.MaxHeaderBytes, Logger: logger,
	}
	trafficOpts := opts
	trafficOpts.Traffic = obs
	trafficOpts.H2C = cfg.HTTP2 == "h2c" // the admin port stays HTTP/1.1: probes and scrapers speak it
	trafficOpts.KeepConnectionsWhileDraining = !cfg.DrainConnectionClose
	if cfg.TLS() {
		// Load the certificate now, so that a bad pair fails start-up; the
		// reloader keeps it current until serve returns, and the server
		// sees only a tls.Config. The admin port stays plain HTTP: the
		// kubelet's probes and Prometheus scrapes expect it.
		watch, stopWatch := context.WithCancel(context.Background())
		defer stopWatch()
		trafficOpts.TLS, err = startTLS(watch, cfg, logger, reg)
		if err != nil {
			return err
		}
	}
	traffic, err := server.Listen("http", cfg.HTTPAddr, mux, trafficOpts)
	if err != nil {
		return err
	}
	adminSrv, err := server.Listen("admin", cfg.AdminAddr, admin.Routes(probes.Handler(), reg.Handler(), cfg.Pprof), opts)
	if err != nil {
		return errors.Join(err, traffic.Close())
	}
	reg.GaugeFunc("http_server_requests_in_flight", "Requests being served on the traffic port.",
		func() float64 { return float64(traffic.InFlight()) })
	logger.Info("listening", "server", "http", "addr", traffic.Addr().String(), "tls", cfg.TLS())
	logger.Info("listening", "server", "admin", "addr", adminSrv.Addr().String())
	servers := []lifecycle.Traffic{{Name: "http", Server: traffic}}

	// gRPC, if configured: one more traffic server under the same lifecycle.
	if cfg.GRPCAddr != "" {
		grpcSrv, err := listenGRPC(cfg, tel, reg, probes, logger, host)
		if err != nil {
			return errors.Join(err, traffic.Close(), adminSrv.Close())
		}
		logger.Info("listening", "server", "grpc", "addr", grpcSrv.Addr().String())
		servers = append(servers, lifecycle.Traffic{Name: "grpc", Server: grpcSrv})
	}

	plan := lifecycle.Plan{
		Traffic: servers, Admin: adminSrv,
		Flush:            tel.Shutdown,
		PrestopDelay:     cfg.PrestopDelay,
		QuietPeriod:      cfg.PrestopQuietPeriod,
		ShutdownTimeout:  cfg.ShutdownTimeout,
		CancelMargin:     cfg.HandlerCancelMargin,
		FlushTimeout:     cfg.TelemetryFlushTimeout,
		QuitTimeout:      cfg.SidecarQuitTimeout,
		AdminStopTimeout: config.AdminStopTimeout,
		Drained:          reg.Drained,
	}
	if cfg.SidecarReadyURL != "" {
		plan.WaitReady = func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.SidecarReadyTimeout)
			defer cancel()
			logger.Info("waiting for sidecar", "timeout", cfg.SidecarReadyTimeout.String())
			if err := sidecar.WaitReady(ctx, cfg.SidecarReadyURL, 250*time.Millisecond); err != nil {
				return fmt.Errorf("%s: %w", config.Variable("SidecarReadyURL"), err)
			}
			return nil
		}
	}
	if cfg.SidecarQuitURL != "" {
		plan.Quit = func(ctx context.Context) error { return sidecar.Quit(ctx, cfg.SidecarQuitURL) }
	}
	running = true
	done := make(chan error, 1)
	go func() { done <- lc.Run(stop, plan) }()
	select {
	case err := <-done:
		return err
	case <-abort.Done():
		err := context.Cause(abort)
		var second secondSignal
		if errors.As(err, &second) {
			logger.Error("second signal: exiting at once", "signal", second.sig.String(), "exit_code", lifecycle.ExitSecondSignal)
		}
		return err
	}
}

// startTLS loads the TLS files, exports the certificate's metrics and keeps
// reloading the files until ctx is done. A set that does not load is a
// configuration error naming its variables (exit 2).
func startTLS(ctx context.Context, cfg config.Config, logger *slog.Logger, reg *metrics.Registry) (*tls.Config, error) {
	rec := reg.TLS()
	o := tlsOptions(cfg)
	o.Logger, o.Loaded, o.Reloaded = logger, rec.Loaded, rec.Reloaded
	r, err := certs.New(o)
	if err != nil {
		return nil, tlsError(err)
	}
	logger.Info("TLS certificate loaded", "not_after", r.NotAfter().UTC().Format(time.RFC3339),
		"client_ca", cfg.TLSClientCAFile != "", "reload_interval", cfg.TLSReloadInterval.String())
	go func() {
		if err := r.Run(ctx); err != nil {
			logger.Error("TLS files are not watched: certificates will not be reloaded", "error", err.Error())
		}
	}()
	return r.TLSConfig(), nil
}

// tlsOptions are the reloader's options from the configuration.
func tlsOptions(cfg config.Config) certs.Options {
	return certs.Options{
		CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile, ClientCAFile: cfg.TLSClientCAFile,
		Interval: cfg.TLSReloadInterval,
	}
}

// tlsError is the configuration error of TLS files that do not load,
// naming their variables.
func tlsError(err error) error {
	variable := config.Variable("TLSCertFile") + ", " + config.Variable("TLSKeyFile")
	if errors.Is(err, certs.ErrClientCA) {
		variable = config.Variable("TLSClientCAFile")
	}
	return &config.Error{Variable: variable, Problem: err.Error()}
}

// listenGRPC binds the gRPC server with the example service, fed by the same
// readiness as /ready and observed like the HTTP port.
func listenGRPC(cfg config.Config, tel *telemetry.Telemetry, reg *metrics.Registry, probes *health.Probes, logger *slog.Logger, host string) (*grpcserver.Server, error) {
	s, err := grpcserver.Listen("grpc", cfg.GRPCAddr, grpcserver.Options{
		Register:                     grpcapp.Registrar(grpcapp.Deps{Version: buildinfo.Version, Host: host, MaxInterval: cfg.SlowMax, MaxCount: 10000}),
		Ready:                        probes.Ready,
		Reflection:                   cfg.GRPCReflection,
		KeepaliveMinTime:             cfg.GRPCKeepaliveMinTime,
		KeepalivePermitWithoutStream: cfg.GRPCKeepalivePermitWithoutStream,
		MaxConnectionAge:             cfg.GRPCMaxConnectionAge,
		MaxConnectionAgeGrace:        cfg.GRPCMaxConnectionAgeGrace,
		StreamWorkers:                cfg.GRPCStreamWorkers,
		Obs: grpcserver.Observability{
			StartSpan: tel.StartRPCSpan, Observe: reg.RPC, Panic: reg.RPCPanic,
			Logger: logger, RequestLog: cfg.RequestLog,
		},
	})
	if err != nil {
		return nil, err
	}
	reg.GaugeFunc("grpc_server_rpcs_in_flight", "RPCs being served on the gRPC port.",
		func() float64 { return float64(s.InFlight()) })
	return s, nil
}
