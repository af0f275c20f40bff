// Package e2e proves under load that kubeskel drops no request during rolling
// restarts behind a real load balancer (HAProxy), over HTTP/1.1 keep-alive
// and over HTTP/2 (h2c on both sides of HAProxy, multiplexed connections),
// and that SSE clients connected through the restarts see each stream on an
// old instance end cleanly with its final event (TestStreamKillControl shows
// a killed instance's streams end with errors instead).
//
// The tests carry the build tag e2e so that `go test ./...` stays fast and
// does not need haproxy:
//
//	apt-get install haproxy
//	go test -tags e2e -v -count=1 -timeout 20m ./test/e2e          # full run
//	E2E_SHORT=1 go test -tags e2e -v -count=1 ./test/e2e           # CI variant
//
// Knobs (environment): KUBESKEL_BIN=/path/to/kubeskel skips the build of
// ./cmd/kubeskel; E2E_REQUESTS (per model, default 60000, short 30000),
// E2E_CONTROL_REQUESTS (8000), E2E_RATE (1000 req/s), E2E_LAG (1s);
// E2E_DEBUG=1 prints wrong echo bodies and the worst latency of each second.
// The gRPC model (grpc_test.go): E2E_GRPC_REQUESTS (default 16000),
// E2E_GRPC_CONTROL_REQUESTS (6000), E2E_GRPC_RATE (400 calls/s).
package e2e
