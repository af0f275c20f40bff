package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/server"
)

// selfSigned returns a server TLS configuration with a short-lived
// certificate for 127.0.0.1, and a pool that trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}, pool
}

// tlsClient returns a client trusting roots that speaks only the given
// protocol over TLS (HTTP/2 by ALPN, or HTTP/1.1), and its dial count.
func tlsClient(t *testing.T, roots *x509.CertPool, http2 bool) (*http.Client, *atomic.Int64) {
	t.Helper()
	var dials atomic.Int64
	var p http.Protocols
	p.SetHTTP2(http2)
	p.SetHTTP1(!http2)
	d := &net.Dialer{}
	tr := &http.Transport{
		Protocols:       &p,
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, &dials
}

// serveTLS is serve with TLS: it returns the https base URL.
func serveTLS(t *testing.T, h http.Handler, o server.Options) (*server.Server, string) {
	t.Helper()
	s, base := serve(t, h, o)
	return s, strings.Replace(base, "http://", "https://", 1)
}

// TestTLSALPN: with TLS the port offers HTTP/2 and HTTP/1.1 by ALPN, and no
// cleartext, H2C or not.
func TestTLSALPN(t *testing.T) {
	cfg, roots := selfSigned(t)
	s, base := serveTLS(t, http.HandlerFunc(protoHandler), server.Options{H2C: true, TLS: cfg, Traffic: &server.Observability{}})
	for _, tc := range []struct {
		name  string
		http2 bool
		want  string
	}{
		{"h2", true, "HTTP/2.0"},
		{"http/1.1", false, "HTTP/1.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := tlsClient(t, roots, tc.http2)
			r := receive(t, "the response", getAsync(t, c, base))
			if r.err != nil || r.status != http.StatusOK || r.body != tc.want || r.proto != tc.want {
				t.Errorf("GET over TLS got %d %q (proto %q), %v; want 200 %q", r.status, r.body, r.proto, r.err, tc.want)
			}
		})
	}
	h2c, _ := h2cClient(t)
	if r := receive(t, "the h2c response", getAsync(t, h2c, "http://"+s.Addr().String())); r.err == nil {
		t.Errorf("cleartext h2c request to the TLS port got %d %q, want an error", r.status, r.body)
	}
}

// TestTLSGoAwayWhileDraining: over TLS as over h2c, while draining a
// response on a multiplexed HTTP/2 connection carries a GOAWAY; the stream
// in flight completes and the next request goes to a new connection. The
// control, not draining, reuses the connection.
func TestTLSGoAwayWhileDraining(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drain   bool
		wantNew bool
	}{
		{"draining", true, true},
		{"control not draining", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, roots := selfSigned(t)
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			mux := http.NewServeMux()
			mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				<-release
				io.WriteString(w, "slow done")
			})
			mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "fast") })
			s, base := serveTLS(t, mux, server.Options{TLS: cfg, Traffic: &server.Observability{}})
			c, _ := tlsClient(t, roots, true)

			slow := getAsync(t, c, base+"/slow")
			receive(t, "the slow handler to start", started)
			if tc.drain {
				s.StartDraining()
			}
			fast := receive(t, "the fast response", getAsync(t, c, base))
			if fast.err != nil || fast.status != http.StatusOK || fast.proto != "HTTP/2.0" {
				t.Fatalf("fast request while the slow one is in flight: %d %s, %v; want 200 HTTP/2.0", fast.status, fast.proto, fast.err)
			}
			close(release)
			r := receive(t, "the slow response", slow)
			if r.err != nil || r.status != http.StatusOK || r.body != "slow done" {
				t.Fatalf("in-flight stream got %d %q, %v; want 200 \"slow done\"", r.status, r.body, r.err)
			}
			if fast.conn == "" || fast.conn != r.conn {
				t.Fatalf("fast request on connection %q, slow one on %q; want the same (multiplexed)", fast.conn, r.conn)
			}
			next := receive(t, "the next response", getAsync(t, c, base))
			if next.err != nil || next.status != http.StatusOK {
				t.Fatalf("next request: %d, %v; want 200", next.status, next.err)
			}
			if got := next.conn != r.conn; got != tc.wantNew {
				t.Errorf("next request on connection %q, the slow one was on %q: new = %v, want %v", next.conn, r.conn, got, tc.wantNew)
			}
		})
	}
}

// TestTLSShutdownStreams: over TLS, Shutdown waits for the HTTP/2 streams in
// flight (nothing cut when they finish), and at the deadline counts each
// stuck stream of a multiplexed connection as one cut, as with h2c: the
// connection behind the *tls.Conn is tracked and known to be HTTP/2.
func TestTLSShutdownStreams(t *testing.T) {
	const streams = 3
	for _, tc := range []struct {
		name    string
		finish  bool // release the handlers before the deadline
		wantCut int
	}{
		{"streams finish", true, 0},
		{"streams stuck", false, streams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, roots := selfSigned(t)
			started := make(chan struct{}, streams)
			release := make(chan struct{})
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				<-release // ignores r.Context()
				io.WriteString(w, "finished")
			})
			s, base := serveTLS(t, h, server.Options{TLS: cfg, Traffic: &server.Observability{}})
			c, dials := tlsClient(t, roots, true)
			var results []<-chan h2cResult
			for range streams {
				results = append(results, getAsync(t, c, base))
				receive(t, "a handler to start", started)
			}
			if got := dials.Load(); got >= streams {
				t.Fatalf("%d connections dialed for %d streams: not multiplexed", got, streams)
			}
			timeout := time.Second
			if tc.finish {
				timeout = 20 * time.Second
			}
			shutDone := shutdownInBackground(t, s, timeout, 100*time.Millisecond)
			if tc.finish {
				time.Sleep(200 * time.Millisecond)
				select {
				case r := <-shutDone:
					t.Fatalf("Shutdown returned %d, %v while %d streams were in flight", r.cut, r.err, streams)
				default:
				}
				close(release)
			} else {
				defer close(release)
			}
			r := receive(t, "Shutdown to return", shutDone)
			if r.cut != tc.wantCut {
				t.Errorf("Shutdown cut %d, want %d", r.cut, tc.wantCut)
			}
			if tc.finish && r.err != nil {
				t.Errorf("Shutdown error = %v, want nil", r.err)
			}
			if !tc.finish && (!errors.Is(r.err, server.ErrCut) || !errors.Is(r.err, context.DeadlineExceeded)) {
				t.Errorf("Shutdown error = %v, want ErrCut and context.DeadlineExceeded", r.err)
			}
			for _, ch := range results {
				res := receive(t, "a response", ch)
				if gotOK := res.err == nil && res.body == "finished"; gotOK != tc.finish {
					t.Errorf("stream got %d %q, %v; want a whole response: %v", res.status, res.body, res.err, tc.finish)
				}
			}
		})
	}
}

// TestTLSHijackTracked: a connection hijacked over TLS (HTTP/1.1) holds
// Shutdown until its handler closes it, as in cleartext.
func TestTLSHijackTracked(t *testing.T) {
	cfg, roots := selfSigned(t)
	hijacked := make(chan net.Conn, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		hijacked <- conn
	})
	s, base := serveTLS(t, h, server.Options{TLS: cfg, Traffic: &server.Observability{}})
	c, _ := tlsClient(t, roots, false)
	go func() {
		if resp, err := do(t, c, base); err == nil {
			resp.Body.Close()
		}
	}()
	conn := receive(t, "the hijack", hijacked)
	if _, ok := conn.(*tls.Conn); !ok {
		t.Fatalf("hijacked connection is a %T, want *tls.Conn", conn)
	}
	shutDone := shutdownInBackground(t, s, 20*time.Second, time.Second)
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-shutDone:
		t.Fatalf("Shutdown returned %d, %v with a hijacked connection open", r.cut, r.err)
	default:
	}
	conn.Close()
	if r := receive(t, "Shutdown to return", shutDone); r.cut != 0 || r.err != nil {
		t.Errorf("Shutdown() = %d, %v; want 0, nil", r.cut, r.err)
	}
}
