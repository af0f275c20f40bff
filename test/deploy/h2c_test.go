package deploy

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// trafficService returns the traffic Service of a rendering.
func trafficService(t *testing.T, r *rendering) *corev1.Service {
	t.Helper()
	for _, o := range r.objectsOfKind("Service") {
		if svc := o.Obj.(*corev1.Service); !strings.HasSuffix(svc.Name, "-metrics") {
			return svc
		}
	}
	t.Fatal("no traffic Service rendered")
	return nil
}

// TestH2C: http.h2c (default true) passes APP_HTTP2 to the binary and tells
// the cluster, through the traffic port's appProtocol, that the pod speaks
// cleartext HTTP/2 (Gateway API implementations and meshes then connect with
// h2c prior knowledge). The control, false, keeps HTTP/1.1's appProtocol.
func TestH2C(t *testing.T) {
	for _, tc := range []struct {
		name, values          string
		wantEnv, wantProtocol string
	}{
		{"default", "", "h2c", "kubernetes.io/h2c"},
		{"on", "http: {h2c: true}", "h2c", "kubernetes.io/h2c"},
		{"control off", "http: {h2c: false}", "off", "http"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values) // every manifest decoded strictly into k8s.io/api
			if got := mustEnv(t, r.appContainer(t), "APP_HTTP2"); got != tc.wantEnv {
				t.Errorf("APP_HTTP2 = %q, want %q", got, tc.wantEnv)
			}
			svc := trafficService(t, r)
			if got, want := svc.Spec.Ports[0].Name, "http"; got != want {
				t.Fatalf("traffic Service's first port is %q, want %q", got, want)
			}
			port := svc.Spec.Ports[0]
			if port.AppProtocol == nil {
				t.Fatalf("traffic port has no appProtocol, want %q", tc.wantProtocol)
			}
			if got := *port.AppProtocol; got != tc.wantProtocol {
				t.Errorf("traffic port appProtocol = %q, want %q", got, tc.wantProtocol)
			}
			// The admin port (metrics Service) stays HTTP/1.1 whatever h2c says.
			mr := mustRender(t, tc.values+"\nmetrics: {service: {enabled: true}}")
			for _, o := range mr.objectsOfKind("Service") {
				if svc := o.Obj.(*corev1.Service); strings.HasSuffix(svc.Name, "-metrics") {
					if ap := svc.Spec.Ports[0].AppProtocol; ap == nil || *ap != "http" {
						t.Errorf("metrics Service appProtocol = %v, want http", ap)
					}
				}
			}
		})
	}
}

// TestH2CValueChecked: the schema takes a boolean only, so "off" (a string
// through --set) is refused rather than read as true.
func TestH2CValueChecked(t *testing.T) {
	_, err := renderChart(loadChart(t), parseValues(t, `http: {h2c: "off"}`), renderOptions{})
	if err == nil || !strings.Contains(err.Error(), "h2c") {
		t.Errorf("render error = %v, want a schema error naming h2c", err)
	}
}
