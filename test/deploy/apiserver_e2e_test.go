//go:build e2e

package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelmLint runs the pinned helm's own linter, strictly, on the defaults
// and on every case of the value matrix.
func TestHelmLint(t *testing.T) {
	helm := toolPath(t, "helm")
	for _, tc := range valueMatrix {
		t.Run(tc.name, func(t *testing.T) {
			values := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(values, []byte(tc.values), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(helm, "lint", "--strict", "--kube-version", strings.TrimPrefix(kubeVersion, "v"), "-f", values, chartDir).CombinedOutput()
			if err != nil {
				t.Errorf("helm lint --strict: %v\n%s", err, out)
			}
			if bytes.Contains(out, []byte("[WARNING]")) || bytes.Contains(out, []byte("[ERROR]")) {
				t.Errorf("helm lint reported problems:\n%s", out)
			}
		})
	}
}

// TestAPIServerAdmission sends every rendering of the value matrix to a real
// kube-apiserver (the pinned version, on etcd, both on 127.0.0.1) with
// `kubectl apply --dry-run=server`, in namespaces that enforce and warn on
// the restricted Pod Security Standard. Every object must be admitted with
// no warning. ServiceMonitor and Certificate objects are left out: their
// CRDs are not installed here (they are checked by strict decoding into the
// Prometheus Operator's and cert-manager's Go types in the fast tests).
func TestAPIServerAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	kubectl := startAPIServer(t)

	type admission struct {
		out      string
		warnings []string
		err      error
	}
	apply := func(t *testing.T, ns string, manifest []byte, extra ...string) admission {
		t.Helper()
		file := filepath.Join(t.TempDir(), "manifest.yaml")
		if err := os.WriteFile(file, manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		err := kubectl.cmd(append([]string{"apply", "--dry-run=server", "--namespace", ns, "-f", file}, extra...)...).run(&stdout, &stderr)
		var warnings []string
		for _, l := range strings.Split(stderr.String(), "\n") {
			if strings.HasPrefix(l, "Warning:") {
				warnings = append(warnings, l)
			}
		}
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.String())
		}
		return admission{out: stdout.String(), warnings: warnings, err: err}
	}
	// enforce is "restricted" except for host-network renderings, which
	// need a privileged namespace; warnings are always on "restricted".
	restrictedNamespace := func(t *testing.T, name string, enforce ...string) {
		t.Helper()
		level := "restricted"
		if len(enforce) > 0 {
			level = enforce[0]
		}
		kubectl.mustRun(t, "create", "namespace", name)
		kubectl.mustRun(t, "label", "namespace", name,
			"pod-security.kubernetes.io/enforce="+level,
			"pod-security.kubernetes.io/warn=restricted",
			"pod-security.kubernetes.io/audit=restricted")
		// No controller-manager runs, so create the ServiceAccounts the
		// ServiceAccount admission plugin looks up for pods.
		kubectl.mustRun(t, "--namespace", name, "create", "serviceaccount", "default")
	}

	for _, tc := range valueMatrix {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values)
			ns := "case-" + tc.name
			if len(tc.wantPSSViolations) > 0 {
				restrictedNamespace(t, ns, "privileged")
			} else {
				restrictedNamespace(t, ns)
			}
			// Applied for real (as kubectl apply, so the dry run below finds
			// its last-applied annotation and does not warn).
			if sa := manifestOf(r, ns, "ServiceAccount"); len(sa) > 0 {
				if a := apply(t, ns, sa, "--dry-run=none"); a.err != nil {
					t.Fatalf("create ServiceAccount: %v", a.err)
				}
			}
			manifest, skipped := applicableManifest(r, ns)
			a := apply(t, ns, manifest)
			if a.err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v", a.err)
			}
			admitted := strings.Count(a.out, "(server dry run)")
			if got, want := admitted, len(r.Objects)-len(skipped); got != want {
				t.Errorf("%d objects admitted, want %d:\n%s", got, want, a.out)
			}
			var want []string
			if len(tc.wantPSSViolations) > 0 {
				// hostNetwork with probes on 127.0.0.1 breaks the baseline
				// level twice in the Deployment, once in the test pod.
				want = []string{
					`host namespaces (hostNetwork=true)`,
					`host namespaces (hostNetwork=true)`,
					`probe or lifecycle host (container "kubeskel" uses probe or lifecycle host "127.0.0.1")`,
				}
			}
			got := pssWarningReasons(a.warnings)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("warnings %v, want %v\nfull warnings:\n%s", got, want, strings.Join(a.warnings, "\n"))
			}
			t.Logf("%d objects admitted, %d warnings, skipped %v", admitted, len(a.warnings), skipped)
		})
	}

	t.Run("control-privileged", func(t *testing.T) {
		// A hand-broken rendering: the Deployment must draw a warning and the
		// test Pod must be rejected by PodSecurity.
		r := mustRender(t, `
securityContext:
  privileged: true
  allowPrivilegeEscalation: true
podSecurityContext:
  runAsNonRoot: false
`)
		ns := "control-privileged"
		restrictedNamespace(t, ns)
		kubectl.mustRun(t, "--namespace", ns, "create", "serviceaccount", "kubeskel")
		deployment := manifestOf(r, ns, "Deployment")
		a := apply(t, ns, deployment)
		if a.err != nil {
			t.Fatalf("Deployment rejected outright: %v", a.err)
		}
		if len(a.warnings) == 0 {
			t.Errorf("privileged Deployment admitted without a warning")
		}
		pod := apply(t, ns, manifestOf(r, ns, "Pod"))
		if pod.err == nil || !strings.Contains(pod.err.Error(), "violates PodSecurity") {
			t.Errorf("privileged test Pod: err = %v, want a PodSecurity rejection", pod.err)
		}
	})

	t.Run("control-unknown-field", func(t *testing.T) {
		r := mustRender(t, "")
		ns := "control-unknown-field"
		restrictedNamespace(t, ns)
		broken := bytes.Replace(manifestOf(r, ns, "Deployment"), []byte("terminationGracePeriodSeconds:"), []byte("terminationGracePeriodSecond:"), 1)
		a := apply(t, ns, broken, "--validate=strict")
		if a.err == nil || !strings.Contains(a.err.Error(), "terminationGracePeriodSecond") {
			t.Errorf("misspelled field: err = %v, want a strict field validation error", a.err)
		}
	})
}

var pssWarning = regexp.MustCompile(`would violate PodSecurity "restricted:[^"]*": (.*)$`)

// pssWarningReasons splits PodSecurity warnings into their reasons; any
// other warning is returned whole.
func pssWarningReasons(warnings []string) []string {
	var reasons []string
	for _, w := range warnings {
		m := pssWarning.FindStringSubmatch(w)
		if m == nil {
			reasons = append(reasons, w)
			continue
		}
		// Reasons are separated by ", " outside parentheses.
		depth, start := 0, 0
		s := m[1]
		for i, r := range s {
			switch r {
			case '(':
				depth++
			case ')':
				depth--
			case ',':
				if depth == 0 {
					reasons = append(reasons, strings.TrimSpace(s[start:i]))
					start = i + 1
				}
			}
		}
		reasons = append(reasons, strings.TrimSpace(s[start:]))
	}
	return reasons
}

// applicableManifest joins every object the test server can admit, moved to
// namespace ns, and names the ones it left out.
func applicableManifest(r *rendering, ns string) ([]byte, []string) {
	var b bytes.Buffer
	var skipped []string
	for _, o := range r.Objects {
		if o.Kind == "ServiceMonitor" || o.Kind == "Certificate" {
			skipped = append(skipped, o.Kind+"/"+o.Name)
			continue
		}
		b.WriteString("---\n")
		b.Write(inNamespace(o.YAML, ns))
		b.WriteString("\n")
	}
	return b.Bytes(), skipped
}

func manifestOf(r *rendering, ns, kind string) []byte {
	var b bytes.Buffer
	for _, o := range r.objectsOfKind(kind) {
		b.WriteString("---\n")
		b.Write(inNamespace(o.YAML, ns))
		b.WriteString("\n")
	}
	return b.Bytes()
}

var namespaceLine = regexp.MustCompile(`(?m)^  namespace: default$`)

func inNamespace(doc []byte, ns string) []byte {
	return namespaceLine.ReplaceAll(doc, []byte("  namespace: "+ns))
}

// toolPath returns the path of a pinned tool from hack/tools.sh.
func toolPath(t *testing.T, name string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "tools.sh"), name)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/tools.sh %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// kubectlRunner runs the pinned kubectl against the test API server.
type kubectlRunner struct {
	bin, kubeconfig string
}

type command struct{ *exec.Cmd }

func (k kubectlRunner) cmd(args ...string) command {
	return command{exec.Command(k.bin, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)}
}

func (c command) run(stdout, stderr *bytes.Buffer) error {
	c.Stdout, c.Stderr = stdout, stderr
	return c.Run()
}

func (k kubectlRunner) mustRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := k.cmd(args...).CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// startAPIServer starts etcd and kube-apiserver on 127.0.0.1 with random
// ports in a temporary directory, and stops both (by PID) when the test ends.
func startAPIServer(t *testing.T) kubectlRunner {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Log("etcd not found; installing Debian's etcd-server")
		install := "apt-get install -y etcd-server || { apt-get update && apt-get install -y etcd-server; }"
		if out, err := exec.Command("bash", "-c", install).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", install, err, out)
		}
	}
	binDir := toolPath(t, "kube-bin-dir")
	dir := t.TempDir()
	logs := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	clientAddr, peerAddr := freeAddrT(t), freeAddrT(t)
	etcd := exec.Command("etcd",
		"--name", "kubeskel-test",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", "http://"+clientAddr,
		"--advertise-client-urls", "http://"+clientAddr,
		"--listen-peer-urls", "http://"+peerAddr,
		"--initial-advertise-peer-urls", "http://"+peerAddr,
		"--initial-cluster", "kubeskel-test=http://"+peerAddr,
		"--log-level", "warn")
	etcdLog := logs("etcd")
	etcd.Stdout, etcd.Stderr = etcdLog, etcdLog
	startProcess(t, etcd, "etcd", etcdLog.Name())

	// A self-made service-account key pair and a static admin token.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saKey := filepath.Join(dir, "sa.key")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	token := fmt.Sprintf("kubeskel-%d", time.Now().UnixNano())
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+",admin,admin,system:masters\n"))

	secureAddr := freeAddrT(t)
	_, port, _ := strings.Cut(secureAddr, ":")
	apiserver := exec.Command(filepath.Join(binDir, "kube-apiserver"),
		"--etcd-servers", "http://"+clientAddr,
		"--bind-address", "127.0.0.1",
		"--advertise-address", "127.0.0.1",
		"--secure-port", port,
		"--cert-dir", filepath.Join(dir, "certs"), // self-signed serving certificate
		"--token-auth-file", tokens,
		"--authorization-mode", "AlwaysAllow",
		"--service-account-key-file", saKey,
		"--service-account-signing-key-file", saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		// As in real clusters, so that Pod Security admission (not this
		// flag) is what rejects the privileged control.
		"--allow-privileged=true",
	)
	apiLog := logs("kube-apiserver")
	apiserver.Stdout, apiserver.Stderr = apiLog, apiLog
	startProcess(t, apiserver, "kube-apiserver", apiLog.Name())

	server := "https://" + secureAddr
	waitReady(t, server+"/readyz", token, 90*time.Second, apiLog.Name())

	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, server, token)))
	return kubectlRunner{bin: filepath.Join(binDir, "kubectl"), kubeconfig: kubeconfig}
}

// startProcess starts cmd and stops it by PID when the test ends: SIGTERM,
// then SIGKILL after 10s.
func startProcess(t *testing.T, cmd *exec.Cmd, name, logFile string) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // the exit is seen through done; SIGTERM makes it non-nil
	t.Logf("%s started, pid %d, log %s", name, cmd.Process.Pid, logFile)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("%s log tail:\n%s", name, tail(b, 30))
			}
		}
	})
}

func waitReady(t *testing.T, url, token string, timeout time.Duration, logFile string) {
	t.Helper()
	// G402: the test's own kube-apiserver on 127.0.0.1, with a certificate made a moment ago.
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // see above
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := "no answer"
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	b, _ := os.ReadFile(logFile)
	t.Fatalf("%s not ready within %v (last: %s); log tail:\n%s", url, timeout, last, tail(b, 30))
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func freeAddrT(t *testing.T) string { return freeAddr(t) }
