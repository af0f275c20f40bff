// Package deploy tests the deployment artifacts of kubeskel: the Helm chart
// in charts/kubeskel, the plain manifests in k8s/ and the Dockerfile. It is a
// separate module so that the Helm SDK and k8s.io/api never enter the
// service's own go.mod.
package deploy
