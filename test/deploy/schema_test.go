package deploy

import (
	"strings"
	"testing"
)

// TestSchemaAccepts checks that values.schema.json accepts the defaults and
// every case of the rendering matrix (a too-strict schema breaks installs).
func TestSchemaAccepts(t *testing.T) {
	c := loadChart(t)
	for _, tc := range valueMatrix {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := renderChart(c, parseValues(t, tc.values), renderOptions{}); err != nil {
				t.Errorf("valid values rejected: %v", err)
			}
		})
	}
}

// TestSchemaRejects checks that values.schema.json turns wrong values away
// before anything renders, with Helm's own validation (as `helm install`).
func TestSchemaRejects(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		name, values, wantPath string
	}{
		{"negative duration", `lifecycle: {shutdownTimeout: "-5s"}`, "lifecycle.shutdownTimeout"},
		{"duration in words", `lifecycle: {preStopDelay: "five seconds"}`, "lifecycle.preStopDelay"},
		{"duration without unit", `lifecycle: {telemetryFlushTimeout: "2"}`, "lifecycle.telemetryFlushTimeout"},
		{"duration as number", `lifecycle: {safetyMargin: 3}`, "lifecycle.safetyMargin"},
		{"unsupported unit", `sidecar: {quitTimeout: "1d"}`, "sidecar.quitTimeout"},
		{"duration with spaces", `http: {idleTimeout: "620 s"}`, "http.idleTimeout"},
		{"replicas as string", `replicaCount: "two"`, "replicaCount"},
		{"negative replicas", `replicaCount: -1`, "replicaCount"},
		{"port out of range", `ports: {http: 70000}`, "ports.http"},
		{"port as string", `ports: {admin: "8081"}`, "ports.admin"},
		{"bool as string", `hostNetwork: "yes"`, "hostNetwork"},
		{"unknown log level", `log: {level: verbose}`, "log.level"},
		{"unknown pull policy", `image: {pullPolicy: Sometimes}`, "image.pullPolicy"},
		{"unknown mesh", `sidecar: {preset: consul}`, "sidecar.preset"},
		{"misspelled top-level key", `replicas: 3`, "replicas"},
		{"misspelled nested key", `lifecycle: {shutdownTimout: 20s}`, "shutdownTimout"},
		{"bad digest", `image: {digest: "latest"}`, "image.digest"},
		{"sidecar without image", `nativeSidecars: [{name: otel}]`, "nativeSidecars"},
		{"quit URL without scheme", `sidecar: {quitURL: "127.0.0.1:15020/quitquitquit"}`, "sidecar.quitURL"},
		{"check TCP without port", `checks: {tcp: [db]}`, "checks.tcp"},
		{"percentage without sign", `podDisruptionBudget: {maxUnavailable: "50"}`, "podDisruptionBudget.maxUnavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(c, parseValues(t, tc.values), renderOptions{})
			if err == nil {
				t.Fatalf("values accepted, want a schema error:\n%s", tc.values)
			}
			msg := err.Error()
			if !strings.Contains(msg, "values don't meet the specifications of the schema") {
				t.Errorf("error is not a schema error: %v", err)
			}
			// Helm reports the failing location as a JSON pointer (/a/b).
			ptr := "/" + strings.ReplaceAll(tc.wantPath, ".", "/")
			if !strings.Contains(msg, ptr) && !strings.Contains(msg, tc.wantPath) {
				t.Errorf("schema error does not name %s (%s): %v", tc.wantPath, ptr, err)
			}
		})
	}
}
