package memlimit

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

// restoreMemoryLimit puts the runtime's soft limit back after the test.
func restoreMemoryLimit(t *testing.T) {
	t.Helper()
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
}

// cgroupTree writes files (path relative to the root: content) into a fresh
// directory and returns it.
func cgroupTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const mi128 = 128 << 20

func TestApply(t *testing.T) {
	const preset = 77 << 20 // a soft limit already in effect, so "unchanged" is observable
	noEnv := func(string) string { return "" }
	tests := []struct {
		name       string
		files      map[string]string
		ratio      float64
		getenv     func(string) string
		fallback   func() (uint64, error)
		wantSoft   int64
		wantLimit  uint64
		wantSource Source
	}{
		{"v2 limit", map[string]string{"memory.max": "134217728\n"}, 0.9, noEnv, nil, 120795955, mi128, SourceCgroup},
		{"v2 limit ratio 1", map[string]string{"memory.max": "134217728\n"}, 1, noEnv, nil, mi128, mi128, SourceCgroup},
		{"v2 max", map[string]string{"memory.max": "max\n"}, 0.9, noEnv, nil, preset, 0, SourceNone},
		{"v1 limit", map[string]string{"memory/memory.limit_in_bytes": "268435456\n"}, 0.5, noEnv, nil, 128 << 20, 256 << 20, SourceCgroup},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0.9, noEnv, nil, preset, 0, SourceNone},
		{"v2 preferred over v1", map[string]string{"memory.max": "134217728", "memory/memory.limit_in_bytes": "268435456"}, 0.9, noEnv, nil, 120795955, mi128, SourceCgroup},
		{"missing files", map[string]string{"cpu.max": "max 100000"}, 0.9, noEnv, nil, preset, 0, SourceNone},
		{"missing files, fallback limit", nil, 0.9, noEnv, automemlimit.Limit(mi128), 120795955, mi128, SourceCgroup},
		{"missing files, fallback no cgroup", nil, 0.9, noEnv, func() (uint64, error) { return 0, automemlimit.ErrNoCgroup }, preset, 0, SourceNone},
		{"GOMEMLIMIT set", map[string]string{"memory.max": "134217728"}, 0.9,
			func(k string) string {
				if k == "GOMEMLIMIT" {
					return "50MiB"
				}
				return ""
			}, nil, preset, mi128, SourceEnv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreMemoryLimit(t)
			debug.SetMemoryLimit(preset)
			res, err := Apply(Options{Ratio: tt.ratio, Root: cgroupTree(t, tt.files), Fallback: tt.fallback, Getenv: tt.getenv})
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got, want := res.GoMemLimit, tt.wantSoft; got != want {
				t.Errorf("Result.GoMemLimit = %d, want %d", got, want)
			}
			if got, want := debug.SetMemoryLimit(-1), tt.wantSoft; got != want {
				t.Errorf("runtime soft limit = %d, want %d", got, want)
			}
			if got, want := res.MemoryLimit, tt.wantLimit; got != want {
				t.Errorf("Result.MemoryLimit = %d, want %d", got, want)
			}
			if got, want := res.Source, tt.wantSource; got != want {
				t.Errorf("Result.Source = %q, want %q", got, want)
			}
			if got, want := res.Ratio, tt.ratio; got != want {
				t.Errorf("Result.Ratio = %v, want %v", got, want)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		ratio    float64
		fallback func() (uint64, error)
		want     string
	}{
		{"ratio zero", map[string]string{"memory.max": "134217728"}, 0, nil, "ratio 0 is not in (0, 1]"},
		{"ratio above one", map[string]string{"memory.max": "134217728"}, 1.5, nil, "ratio 1.5 is not in (0, 1]"},
		{"ratio NaN", map[string]string{"memory.max": "134217728"}, math.NaN(), nil, "ratio NaN is not in (0, 1]"},
		{"garbage memory.max", map[string]string{"memory.max": "lots"}, 0.9, nil, `"lots" is not a number of bytes or max`},
		{"fallback fails", nil, 0.9, func() (uint64, error) { return 0, errors.New("boom") }, "from /proc/self: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restoreMemoryLimit(t)
			before := debug.SetMemoryLimit(-1)
			res, err := Apply(Options{Ratio: tt.ratio, Root: cgroupTree(t, tt.files), Fallback: tt.fallback,
				Getenv: func(string) string { return "" }})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Apply error = %v, want it to contain %q", err, tt.want)
			}
			if got := debug.SetMemoryLimit(-1); got != before {
				t.Errorf("runtime soft limit changed to %d on error, want %d", got, before)
			}
			if got, want := res.Source, SourceNone; got != want {
				t.Errorf("Result.Source = %q, want %q", got, want)
			}
		})
	}
}

// TestApplyUnreadable: a memory.max that exists but cannot be read is an
// error, not "no limit".
func TestApplyUnreadable(t *testing.T) {
	restoreMemoryLimit(t)
	root := cgroupTree(t, nil)
	if err := os.Mkdir(filepath.Join(root, "memory.max"), 0o755); err != nil { // a directory: read fails
		t.Fatal(err)
	}
	if _, err := Apply(Options{Ratio: 0.9, Root: root, Getenv: func(string) string { return "" }}); err == nil {
		t.Fatal("Apply with an unreadable memory.max returned no error")
	}
}
