// Package buildinfo reports the version the binary was built as.
package buildinfo

// Version is stamped at build time with
// -ldflags "-X github.com/kubeskel/kubeskel/internal/buildinfo.Version=v1.2.3".
// It is "dev" for a plain go build or go run.
var Version = "dev"
