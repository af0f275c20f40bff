// Package memlimit sets the Go runtime's soft memory limit (GOMEMLIMIT) to a
// fraction of the container's cgroup memory limit, leaving the rest for
// memory the Go heap does not count (goroutine stacks, runtime metadata,
// cgo, the page cache of files the process writes).
//
// automemlimit's FromCgroup finds the process's cgroup through
// /proc/self/mountinfo and /proc/self/cgroup and cannot be pointed at another
// root, and its Set also reads an AUTOMEMLIMIT variable we do not want as a
// second, hidden knob. So this package reads the limit itself from a cgroup
// directory (memory.max for cgroup v2, memory/memory.limit_in_bytes for v1),
// which inside a container is the container's own cgroup, and uses
// automemlimit (the memlimit subpackage, never its init-time blank import)
// only for the ratio arithmetic and, as a fallback when that directory has
// neither file (a process outside a container, in a nested cgroup), for its
// /proc/self walk.
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	automemlimit "github.com/KimMachineGun/automemlimit/memlimit"
)

// DefaultRoot is where a container sees its own cgroup.
const DefaultRoot = "/sys/fs/cgroup"

// unlimited is the smallest limit treated as no limit. cgroup v1 reports an
// unlimited group as the largest page count in bytes (9223372036854771712);
// no real container has 4 EiB.
const unlimited = uint64(1) << 62

// Source says where the soft limit in effect came from.
type Source string

// The sources of the soft limit.
const (
	SourceCgroup Source = "cgroup" // set by Apply from the cgroup limit
	SourceEnv    Source = "env"    // GOMEMLIMIT was set; Apply left it alone
	SourceNone   Source = "none"   // no limit found; Apply left the runtime's default (no limit)
)

// Options configures Apply. The zero value is not valid: Ratio is required.
type Options struct {
	// Ratio is the fraction of the cgroup limit to use as the soft limit,
	// in (0, 1].
	Ratio float64
	// Root is the cgroup directory to read; "" means DefaultRoot.
	Root string
	// Fallback reads the limit when Root has neither memory.max nor
	// memory/memory.limit_in_bytes. It returns
	// automemlimit.ErrNoLimit when there is no limit. nil means none.
	Fallback func() (uint64, error)
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
}

// ProcSelf is a Fallback that finds the process's own cgroup through
// /proc/self (automemlimit's FromCgroup), for processes outside a container.
func ProcSelf() (uint64, error) { return automemlimit.FromCgroup() }

// Result is what Apply did.
type Result struct {
	// GoMemLimit is the soft limit in effect after Apply, in bytes;
	// math.MaxInt64 means no limit.
	GoMemLimit int64
	// MemoryLimit is the cgroup's memory limit in bytes; 0 means none was
	// found (or, with SourceEnv, it could not be read).
	MemoryLimit uint64
	Ratio       float64
	Source      Source
}

// Apply sets the runtime's soft memory limit (debug.SetMemoryLimit) to
// floor(Ratio × the cgroup memory limit). If GOMEMLIMIT is set it changes
// nothing and reports SourceEnv: an explicit setting wins. If there is no
// limit ("max", absurdly large, or no cgroup files) it changes nothing and
// reports SourceNone. On error it changes nothing and the Result still
// describes the limit in effect.
func Apply(opts Options) (Result, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	res := Result{GoMemLimit: debug.SetMemoryLimit(-1), Ratio: opts.Ratio, Source: SourceNone}
	if !(opts.Ratio > 0 && opts.Ratio <= 1) { // also false for NaN
		return res, fmt.Errorf("memory limit ratio %v is not in (0, 1]", opts.Ratio)
	}
	limit, err := read(root, opts.Fallback)
	if getenv("GOMEMLIMIT") != "" {
		res.Source = SourceEnv
		if err == nil {
			res.MemoryLimit = limit
		}
		return res, nil
	}
	if errors.Is(err, automemlimit.ErrNoLimit) {
		return res, nil
	}
	if err != nil {
		return res, err
	}
	soft, err := automemlimit.ApplyRatio(automemlimit.Limit(limit), opts.Ratio)()
	if err != nil {
		return res, fmt.Errorf("apply memory limit ratio: %w", err)
	}
	// soft <= limit < unlimited (1<<62), so it fits an int64.
	res.GoMemLimit, res.MemoryLimit, res.Source = int64(soft), limit, SourceCgroup //nolint:gosec // G115: bounded above
	debug.SetMemoryLimit(res.GoMemLimit)
	return res, nil
}

// read returns the memory limit of the cgroup at root, or
// automemlimit.ErrNoLimit.
func read(root string, fallback func() (uint64, error)) (uint64, error) {
	for _, name := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		path := filepath.Join(root, name)
		b, err := os.ReadFile(path) //nolint:gosec // G304: reading the configured cgroup directory is the point
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read cgroup memory limit: %w", err)
		}
		return parse(path, strings.TrimSpace(string(b)))
	}
	if fallback == nil {
		return 0, automemlimit.ErrNoLimit
	}
	limit, err := fallback()
	if err != nil {
		if errors.Is(err, automemlimit.ErrNoLimit) || errors.Is(err, automemlimit.ErrNoCgroup) ||
			errors.Is(err, automemlimit.ErrCgroupsNotSupported) {
			return 0, automemlimit.ErrNoLimit
		}
		return 0, fmt.Errorf("read cgroup memory limit from /proc/self: %w", err)
	}
	if limit == 0 || limit >= unlimited {
		return 0, automemlimit.ErrNoLimit
	}
	return limit, nil
}

// parse reads one limit file's content: bytes, or "max" for none. Zero and
// absurdly large values also mean none: a soft limit of zero would make the
// collector run without pause.
func parse(path, s string) (uint64, error) {
	if s == "max" {
		return 0, automemlimit.ErrNoLimit
	}
	limit, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %q is not a number of bytes or max", path, s)
	}
	if limit == 0 || limit >= unlimited {
		return 0, automemlimit.ErrNoLimit
	}
	return limit, nil
}
