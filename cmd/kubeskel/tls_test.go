package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testCA signs short-lived certificates for the TLS process tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

var testSerials atomic.Int64

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(testSerials.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate for 127.0.0.1 valid until notAfter and returns
// it and its key in PEM, and its serial number.
func (ca *testCA) issue(t *testing.T, notAfter time.Time, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial = testSerials.Add(1)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Minute), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), serial
}

// mountedSecret lays files out as the kubelet mounts a Secret: "tls.crt ->
// ..data/tls.crt", "..data -> ..<timestamp>"; update writes a new
// timestamped directory, renames a temporary symlink over "..data" and
// removes the old directory.
type mountedSecret struct {
	t        *testing.T
	dir, old string
	n        int
}

func newMountedSecret(t *testing.T, files map[string][]byte) *mountedSecret {
	t.Helper()
	m := &mountedSecret{t: t, dir: t.TempDir()}
	m.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *mountedSecret) path(name string) string { return filepath.Join(m.dir, name) }

func (m *mountedSecret) update(files map[string][]byte) {
	m.t.Helper()
	m.n++
	ts := fmt.Sprintf("..2026_12_05_08_%02d_00.%d", m.n, 200+m.n)
	if err := os.Mkdir(filepath.Join(m.dir, ts), 0o755); err != nil {
		m.t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(m.dir, ts, name), b, 0o600); err != nil {
			m.t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(m.dir, "..data_tmp")); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "..data_tmp"), filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
	if m.old != "" {
		if err := os.RemoveAll(filepath.Join(m.dir, m.old)); err != nil {
			m.t.Fatal(err)
		}
	}
	m.old = ts
}

// tlsEnv is the environment serving the mounted Secret.
func (m *mountedSecret) tlsEnv() []string {
	return []string{"APP_TLS_CERT_FILE=" + m.path("tls.crt"), "APP_TLS_KEY_FILE=" + m.path("tls.key")}
}

// httpsClient trusts roots and speaks HTTP/2 by ALPN only (or HTTP/1.1
// only); it counts the TCP connections it dials.
func httpsClient(t *testing.T, roots *x509.CertPool, http2 bool, client ...tls.Certificate) (*http.Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	var p http.Protocols
	p.SetHTTP2(http2)
	p.SetHTTP1(!http2)
	d := &net.Dialer{}
	tr := &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: client},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, &dials
}

func (p *process) httpsURL(path string) string { return "https://" + p.httpAddr + path }

// servedSerial does one handshake on a new connection and returns the
// serial number of the certificate the server presents.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) (int64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := (&tls.Dialer{Config: &tls.Config{RootCAs: roots}}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
}

// metricValue scrapes the admin port and returns the value of the sample
// whose line starts with series followed by a space.
func metricValue(t *testing.T, p *process, series string) (float64, bool) {
	t.Helper()
	_, _, body := get(t, p.url(true, "/metrics"))
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f, true
		}
	}
	return 0, false
}

// TestTLSDrain: with TLS the traffic port speaks HTTP/2 by ALPN; during
// the pre-stop delay a multiplexed connection gets a GOAWAY, its stream in
// flight completes, later requests succeed on a new connection, and the
// exit is clean. The admin port stays plain HTTP.
func TestTLSDrain(t *testing.T) {
	ca := newTestCA(t, "kubeskel test CA")
	crt, key, _ := ca.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	secret := newMountedSecret(t, map[string][]byte{"tls.crt": crt, "tls.key": key})
	p := start(t, append(secret.tlsEnv(), "APP_PRESTOP_DELAY=6s", "APP_TERMINATION_GRACE_PERIOD=60s")...)
	c, dials := httpsClient(t, ca.pool, true)

	if r := awaitReply(t, "the first response", h2cGet(t, c, p.httpsURL("/"))); r.err != nil || r.status != http.StatusOK || r.proto != "HTTP/2.0" {
		t.Fatalf("GET / over TLS before the signal: %d %s, %v; want 200 HTTP/2.0", r.status, r.proto, r.err)
	}
	// The admin port is plain HTTP: the kubelet's probes and Prometheus.
	if status, _, _ := get(t, p.url(true, "/live")); status != http.StatusOK {
		t.Errorf("plain HTTP GET /live on the admin port = %d, want 200", status)
	}
	slow := h2cGet(t, c, p.httpsURL("/slow?d=2s"))
	waitInFlight(t, p, 1)

	p.signal(syscall.SIGTERM)
	p.waitLog(5*time.Second, "phase", "phase", "draining")
	fast := awaitReply(t, "the response while draining", h2cGet(t, c, p.httpsURL("/")))
	if fast.err != nil || fast.status != http.StatusOK {
		t.Fatalf("GET / while draining: %d, %v; want 200", fast.status, fast.err)
	}
	slowReply := awaitReply(t, "the slow response", slow)
	if slowReply.err != nil || slowReply.status != http.StatusOK {
		t.Fatalf("stream in flight across the GOAWAY: %d, %v; want 200", slowReply.status, slowReply.err)
	}
	if fast.conn == "" || fast.conn != slowReply.conn {
		t.Fatalf("the request while draining used connection %q, the slow stream %q; want the same (multiplexed)", fast.conn, slowReply.conn)
	}
	after := awaitReply(t, "the response after the GOAWAY", h2cGet(t, c, p.httpsURL("/")))
	if after.err != nil || after.status != http.StatusOK || after.proto != "HTTP/2.0" {
		t.Fatalf("GET / after the GOAWAY: %d %s, %v; want 200 HTTP/2.0", after.status, after.proto, after.err)
	}
	if after.conn == "" || after.conn == slowReply.conn {
		t.Errorf("the request after the GOAWAY used connection %q, the drained one was %q; want a new one", after.conn, slowReply.conn)
	}
	if got := dials.Load(); got < 2 {
		t.Errorf("%d connections dialed, want at least 2 (a new one after the GOAWAY)", got)
	}
	if recs := p.logs.all(func(r map[string]any) bool { return r["phase"] == "shutting_down" }); len(recs) > 0 {
		t.Errorf("the requests above ran after the pre-stop delay; want them inside it")
	}
	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0\n%s", got, p.logs)
	}
}

// TestTLSRotation: the running process picks up a Secret rotated the
// kubelet's way within the reload interval, without a restart, while an
// old keep-alive connection keeps working; a corrupt pair keeps the new one
// serving. The metrics follow.
func TestTLSRotation(t *testing.T) {
	ca := newTestCA(t, "kubeskel test CA")
	crt1, key1, serial1 := ca.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	secret := newMountedSecret(t, map[string][]byte{"tls.crt": crt1, "tls.key": key1})
	const interval = 500 * time.Millisecond
	p := start(t, append(secret.tlsEnv(), "APP_PRESTOP_DELAY=0s", "APP_TLS_RELOAD_INTERVAL="+interval.String())...)

	if got, err := servedSerial(t, p.httpAddr, ca.pool); err != nil || got != serial1 {
		t.Fatalf("served serial %d, %v; want %d", got, err, serial1)
	}
	// A keep-alive HTTP/1.1 connection made with the first certificate.
	old, oldDials := httpsClient(t, ca.pool, false)
	if r := awaitReply(t, "the first response", h2cGet(t, old, p.httpsURL("/"))); r.err != nil || r.status != http.StatusOK {
		t.Fatalf("GET / = %d, %v", r.status, r.err)
	}

	notAfter2 := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	crt2, key2, serial2 := ca.issue(t, notAfter2, x509.ExtKeyUsageServerAuth)
	swapped := time.Now()
	secret.update(map[string][]byte{"tls.crt": crt2, "tls.key": key2})
	for {
		got, err := servedSerial(t, p.httpAddr, ca.pool)
		if err == nil && got == serial2 {
			t.Logf("new certificate served %s after the swap", time.Since(swapped).Round(time.Millisecond))
			break
		}
		if time.Since(swapped) > interval+time.Second {
			t.Fatalf("%s after the swap new handshakes present serial %d (%v), want %d", time.Since(swapped), got, err, serial2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := awaitReply(t, "the response on the old connection", h2cGet(t, old, p.httpsURL("/"))); r.err != nil || r.status != http.StatusOK {
		t.Errorf("GET / on the old connection after the rotation = %d, %v; want 200", r.status, r.err)
	}
	if got := oldDials.Load(); got != 1 {
		t.Errorf("the old client dialed %d connections, want 1 (kept alive across the rotation)", got)
	}
	p.waitLog(5*time.Second, "TLS certificate reloaded", "", "")
	if v, _ := metricValue(t, p, "kubeskel_tls_certificate_expiry_timestamp_seconds"); v != float64(notAfter2.Unix()) {
		t.Errorf("expiry metric = %v, want %d", v, notAfter2.Unix())
	}
	if v, _ := metricValue(t, p, `kubeskel_tls_certificate_reloads_total{result="success"}`); v != 1 {
		t.Errorf("successful reloads = %v, want 1", v)
	}

	// A corrupt pair: logged, counted, and the second certificate stays.
	secret.update(map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), "tls.key": key2})
	p.waitLog(interval+2*time.Second, "TLS certificate reload failed; still serving the previous certificate", "", "")
	if got, err := servedSerial(t, p.httpAddr, ca.pool); err != nil || got != serial2 {
		t.Errorf("after a corrupt pair the served serial is %d, %v; want %d", got, err, serial2)
	}
	if v, _ := metricValue(t, p, `kubeskel_tls_certificate_reloads_total{result="failure"}`); v != 1 {
		t.Errorf("failed reloads = %v, want 1", v)
	}
	p.signal(syscall.SIGTERM)
	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
}

// TestTLSMutual: with APP_TLS_CLIENT_CA_FILE a client without a
// certificate is refused; one with a certificate the CA signed is served.
func TestTLSMutual(t *testing.T) {
	ca := newTestCA(t, "server CA")
	clients := newTestCA(t, "client CA")
	crt, key, _ := ca.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	secret := newMountedSecret(t, map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": clients.pem})
	p := start(t, append(secret.tlsEnv(), "APP_TLS_CLIENT_CA_FILE="+secret.path("ca.crt"), "APP_PRESTOP_DELAY=0s")...)

	anonymous, _ := httpsClient(t, ca.pool, true)
	if r := awaitReply(t, "the anonymous response", h2cGet(t, anonymous, p.httpsURL("/"))); r.err == nil {
		t.Errorf("GET / without a client certificate = %d, want an error", r.status)
	}
	ccrt, ckey, _ := clients.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	pair, err := tls.X509KeyPair(ccrt, ckey)
	if err != nil {
		t.Fatal(err)
	}
	known, _ := httpsClient(t, ca.pool, true, pair)
	if r := awaitReply(t, "the response", h2cGet(t, known, p.httpsURL("/"))); r.err != nil || r.status != http.StatusOK {
		t.Errorf("GET / with a client certificate = %d, %v; want 200", r.status, r.err)
	}
	p.signal(syscall.SIGTERM)
	if got := p.wait(30 * time.Second); got != 0 {
		t.Errorf("exit code = %d, want 0", got)
	}
}

// TestTLSBadConfig: a TLS configuration that cannot work is exit 2 with an
// error naming the variables, before anything listens; check-config says
// the same. The control, a good pair, passes check-config.
func TestTLSBadConfig(t *testing.T) {
	ca := newTestCA(t, "kubeskel test CA")
	crt, key, _ := ca.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	_, otherKey, _ := ca.issue(t, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	crtPath, keyPath, otherKeyPath := write("tls.crt", crt), write("tls.key", key), write("other.key", otherKey)
	junk := write("junk.pem", []byte("junk"))
	for _, tc := range []struct {
		name string
		env  []string
		want []string
	}{
		{"cert only", []string{"APP_TLS_CERT_FILE=" + crtPath}, []string{"APP_TLS_KEY_FILE", "both or neither"}},
		{"key only", []string{"APP_TLS_KEY_FILE=" + keyPath}, []string{"APP_TLS_CERT_FILE", "both or neither"}},
		{"key of another certificate", []string{"APP_TLS_CERT_FILE=" + crtPath, "APP_TLS_KEY_FILE=" + otherKeyPath},
			[]string{"APP_TLS_CERT_FILE, APP_TLS_KEY_FILE", "other.key", "does not match"}},
		{"missing cert", []string{"APP_TLS_CERT_FILE=" + filepath.Join(dir, "absent.crt"), "APP_TLS_KEY_FILE=" + keyPath},
			[]string{"APP_TLS_CERT_FILE, APP_TLS_KEY_FILE", "absent.crt"}},
		{"bad client CA", []string{"APP_TLS_CERT_FILE=" + crtPath, "APP_TLS_KEY_FILE=" + keyPath, "APP_TLS_CLIENT_CA_FILE=" + junk},
			[]string{"APP_TLS_CLIENT_CA_FILE", "junk.pem"}},
	} {
		// The service at start-up, and check-config, which loads the files
		// the same way.
		for _, args := range [][]string{nil, {"check-config"}} {
			t.Run(strings.TrimSpace(tc.name+" "+strings.Join(args, " ")), func(t *testing.T) {
				p := launch(t, baseEnv(tc.env...), args...)
				if got, want := p.wait(10*time.Second), 2; got != want {
					t.Errorf("exit code = %d, want %d", got, want)
				}
				stderr := p.stderrString()
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not contain %q:\n%s", w, stderr)
					}
				}
				if recs := p.logs.all(func(r map[string]any) bool { return r["msg"] == "listening" }); len(recs) > 0 {
					t.Errorf("kubeskel listened before failing: %v", recs)
				}
			})
		}
	}
	t.Run("control good pair check-config", func(t *testing.T) {
		p := launch(t, baseEnv("APP_TLS_CERT_FILE="+crtPath, "APP_TLS_KEY_FILE="+keyPath), "check-config")
		if got := p.wait(10 * time.Second); got != 0 {
			t.Errorf("check-config with a good pair: exit code %d, want 0\n%s", got, p.stderrString())
		}
	})
}
