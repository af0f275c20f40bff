package deploy

import (
	"strings"
	"testing"
)

// TestMemoryLimitRatio: the chart no longer sets GOMEMLIMIT to the whole
// memory limit (the downward API's limits.memory leaves no room for memory
// the heap does not count); it passes the ratio and the binary sets the soft
// limit from the cgroup at start-up.
func TestMemoryLimitRatio(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		{"default", "", "0.9"},
		{"custom", "memoryLimitRatio: 0.75", "0.75"},
		{"whole limit", "memoryLimitRatio: 1", "1"},
		{"no memory limit", "resources: {limits: null}", "0.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustRender(t, tc.values).appContainer(t)
			if v, ok := env(c, "GOMEMLIMIT"); ok {
				t.Errorf("GOMEMLIMIT is set (%q); the binary derives it from the cgroup", v)
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
					t.Errorf("%s comes from resourceFieldRef %s", e.Name, e.ValueFrom.ResourceFieldRef.Resource)
				}
			}
			if got, want := mustEnv(t, c, "APP_MEMORY_LIMIT_RATIO"), tc.want; got != want {
				t.Errorf("APP_MEMORY_LIMIT_RATIO = %q, want %q", got, want)
			}
		})
	}
}

// TestMemoryLimitRatioSchema: the schema refuses a ratio the binary would
// refuse at start-up, before anything is installed.
func TestMemoryLimitRatioSchema(t *testing.T) {
	c := loadChart(t)
	for _, values := range []string{"memoryLimitRatio: 0", "memoryLimitRatio: 1.5", "memoryLimitRatio: -0.5", `memoryLimitRatio: "0.9"`} {
		t.Run(values, func(t *testing.T) {
			_, err := renderChart(c, parseValues(t, values), renderOptions{})
			if err == nil || !strings.Contains(err.Error(), "/memoryLimitRatio") {
				t.Errorf("render error = %v, want a schema error at /memoryLimitRatio", err)
			}
		})
	}
}
