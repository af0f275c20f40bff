//go:build bench

package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kubeskel/kubeskel/internal/grpcapp"
	echov1 "github.com/kubeskel/kubeskel/internal/grpcapp/echo/v1"
	"github.com/kubeskel/kubeskel/internal/grpcserver"
	"github.com/kubeskel/kubeskel/internal/metrics"
	"github.com/kubeskel/kubeskel/internal/telemetry"
)

// BenchmarkGRPCUnary measures unary Echo.Say calls over loopback from a
// grpc-go client (16 callers per GOMAXPROCS on one connection) against: a bare
// grpc-go server with the same service, and kubeskel's grpcserver with its
// interceptors, metrics and health service, tracing off and on (always-on
// sampler, OTLP/HTTP to a local sink that discards). Client and server share
// the process and the CPUs, so compare ns/op between sub-benchmarks of one
// run only:
//
//	go test -tags bench -run '^$' -bench GRPCUnary -count 5 ./test/bench
func BenchmarkGRPCUnary(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer sink.Close()
	deps := grpcapp.Deps{Host: "bench", MaxInterval: time.Second, MaxCount: 10}

	b.Run("bare-grpc-go", func(b *testing.B) {
		lis, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		s := grpc.NewServer()
		grpcapp.Register(s, deps)
		go func() { _ = s.Serve(lis) }() // returns at Stop
		defer s.Stop()
		callLoop(b, lis.Addr().String())
	})
	for _, bc := range []struct {
		name string
		env  map[string]string
	}{
		{"kubeskel-tracing-off", map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
		{"kubeskel-tracing-on", map[string]string{
			"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
			"OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL, "OTEL_TRACES_SAMPLER": "always_on",
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for k, v := range bc.env {
				b.Setenv(k, v)
			}
			tel, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "bench", Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = tel.Shutdown(context.Background()) }() // the sink discards; nothing to check
			reg := metrics.New()
			s, err := grpcserver.Listen("grpc", "127.0.0.1:0", grpcserver.Options{
				Register: grpcapp.Registrar(deps),
				Obs: grpcserver.Observability{StartSpan: tel.StartRPCSpan, Observe: reg.RPC, Panic: reg.RPCPanic,
					Logger: slog.New(slog.DiscardHandler)},
			})
			if err != nil {
				b.Fatal(err)
			}
			go func() { _ = s.Serve() }() // returns nil at Close
			defer s.Close()
			callLoop(b, s.Addr().String())
		})
	}
}

func callLoop(b *testing.B, addr string) {
	b.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	echo := echov1.NewEchoClient(cc)
	if _, err := echo.Say(context.Background(), &echov1.SayRequest{Message: "warm"}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16) // 16 callers per GOMAXPROCS: 32 on 2 CPUs
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := &echov1.SayRequest{Message: "hello"}
		for pb.Next() {
			if _, err := echo.Say(context.Background(), req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
