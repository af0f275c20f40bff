package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// repoRoot is the kubeskel repository, two levels above this module.
var repoRoot = filepath.Join("..", "..")

// chartDir is the chart under test.
var chartDir = filepath.Join(repoRoot, "charts", "kubeskel")

// kubeVersion is the Kubernetes version the chart is rendered for, the same
// as the pinned kube-apiserver of the e2e suite (hack/tools.sh).
const kubeVersion = "v1.37.2"

// object is one rendered manifest: its kind and name, its YAML and the typed
// value it decoded into.
type object struct {
	Kind string
	Name string
	YAML []byte
	Obj  any
}

// rendering is the result of rendering the chart with one set of values.
type rendering struct {
	Objects    []object // manifests and hooks, in rendering order
	Hooks      []object // the subset that are Helm hooks (the test pod)
	Manifest   string   // what `helm template --skip-tests` would print
	Notes      string
	Values     map[string]any // the user-supplied values
	Deployment *appsv1.Deployment
}

// loadChart loads charts/kubeskel from disk.
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return c
}

// parseValues turns a YAML values document into the map Helm expects.
func parseValues(t testing.TB, valuesYAML string) map[string]any {
	t.Helper()
	vals, err := chartutil.ReadValues([]byte(valuesYAML))
	if err != nil {
		t.Fatalf("parse values: %v\n%s", err, valuesYAML)
	}
	return vals.AsMap()
}

// renderOptions adjusts an installation before it renders.
type renderOptions struct {
	KubeVersion          string
	SkipSchemaValidation bool
}

// renderChart renders the chart as `helm install --dry-run` on the client
// would (schema validation included) and returns the error, if any.
func renderChart(c *chart.Chart, vals map[string]any, opts renderOptions) (*rendering, error) {
	kv := opts.KubeVersion
	if kv == "" {
		kv = kubeVersion
	}
	parsed, err := chartutil.ParseKubeVersion(kv)
	if err != nil {
		return nil, err
	}
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	install := action.NewInstall(cfg)
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = "kubeskel"
	install.Namespace = "default"
	install.KubeVersion = parsed
	install.SkipSchemaValidation = opts.SkipSchemaValidation
	rel, err := install.Run(c, vals)
	if err != nil {
		return nil, err
	}
	r := &rendering{Manifest: rel.Manifest, Notes: rel.Info.Notes, Values: vals}
	objs, err := decodeManifests([]byte(rel.Manifest))
	if err != nil {
		return nil, err
	}
	r.Objects = objs
	for _, h := range rel.Hooks {
		hooks, err := decodeManifests([]byte(h.Manifest))
		if err != nil {
			return nil, fmt.Errorf("hook %s: %w", h.Path, err)
		}
		r.Hooks = append(r.Hooks, hooks...)
		r.Objects = append(r.Objects, hooks...)
	}
	for _, o := range r.Objects {
		if d, ok := o.Obj.(*appsv1.Deployment); ok {
			if r.Deployment != nil {
				return nil, fmt.Errorf("two Deployments rendered: %s and %s", r.Deployment.Name, d.Name)
			}
			r.Deployment = d
		}
	}
	if r.Deployment == nil {
		return nil, fmt.Errorf("no Deployment rendered")
	}
	return r, nil
}

// mustRender renders values that are expected to be valid.
func mustRender(t testing.TB, valuesYAML string) *rendering {
	t.Helper()
	r, err := renderChart(loadChart(t), parseValues(t, valuesYAML), renderOptions{})
	if err != nil {
		t.Fatalf("render: %v\nvalues:\n%s", err, valuesYAML)
	}
	return r
}

// newTyped returns an empty typed object for a rendered apiVersion and kind;
// a kind the chart is not expected to render is an error.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + "/" + kind {
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, nil
	case "v1/Service":
		return &corev1.Service{}, nil
	case "v1/Pod":
		return &corev1.Pod{}, nil
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, nil
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, nil
	case "networking.k8s.io/v1/NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	case "cert-manager.io/v1/Certificate":
		return &certmanagerv1.Certificate{}, nil
	}
	return nil, fmt.Errorf("unexpected object %s %s", apiVersion, kind)
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeManifests splits a multi-document YAML stream and decodes every
// document strictly into its k8s.io/api type: an unknown or misspelled
// field, a duplicate key or a wrong type is an error.
func decodeManifests(stream []byte) ([]object, error) {
	var objs []object
	for _, doc := range docSeparator.Split(string(stream), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("read type of document: %w\n%s", err, doc)
		}
		typed, err := newTyped(meta.APIVersion, meta.Kind)
		if err != nil {
			return nil, err
		}
		if err := yaml.UnmarshalStrict([]byte(doc), typed); err != nil {
			return nil, fmt.Errorf("decode %s %s strictly: %w", meta.Kind, meta.Metadata.Name, err)
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, YAML: []byte(doc), Obj: typed})
	}
	return objs, nil
}

func stripComments(doc string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// podSpecs returns every pod spec in a rendering, named for messages.
func (r *rendering) podSpecs() map[string]*corev1.PodSpec {
	specs := map[string]*corev1.PodSpec{}
	for _, o := range r.Objects {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			specs["Deployment/"+v.Name] = &v.Spec.Template.Spec
		case *corev1.Pod:
			specs["Pod/"+v.Name] = &v.Spec
		}
	}
	return specs
}

// appContainer is the kubeskel container of the Deployment.
func (r *rendering) appContainer(t testing.TB) *corev1.Container {
	t.Helper()
	for i, c := range r.Deployment.Spec.Template.Spec.Containers {
		if c.Name == "kubeskel" {
			return &r.Deployment.Spec.Template.Spec.Containers[i]
		}
	}
	t.Fatalf("no kubeskel container in %s", r.Deployment.Name)
	return nil
}

// env returns the literal value of a variable of c and whether it is set.
func env(c *corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// objectsOfKind returns the rendered objects of one kind.
func (r *rendering) objectsOfKind(kind string) []object {
	var out []object
	for _, o := range r.Objects {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// readFile reads a file relative to the repository root.
func readFile(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
