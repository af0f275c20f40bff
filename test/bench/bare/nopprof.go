//go:build !benchpprof

package main

import "errors"

// servePprof fails: this build has no net/http/pprof (build with -tags
// benchpprof).
func servePprof(string) (func(), error) {
	return nil, errors.New("BARE_PPROF_ADDR: this build has no net/http/pprof; build with -tags benchpprof")
}
