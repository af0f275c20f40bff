package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestGRPC: grpc.enabled (default true) sets APP_GRPC_ADDR, names the
// container port "grpc" and adds it to the traffic Service as
// kubernetes.io/h2c; the control, false, sets none of them.
func TestGRPC(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         bool
	}{
		{"default", "", true},
		{"control off", "grpc: {enabled: false}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values)
			c := r.appContainer(t)
			var addr string
			for _, e := range c.Env {
				if e.Name == "APP_GRPC_ADDR" {
					addr = e.Value
				}
			}
			if got, want := addr != "", tc.want; got != want {
				t.Errorf("APP_GRPC_ADDR = %q, want set = %v", addr, want)
			}
			if tc.want && addr != ":9090" {
				t.Errorf("APP_GRPC_ADDR = %q, want :9090", addr)
			}
			var containerPort bool
			for _, p := range c.Ports {
				containerPort = containerPort || (p.Name == "grpc" && p.ContainerPort == 9090)
			}
			if containerPort != tc.want {
				t.Errorf("container port grpc 9090 present = %v, want %v", containerPort, tc.want)
			}
			var svcPort *corev1.ServicePort
			for i, p := range trafficService(t, r).Spec.Ports {
				if p.Name == "grpc" {
					svcPort = &trafficService(t, r).Spec.Ports[i]
				}
			}
			if (svcPort != nil) != tc.want {
				t.Fatalf("Service port grpc present = %v, want %v", svcPort != nil, tc.want)
			}
			if svcPort != nil {
				if svcPort.AppProtocol == nil || *svcPort.AppProtocol != "kubernetes.io/h2c" {
					t.Errorf("grpc Service port appProtocol = %q, want kubernetes.io/h2c", ptrString(svcPort.AppProtocol))
				}
				if svcPort.TargetPort.String() != "grpc" {
					t.Errorf("grpc Service port targetPort = %s, want grpc", svcPort.TargetPort.String())
				}
			}
		})
	}
}

// TestGRPCReadinessProbe: probes.readiness.grpc makes the readiness probe
// the kubelet's native gRPC probe on the gRPC port, service ""; liveness and
// startup stay httpGet on the admin port. Without grpc.enabled it is refused.
func TestGRPCReadinessProbe(t *testing.T) {
	r := mustRender(t, "probes: {readiness: {grpc: true}}")
	c := r.appContainer(t)
	p := c.ReadinessProbe
	if p == nil || p.GRPC == nil {
		t.Fatalf("readinessProbe = %+v, want a grpc probe", p)
	}
	if p.HTTPGet != nil {
		t.Errorf("readinessProbe has httpGet too: %+v", p.HTTPGet)
	}
	if p.GRPC.Port != 9090 || p.GRPC.Service == nil || *p.GRPC.Service != "" {
		t.Errorf("grpc probe = port %d service %v, want 9090 and \"\"", p.GRPC.Port, p.GRPC.Service)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		t.Errorf("livenessProbe = %+v, want httpGet on admin", c.LivenessProbe)
	}
	// The default (the control) stays httpGet /ready.
	if d := mustRender(t, "").appContainer(t).ReadinessProbe; d == nil || d.HTTPGet == nil || d.GRPC != nil {
		t.Errorf("default readinessProbe = %+v, want httpGet", d)
	}
	_, err := renderChart(loadChart(t), parseValues(t, "probes: {readiness: {grpc: true}}\ngrpc: {enabled: false}"), renderOptions{})
	if err == nil || !strings.Contains(err.Error(), "grpc.enabled") {
		t.Errorf("render with grpc probe but grpc off = %v, want an error naming grpc.enabled", err)
	}
}

func ptrString(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
