package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestMemoryLimitFromEnv: an explicit GOMEMLIMIT wins over the cgroup, and
// start-up says so in one line with the limit the runtime parsed from it.
func TestMemoryLimitFromEnv(t *testing.T) {
	p := start(t, "GOMEMLIMIT=50MiB", "APP_MEMORY_LIMIT_RATIO=0.5", "GOMAXPROCS=1")
	rec := p.waitLog(5*time.Second, "memory limit", "", "")
	for key, want := range map[string]string{
		"source":     "env",
		"gomemlimit": fmt.Sprint(50 << 20),
		"ratio":      "0.5",
		"GOMAXPROCS": "1",
	} {
		got := fmt.Sprint(rec[key])
		if f, ok := rec[key].(float64); ok {
			got = fmt.Sprintf("%.10g", f) // JSON numbers decode as float64
		}
		if got != want {
			t.Errorf("memory limit record %s = %q, want %q (record %v)", key, got, want, rec)
		}
	}
	if _, ok := rec["memory_limit"]; !ok {
		t.Errorf("memory limit record has no memory_limit: %v", rec)
	}
	if n := len(p.logs.all(func(r map[string]any) bool { return r["msg"] == "memory limit" })); n != 1 {
		t.Errorf("%d memory limit records, want exactly 1", n)
	}
}

// TestMemoryLimitRatioInvalid: a ratio outside (0, 1] fails start-up with an
// error naming the variable.
func TestMemoryLimitRatioInvalid(t *testing.T) {
	for _, value := range []string{"0", "1.5", "-0.1", "NaN", "most"} {
		t.Run(value, func(t *testing.T) {
			p := launch(t, baseEnv("APP_MEMORY_LIMIT_RATIO="+value))
			if got, want := p.wait(10*time.Second), 2; got != want {
				t.Errorf("exit code = %d, want %d", got, want)
			}
			if stderr := p.stderrString(); !strings.Contains(stderr, "APP_MEMORY_LIMIT_RATIO") {
				t.Errorf("stderr does not name APP_MEMORY_LIMIT_RATIO:\n%s", stderr)
			}
		})
	}
}
