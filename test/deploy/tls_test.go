package deploy

import (
	"strings"
	"testing"
	"time"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
)

// tlsVolume returns the pod volume and the app's mount of that name.
func tlsVolume(t *testing.T, r *rendering, name string) (*corev1.Volume, *corev1.VolumeMount) {
	t.Helper()
	var vol *corev1.Volume
	for i, v := range r.Deployment.Spec.Template.Spec.Volumes {
		if v.Name == name {
			vol = &r.Deployment.Spec.Template.Spec.Volumes[i]
		}
	}
	var mount *corev1.VolumeMount
	c := r.appContainer(t)
	for i, m := range c.VolumeMounts {
		if m.Name == name {
			mount = &c.VolumeMounts[i]
		}
	}
	return vol, mount
}

// TestTLS: tls.secretName (or a cert-manager Certificate) mounts the Secret
// read-only, points the app at its files, marks the Service port https and
// leaves the probes on the plain-HTTP admin port. The control, no TLS,
// renders none of it.
func TestTLS(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		wantSecret   string // "" is cleartext
		wantClientCA string // APP_TLS_CLIENT_CA_FILE, "" unset
		wantCAVolume string // the client CA's own Secret volume, if any
		wantCert     bool
	}{
		{name: "control cleartext"},
		{name: "secret", values: `tls: {secretName: my-tls}`, wantSecret: "my-tls"},
		{name: "mutual TLS from the same Secret", values: `tls: {secretName: my-tls, clientCA: {enabled: true}}`,
			wantSecret: "my-tls", wantClientCA: "/etc/kubeskel/tls/ca.crt"},
		{name: "mutual TLS from another Secret", values: `tls: {secretName: my-tls, clientCA: {enabled: true, secretName: clients, key: bundle.pem}}`,
			wantSecret: "my-tls", wantClientCA: "/etc/kubeskel/tls-client-ca/bundle.pem", wantCAVolume: "clients"},
		{name: "cert-manager", values: `tls: {certManager: {enabled: true, issuerRef: {name: ca-issuer}}}`, //nolint:gosec // G101: chart values in a test, no credential
			wantSecret: "kubeskel-tls", wantCert: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values) // every manifest decoded strictly
			c := r.appContainer(t)
			vol, mount := tlsVolume(t, r, "tls")
			certFile, certSet := env(c, "APP_TLS_CERT_FILE")
			keyFile, keySet := env(c, "APP_TLS_KEY_FILE")
			caFile, caSet := env(c, "APP_TLS_CLIENT_CA_FILE")
			svc := trafficService(t, r)
			protocol := ""
			if ap := svc.Spec.Ports[0].AppProtocol; ap != nil {
				protocol = *ap
			}
			if tc.wantSecret == "" {
				if vol != nil || mount != nil || certSet || keySet || caSet {
					t.Errorf("cleartext rendering has a tls volume %v, mount %v or APP_TLS_* variables", vol, mount)
				}
				if protocol == "https" {
					t.Errorf("cleartext Service port appProtocol = https")
				}
			} else {
				if vol == nil || vol.Secret == nil || vol.Secret.SecretName != tc.wantSecret {
					t.Fatalf("tls volume = %+v, want Secret %q", vol, tc.wantSecret)
				}
				if mount == nil || !mount.ReadOnly || mount.MountPath != "/etc/kubeskel/tls" {
					t.Fatalf("tls mount = %+v, want read-only at /etc/kubeskel/tls", mount)
				}
				if certFile != "/etc/kubeskel/tls/tls.crt" || keyFile != "/etc/kubeskel/tls/tls.key" {
					t.Errorf("APP_TLS_CERT_FILE, APP_TLS_KEY_FILE = %q, %q; want the Secret's tls.crt and tls.key", certFile, keyFile)
				}
				if got := mustEnv(t, c, "APP_TLS_RELOAD_INTERVAL"); got != "10s" {
					t.Errorf("APP_TLS_RELOAD_INTERVAL = %q, want 10s", got)
				}
				if protocol != "https" {
					t.Errorf("traffic Service port appProtocol = %q, want https", protocol)
				}
			}
			if caFile != tc.wantClientCA {
				t.Errorf("APP_TLS_CLIENT_CA_FILE = %q, want %q", caFile, tc.wantClientCA)
			}
			caVol, caMount := tlsVolume(t, r, "tls-client-ca")
			if tc.wantCAVolume == "" && (caVol != nil || caMount != nil) {
				t.Errorf("unexpected client CA volume %+v", caVol)
			}
			if tc.wantCAVolume != "" && (caVol == nil || caVol.Secret == nil || caVol.Secret.SecretName != tc.wantCAVolume ||
				caMount == nil || !caMount.ReadOnly || caMount.MountPath != "/etc/kubeskel/tls-client-ca") {
				t.Errorf("client CA volume %+v mount %+v, want Secret %q read-only at /etc/kubeskel/tls-client-ca", caVol, caMount, tc.wantCAVolume)
			}
			// Probes stay on the admin port, in plain HTTP, with or without TLS.
			for kind, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					continue
				}
				if p.HTTPGet.Port.String() != "admin" || (p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP) {
					t.Errorf("%s probe on port %s scheme %q, want admin over HTTP", kind, p.HTTPGet.Port.String(), p.HTTPGet.Scheme)
				}
			}
			if got := len(r.objectsOfKind("Certificate")); got != map[bool]int{true: 1, false: 0}[tc.wantCert] {
				t.Errorf("%d Certificates rendered, want one: %v", got, tc.wantCert)
			}
		})
	}
}

// TestTLSCertificate: the cert-manager Certificate, decoded strictly into
// cert-manager's own Go types, writes the Secret the pod mounts, for the
// Service's names, from the configured issuer.
func TestTLSCertificate(t *testing.T) {
	r := mustRender(t, `
tls:
  certManager:
    enabled: true
    issuerRef: {name: internal-ca, kind: ClusterIssuer}
    duration: 720h
    renewBefore: 240h
`)
	objs := r.objectsOfKind("Certificate")
	if len(objs) != 1 {
		t.Fatalf("%d Certificates rendered, want 1", len(objs))
	}
	cert := objs[0].Obj.(*certmanagerv1.Certificate)
	vol, _ := tlsVolume(t, r, "tls")
	if vol == nil || vol.Secret == nil || cert.Spec.SecretName != vol.Secret.SecretName {
		t.Errorf("Certificate writes Secret %q, the pod mounts %+v; want the same", cert.Spec.SecretName, vol)
	}
	if got := cert.Spec.IssuerRef; got.Name != "internal-ca" || got.Kind != "ClusterIssuer" || got.Group != "cert-manager.io" {
		t.Errorf("issuerRef = %+v, want internal-ca ClusterIssuer cert-manager.io", got)
	}
	if got, want := strings.Join(cert.Spec.DNSNames, ","), "kubeskel,kubeskel.default,kubeskel.default.svc"; got != want {
		t.Errorf("dnsNames = %s, want %s", got, want)
	}
	if cert.Spec.Duration == nil || cert.Spec.Duration.Duration != 720*time.Hour ||
		cert.Spec.RenewBefore == nil || cert.Spec.RenewBefore.Duration != 240*time.Hour {
		t.Errorf("duration, renewBefore = %v, %v; want 720h, 240h", cert.Spec.Duration, cert.Spec.RenewBefore)
	}
	if cert.Spec.PrivateKey == nil || cert.Spec.PrivateKey.RotationPolicy != certmanagerv1.RotationPolicyAlways {
		t.Errorf("privateKey = %+v, want rotationPolicy Always", cert.Spec.PrivateKey)
	}
	if cert.Namespace != "default" {
		t.Errorf("Certificate namespace = %q, want default", cert.Namespace)
	}
}

// TestCertificateDecodedStrictly is the control of the decoding above: a
// misspelled Certificate field is an error, so the rendering's fields are
// known to cert-manager's types.
func TestCertificateDecodedStrictly(t *testing.T) {
	_, err := decodeManifests([]byte(`apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: x}
spec:
  secretName: x
  issuerRef: {name: ca}
  renewBefor: 240h
`))
	if err == nil || !strings.Contains(err.Error(), "renewBefor") {
		t.Errorf("decode error = %v, want one naming the unknown field renewBefor", err)
	}
}

// TestTLSValuesChecked: values that cannot work are refused at render time.
func TestTLSValuesChecked(t *testing.T) {
	for _, tc := range []struct{ name, values, want string }{
		{"cert-manager without issuer", `tls: {certManager: {enabled: true}}`, "issuerRef.name"},
		{"client CA without TLS", `tls: {clientCA: {enabled: true}}`, "tls.clientCA.enabled needs TLS"},
		{"bad reload interval", `tls: {secretName: x, reloadInterval: "10"}`, "reloadInterval"},
		{"misspelled key", `tls: {secretname: x}`, "secretname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(loadChart(t), parseValues(t, tc.values), renderOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("render error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestTLSHelmTest: with TLS the helm test pod probes the Service over
// https, accepting the pod's certificate (it checks the route); in
// cleartext it keeps http and verifies nothing it does not need to.
func TestTLSHelmTest(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		want         []string
	}{
		{"control cleartext", "", []string{"probe", "-timeout", "5s", "http://kubeskel.default.svc:80/"}},
		{"tls", `tls: {secretName: my-tls}`, []string{"probe", "-timeout", "5s", "-insecure", "https://kubeskel.default.svc:80/"}},
		{"tls with tests.url", `{tls: {secretName: my-tls}, tests: {url: "https://x.example/"}}`, []string{"probe", "-timeout", "5s", "https://x.example/"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, tc.values)
			var pod *corev1.Pod
			for _, o := range r.Hooks {
				if p, ok := o.Obj.(*corev1.Pod); ok {
					pod = p
				}
			}
			if pod == nil {
				t.Fatal("no helm test pod rendered")
			}
			if got, want := strings.Join(pod.Spec.Containers[0].Args, " "), strings.Join(tc.want, " "); got != want {
				t.Errorf("test pod args = %q, want %q", got, want)
			}
		})
	}
}
