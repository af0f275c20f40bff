//go:build kube

// Command pause is the e2e-kube cluster's pod sandbox image: it holds the
// pod's namespaces open and does nothing until SIGTERM or SIGINT, then exits
// 0. It stands in for registry.k8s.io/pause, which cannot be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
