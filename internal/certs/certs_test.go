package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// authority is a test CA.
type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serials atomic.Int64

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *authority {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serials.Add(1)), Subject: pkix.Name{CommonName: name},
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
	return &authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a PEM certificate and key for name, valid until notAfter.
func (ca *authority) issue(t *testing.T, name string, notAfter time.Time, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte, serial *big.Int) {
	t.Helper()
	key := newKey(t)
	serial = big.NewInt(serials.Add(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
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

// secretDir lays files out the way the kubelet mounts a Secret: the files
// are symlinks "tls.crt -> ..data/tls.crt", "..data" is a symlink to a
// timestamped directory, and an update writes a new timestamped directory
// and renames a temporary symlink over "..data" (atomic), then removes the
// old directory.
type secretDir struct {
	t   *testing.T
	dir string
	n   int
	old string
}

func newSecretDir(t *testing.T, files map[string][]byte) *secretDir {
	s := &secretDir{t: t, dir: t.TempDir()}
	s.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(s.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *secretDir) path(name string) string { return filepath.Join(s.dir, name) }

func (s *secretDir) update(files map[string][]byte) {
	s.t.Helper()
	s.n++
	ts := fmt.Sprintf("..2026_12_05_07_%02d_00.%d", s.n, 100+s.n)
	if err := os.Mkdir(filepath.Join(s.dir, ts), 0o755); err != nil {
		s.t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(s.dir, ts, name), b, 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		s.t.Fatal(err)
	}
	if s.old != "" {
		if err := os.RemoveAll(filepath.Join(s.dir, s.old)); err != nil {
			s.t.Fatal(err)
		}
	}
	s.old = ts
}

// events records what the Reloader reports.
type events struct {
	mu       sync.Mutex
	notAfter []time.Time
	ok, fail int
}

func (e *events) options(o Options) Options {
	o.Loaded = func(t time.Time) { e.mu.Lock(); e.notAfter = append(e.notAfter, t); e.mu.Unlock() }
	o.Reloaded = func(err error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if err != nil {
			e.fail++
		} else {
			e.ok++
		}
	}
	return o
}

func (e *events) counts() (ok, fail int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ok, e.fail
}

// serveTLS serves 200 with TLS from cfg on a loopback port and returns its
// address.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ErrorLog: nil,
	}
	srv.TLSConfig = cfg
	go func() { _ = srv.ServeTLS(ln, "", "") }() // ErrServerClosed after Close
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// handshake dials a new connection and returns the serial number of the
// certificate the server presents, or the handshake's error.
func handshake(t *testing.T, addr string, roots *x509.CertPool, client []tls.Certificate) (*big.Int, error) {
	t.Helper()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", Certificates: client}}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	// With TLS 1.3 a rejected client certificate surfaces on the first read.
	if err := tc.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		return nil, err
	}
	if _, err := tc.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitServing polls new handshakes until the server presents want, and
// returns how long that took.
func waitServing(t *testing.T, addr string, roots *x509.CertPool, want *big.Int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, err := handshake(t, addr, roots, nil)
		if err == nil && got.Cmp(want) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %s new handshakes present serial %v (err %v), want %v", within, got, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRotateTheKubeletWay(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		// within bounds the time from the swap to the first new handshake
		// with the new certificate.
		within time.Duration
	}{
		{"watch", Options{Interval: 0}, 2 * time.Second},
		{"poll", Options{Interval: 200 * time.Millisecond, noWatch: true}, 200*time.Millisecond + time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newCA(t, "test CA")
			roots := x509.NewCertPool()
			roots.AddCert(ca.cert)
			crt1, key1, serial1 := ca.issue(t, "127.0.0.1", time.Now().Add(30*time.Minute), x509.ExtKeyUsageServerAuth)
			dir := newSecretDir(t, map[string][]byte{"tls.crt": crt1, "tls.key": key1})

			var ev events
			o := tc.o
			o.CertFile, o.KeyFile = dir.path("tls.crt"), dir.path("tls.key")
			r, err := New(ev.options(o))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			runDone := make(chan error, 1)
			go func() { runDone <- r.Run(ctx) }()
			t.Cleanup(func() {
				cancel()
				if err := <-runDone; err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			})
			addr := serveTLS(t, r.TLSConfig())

			// A keep-alive connection set up with the first certificate.
			var reused atomic.Int64
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
			t.Cleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			getOld := func() *big.Int {
				t.Helper()
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
					if i.Reused {
						reused.Add(1)
					}
				}}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, "https://"+addr+"/", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("request on the old connection: %v", err)
				}
				defer resp.Body.Close()
				io.Copy(io.Discard, resp.Body)
				return resp.TLS.PeerCertificates[0].SerialNumber
			}
			if got := getOld(); got.Cmp(serial1) != 0 {
				t.Fatalf("first connection got serial %v, want %v", got, serial1)
			}
			time.Sleep(100 * time.Millisecond) // let the watch settle

			// Rotate twice: a Secret is updated again and again, and a watch
			// that survives only one swap (one on the files, whose targets
			// the swap deletes) would miss the second.
			var crt2 []byte
			for i := range 2 {
				c, k, serial := ca.issue(t, "127.0.0.1", time.Now().Add(time.Duration(50+i)*time.Minute), x509.ExtKeyUsageServerAuth)
				dir.update(map[string][]byte{"tls.crt": c, "tls.key": k})
				took := waitServing(t, addr, roots, serial, tc.within)
				t.Logf("rotation %d: new certificate served %s after the swap", i+1, took)
				crt2 = c
			}

			// The old keep-alive connection keeps working, with its certificate.
			if got := getOld(); got.Cmp(serial1) != 0 {
				t.Errorf("old connection after the rotation got serial %v, want the old %v", got, serial1)
			}
			if got := reused.Load(); got != 1 {
				t.Errorf("requests on a reused connection = %d, want 1 (the old connection kept alive)", got)
			}
			if ok, fail := ev.counts(); ok != 2 || fail != 0 {
				t.Errorf("reloads: %d ok, %d failed; want 2, 0", ok, fail)
			}
			leaf2, _ := pem.Decode(crt2)
			c2, _ := x509.ParseCertificate(leaf2.Bytes)
			if got, want := r.NotAfter(), c2.NotAfter; !got.Equal(want) {
				t.Errorf("NotAfter = %s, want %s", got, want)
			}
		})
	}
}

// TestCorruptPairKeepsOld: a new pair that does not load (a key of another
// certificate, then garbage) keeps the old certificate serving, is reported
// once per distinct content, and a later good pair is still picked up.
func TestCorruptPairKeepsOld(t *testing.T) {
	ca := newCA(t, "test CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	crt1, key1, serial1 := ca.issue(t, "127.0.0.1", time.Now().Add(30*time.Minute), x509.ExtKeyUsageServerAuth)
	dir := newSecretDir(t, map[string][]byte{"tls.crt": crt1, "tls.key": key1})
	var ev events
	r, err := New(ev.options(Options{CertFile: dir.path("tls.crt"), KeyFile: dir.path("tls.key"), Interval: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	addr := serveTLS(t, r.TLSConfig())

	crt2, _, _ := ca.issue(t, "127.0.0.1", time.Now().Add(50*time.Minute), x509.ExtKeyUsageServerAuth)
	_, otherKey, _ := ca.issue(t, "127.0.0.1", time.Now().Add(50*time.Minute), x509.ExtKeyUsageServerAuth)
	for i, bad := range []map[string][]byte{
		{"tls.crt": crt2, "tls.key": otherKey},
		{"tls.crt": []byte("not PEM"), "tls.key": key1},
	} {
		dir.update(bad)
		deadline := time.Now().Add(3 * time.Second)
		for _, fail := ev.counts(); fail < i+1; _, fail = ev.counts() {
			if time.Now().After(deadline) {
				t.Fatalf("bad pair %d: no reload failure reported within 3s", i+1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // several polls and events: reported once
		if got, err := handshake(t, addr, roots, nil); err != nil || got.Cmp(serial1) != 0 {
			t.Errorf("bad pair %d: new handshake got serial %v, %v; want the old %v", i+1, got, err, serial1)
		}
		if ok, fail := ev.counts(); ok != 0 || fail != i+1 {
			t.Errorf("bad pair %d: reloads %d ok, %d failed; want 0, %d", i+1, ok, fail, i+1)
		}
	}
	if err := r.Reload(); err != nil {
		t.Errorf("Reload of unchanged bad content = %v, want nil (already reported)", err)
	}

	crt3, key3, serial3 := ca.issue(t, "127.0.0.1", time.Now().Add(50*time.Minute), x509.ExtKeyUsageServerAuth)
	dir.update(map[string][]byte{"tls.crt": crt3, "tls.key": key3})
	waitServing(t, addr, roots, serial3, 3*time.Second)
	if ok, _ := ev.counts(); ok != 1 {
		t.Errorf("successful reloads after the good pair = %d, want 1", ok)
	}
}

// TestMutualTLS: with a client CA, a client without a certificate, or with
// one from another CA, is rejected; one from the CA is served. A rotated CA
// file applies to new handshakes.
func TestMutualTLS(t *testing.T) {
	ca := newCA(t, "server CA")
	clientCA := newCA(t, "client CA")
	otherCA := newCA(t, "other CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	crt, key, _ := ca.issue(t, "127.0.0.1", time.Now().Add(30*time.Minute), x509.ExtKeyUsageServerAuth)
	dir := newSecretDir(t, map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": clientCA.pem})
	r, err := New(Options{CertFile: dir.path("tls.crt"), KeyFile: dir.path("tls.key"), ClientCAFile: dir.path("ca.crt")})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r.TLSConfig())

	pair := func(ca *authority, usage x509.ExtKeyUsage) []tls.Certificate {
		c, k, _ := ca.issue(t, "client", time.Now().Add(30*time.Minute), usage)
		p, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{p}
	}
	good := pair(clientCA, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name    string
		client  []tls.Certificate
		wantErr bool
	}{
		{"no certificate", nil, true},
		{"another CA", pair(otherCA, x509.ExtKeyUsageClientAuth), true},
		{"server usage only", pair(clientCA, x509.ExtKeyUsageServerAuth), true},
		{"the client CA", good, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := handshake(t, addr, roots, tc.client)
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Errorf("handshake error = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
	// Over HTTP too: no certificate, no response.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("GET without a client certificate: %s, want an error", resp.Status)
	}

	// Rotate the client CA: the old client's certificate is now rejected.
	dir.update(map[string][]byte{"tls.crt": crt, "tls.key": key, "ca.crt": otherCA.pem})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(t, addr, roots, good); err == nil {
		t.Errorf("client of the replaced CA: handshake succeeded, want an error")
	}
	if _, err := handshake(t, addr, roots, pair(otherCA, x509.ExtKeyUsageClientAuth)); err != nil {
		t.Errorf("client of the new CA: %v", err)
	}
}

// TestLoadedExpiry: Loaded reports the serving certificate's NotAfter, at
// the first load and after a reload.
func TestLoadedExpiry(t *testing.T) {
	ca := newCA(t, "test CA")
	notAfter1 := time.Now().Add(17 * time.Minute).Truncate(time.Second)
	crt1, key1, _ := ca.issue(t, "127.0.0.1", notAfter1, x509.ExtKeyUsageServerAuth)
	dir := newSecretDir(t, map[string][]byte{"tls.crt": crt1, "tls.key": key1})
	var ev events
	r, err := New(ev.options(Options{CertFile: dir.path("tls.crt"), KeyFile: dir.path("tls.key")}))
	if err != nil {
		t.Fatal(err)
	}
	notAfter2 := time.Now().Add(41 * time.Minute).Truncate(time.Second)
	crt2, key2, _ := ca.issue(t, "127.0.0.1", notAfter2, x509.ExtKeyUsageServerAuth)
	dir.update(map[string][]byte{"tls.crt": crt2, "tls.key": key2})
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if len(ev.notAfter) != 2 || !ev.notAfter[0].Equal(notAfter1) || !ev.notAfter[1].Equal(notAfter2) {
		t.Errorf("Loaded got %v, want [%s %s]", ev.notAfter, notAfter1, notAfter2)
	}
}

// TestNewErrors: a pair that does not load at start is an error naming the
// files.
func TestNewErrors(t *testing.T) {
	ca := newCA(t, "test CA")
	crt, key, _ := ca.issue(t, "127.0.0.1", time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	_, otherKey, _ := ca.issue(t, "127.0.0.1", time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crtPath, keyPath, otherKeyPath := write("tls.crt", crt), write("tls.key", key), write("other.key", otherKey)
	junk := write("junk.pem", []byte("junk"))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"mismatched key", Options{CertFile: crtPath, KeyFile: otherKeyPath}, "other.key"},
		{"missing key", Options{CertFile: crtPath, KeyFile: filepath.Join(dir, "absent.key")}, "absent.key"},
		{"no key file", Options{CertFile: crtPath}, "key file"},
		{"bad client CA", Options{CertFile: crtPath, KeyFile: keyPath, ClientCAFile: junk}, "junk.pem"},
		{"missing client CA", Options{CertFile: crtPath, KeyFile: keyPath, ClientCAFile: filepath.Join(dir, "absent.pem")}, "absent.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New error = %v, want one naming %q", err, tc.want)
			}
			if got, want := errors.Is(err, ErrClientCA), tc.o.ClientCAFile != ""; got != want {
				t.Errorf("errors.Is(%v, ErrClientCA) = %v, want %v", err, got, want)
			}
		})
	}
}

// TestSwapBetweenReads: a swap between the reads of the certificate and
// the key (an old certificate with a new key) is not a failure: Reload reads
// again and loads the new pair.
func TestSwapBetweenReads(t *testing.T) {
	ca := newCA(t, "test CA")
	crt1, key1, _ := ca.issue(t, "127.0.0.1", time.Now().Add(30*time.Minute), x509.ExtKeyUsageServerAuth)
	crt2, key2, _ := ca.issue(t, "127.0.0.1", time.Now().Add(50*time.Minute), x509.ExtKeyUsageServerAuth)
	dir := newSecretDir(t, map[string][]byte{"tls.crt": crt1, "tls.key": key1})
	var ev events
	r, err := New(ev.options(Options{CertFile: dir.path("tls.crt"), KeyFile: dir.path("tls.key")}))
	if err != nil {
		t.Fatal(err)
	}
	swapped := false
	r.afterFile = func(i int) {
		if i == 0 && !swapped {
			swapped = true
			dir.update(map[string][]byte{"tls.crt": crt2, "tls.key": key2})
		}
	}
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload across a swap = %v, want nil", err)
	}
	if !swapped {
		t.Fatal("the swap did not happen between the reads")
	}
	if ok, fail := ev.counts(); ok != 1 || fail != 0 {
		t.Errorf("reloads %d ok, %d failed; want 1, 0", ok, fail)
	}
	block, _ := pem.Decode(crt2)
	c2, _ := x509.ParseCertificate(block.Bytes)
	if got := r.NotAfter(); !got.Equal(c2.NotAfter) {
		t.Errorf("NotAfter = %s, want the new certificate's %s", got, c2.NotAfter)
	}
}
