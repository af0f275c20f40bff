//go:build kube

package kube

import (
	"context"
	"encoding/json"
	"testing"
)

// grpcReadinessProbe is the step where the kubelet's native gRPC probe
// (grpc.health.v1 on the gRPC port, service "") drives readiness: with
// probes.readiness.grpc the pod can only become Ready through that probe,
// and on deletion it must leave the endpoints and exit 0 like with the HTTP
// probe (check's usual findings). It restores the default values at the end.
func (s *suite) grpcReadinessProbe(ctx context.Context, t *testing.T) {
	s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values, "--set", "probes.readiness.grpc=true")
	s.rollout(ctx, t)
	pod := s.readyPod(ctx, t)
	out := s.mustKubectl(ctx, t, "-n", s.ns, "get", "pod", pod.name, "-o",
		`jsonpath={.spec.containers[?(@.name=="`+containerName+`")].readinessProbe}`)
	var probe struct {
		GRPC *struct {
			Port    int     `json:"port"`
			Service *string `json:"service"`
		} `json:"grpc"`
		HTTPGet any `json:"httpGet"`
	}
	if err := json.Unmarshal([]byte(out), &probe); err != nil {
		t.Fatalf("readinessProbe of pod %s: %v: %q", pod.name, err, out)
	}
	if probe.GRPC == nil || probe.HTTPGet != nil {
		t.Fatalf("readinessProbe of pod %s = %s, want a grpc probe only", pod.name, out)
	}
	t.Logf("pod %s became Ready through the kubelet's gRPC probe %s", pod.name, out)
	for _, p := range s.terminateAndCheck(ctx, t, "kubectl delete pod (native gRPC readiness probe)", s.deletePod(ctx)) {
		t.Error(p)
	}
	s.mustHelm(ctx, t, "upgrade", release, s.chart, "-n", s.ns, "-f", s.values)
	s.rollout(ctx, t)
}
