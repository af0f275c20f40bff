// Package certs serves a TLS certificate from files and reloads it when the
// files change, without a restart. It is the only package that knows about
// github.com/fsnotify/fsnotify.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options say which files to serve and how to notice that they changed.
type Options struct {
	// CertFile and KeyFile hold the PEM certificate chain and its private
	// key. Both are required.
	CertFile, KeyFile string
	// ClientCAFile, if set, holds PEM CA certificates: every client must
	// then present a certificate that chains to one of them (mutual TLS).
	ClientCAFile string
	// Interval is how often the files are read again, as a fallback to the
	// directory watch. Zero or negative disables polling: only the watch
	// notices changes.
	Interval time.Duration
	// Logger receives reloads and reload failures. Nil discards them.
	Logger *slog.Logger
	// Loaded, if set, is called after every successful load, the first one
	// included, with the serving certificate's expiry time.
	Loaded func(notAfter time.Time)
	// Reloaded, if set, is called after each reload attempt of files whose
	// content changed (not after the first load): err is nil on success.
	Reloaded func(err error)

	// noWatch disables the directory watch (tests of polling alone).
	noWatch bool
}

// ErrClientCA is wrapped by the errors of New and Reload that come from
// the client CA file rather than from the certificate or key.
var ErrClientCA = errors.New("client CA")

// Reloader holds the current certificate (and client CA pool) and replaces
// them when the files change. Its methods are safe for concurrent use.
type Reloader struct {
	o       Options
	current atomic.Pointer[loaded]

	mu       sync.Mutex // serialises Reload
	lastSeen []byte     // the content of the last load attempt

	// afterFile, if set, runs after read has read file i (tests: a swap
	// between two files).
	afterFile func(i int)
}

// loaded is one successfully loaded set of files.
type loaded struct {
	cert     *tls.Certificate
	clientCA *x509.CertPool // nil without mutual TLS
	notAfter time.Time
}

// New loads the files once and returns a Reloader serving them. An error
// here (a missing file, a key that does not match the certificate, a CA
// file without a certificate) names the file; nothing is served.
func New(o Options) (*Reloader, error) {
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("load TLS certificate: both the certificate file and the key file are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{o: o}
	content, err := r.read()
	if err != nil {
		return nil, err
	}
	l, err := r.parse(content)
	if err != nil {
		return nil, err
	}
	r.lastSeen = content
	r.current.Store(l)
	if o.Loaded != nil {
		o.Loaded(l.notAfter)
	}
	return r, nil
}

// NotAfter is the expiry time of the certificate being served.
func (r *Reloader) NotAfter() time.Time { return r.current.Load().notAfter }

// TLSConfig returns a server configuration that presents the current
// certificate on every new handshake and, with a client CA file, requires
// and verifies a client certificate against the current CA pool. Callers
// may set NextProtos and other fields on it; connections already
// established keep the certificate they were set up with.
func (r *Reloader) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.current.Load().cert, nil
		},
	}
	if r.o.ClientCAFile != "" {
		// The CA pool changes with the files, so the verification is ours
		// rather than crypto/tls's, which reads a fixed ClientCAs. It runs
		// on resumed sessions too (VerifyConnection), and follows what
		// crypto/tls does for RequireAndVerifyClientCert.
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = r.verifyClient
	}
	return cfg
}

// verifyClient checks the client's chain against the current CA pool.
func (r *Reloader) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("verify client certificate: none presented")
	}
	opts := x509.VerifyOptions{
		Roots:         r.current.Load().clientCA,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verify client certificate: %w", err)
	}
	return nil
}

// Reload reads the files again and, if their content changed since the last
// attempt, loads them. A set that fails to load is logged, reported to
// Options.Reloaded and returned; the previous certificate keeps being
// served, and the same content is not tried again (it is tried as soon as
// any file changes). Unchanged content is a no-op.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	content, err := r.read()
	if err == nil && bytes.Equal(content, r.lastSeen) {
		return nil
	}
	var l *loaded
	if err == nil {
		l, err = r.parse(content)
		// The files are read one after the other: a swap in between gives
		// a certificate and a key that do not match. Read again while the
		// content keeps changing (a few times), so a swap is not reported
		// as a failure.
		for range 3 {
			if err == nil {
				break
			}
			again, rerr := r.read()
			if rerr != nil || bytes.Equal(again, content) {
				break
			}
			content = again
			l, err = r.parse(content)
		}
		r.lastSeen = content
	} else {
		// A missing file (mid-swap, say) is a failure too, reported once
		// until the files change.
		if r.lastSeen == nil {
			return nil
		}
		r.lastSeen = nil
	}
	if err != nil {
		r.o.Logger.Error("TLS certificate reload failed; still serving the previous certificate",
			"error", err.Error(), "not_after", r.NotAfter().UTC().Format(time.RFC3339))
		if r.o.Reloaded != nil {
			r.o.Reloaded(err)
		}
		return err
	}
	r.current.Store(l)
	r.o.Logger.Info("TLS certificate reloaded", "not_after", l.notAfter.UTC().Format(time.RFC3339),
		"subject", l.cert.Leaf.Subject.String())
	if r.o.Loaded != nil {
		r.o.Loaded(l.notAfter)
	}
	if r.o.Reloaded != nil {
		r.o.Reloaded(nil)
	}
	return nil
}

// Run watches the directories of the files, and polls them every
// Options.Interval if positive, reloading on every change, until ctx is
// done; it then returns nil. If the watch cannot be set up, Run logs it and
// relies on polling; without polling it returns the error at once.
func (r *Reloader) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if !r.o.noWatch {
		w, err := r.watch()
		switch {
		case err != nil && r.o.Interval <= 0:
			return err
		case err != nil:
			r.o.Logger.Warn("cannot watch the TLS files; polling only", "error", err.Error(), "interval", r.o.Interval.String())
		default:
			defer func() {
				if err := w.Close(); err != nil {
					r.o.Logger.Warn("stop watching the TLS files", "error", err.Error())
				}
			}()
			events, errs = w.Events, w.Errors
		}
	}
	var tick <-chan time.Time
	if r.o.Interval > 0 {
		t := time.NewTicker(r.o.Interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			// Any change in the directory: the kubelet's swap of the
			// "..data" symlink shows up as a create of "..data", never as a
			// write to the files, which are symlinks through it.
		case err := <-errs:
			r.o.Logger.Warn("watching the TLS files", "error", err.Error())
			continue
		case <-tick:
		}
		_ = r.Reload() // logged and counted by Reload
	}
}

// watch watches the directories holding the files (not the files: a
// symlink swap replaces them without writing to them).
func (r *Reloader) watch() (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch TLS files: %w", err)
	}
	var dirs []string
	for _, f := range r.files() {
		if d := filepath.Dir(f); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			return nil, errors.Join(fmt.Errorf("watch %s: %w", d, err), w.Close())
		}
	}
	return w, nil
}

func (r *Reloader) files() []string {
	fs := []string{r.o.CertFile, r.o.KeyFile}
	if r.o.ClientCAFile != "" {
		fs = append(fs, r.o.ClientCAFile)
	}
	return fs
}

// read returns the content of every file, each followed by a NUL byte (PEM
// contains none), to compare with the last attempt.
func (r *Reloader) read() ([]byte, error) {
	var all []byte
	for i, f := range r.files() {
		b, err := os.ReadFile(f) //nolint:gosec // G304: the operator's configured paths (APP_TLS_*), read on purpose
		if err != nil {
			if i == 2 {
				return nil, fmt.Errorf("read %w %s: %w", ErrClientCA, f, err)
			}
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		all = append(append(all, b...), 0)
		if r.afterFile != nil {
			r.afterFile(i)
		}
	}
	return all, nil
}

// parse loads the content returned by read.
func (r *Reloader) parse(content []byte) (*loaded, error) {
	parts := bytes.Split(content, []byte{0})
	cert, err := tls.X509KeyPair(parts[0], parts[1])
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair %s, %s: %w", r.o.CertFile, r.o.KeyFile, err)
	}
	// X509KeyPair fills Leaf since Go 1.23.
	l := &loaded{cert: &cert, notAfter: cert.Leaf.NotAfter}
	if r.o.ClientCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(parts[2]) {
			return nil, fmt.Errorf("load %w %s: no PEM certificate found", ErrClientCA, r.o.ClientCAFile)
		}
		l.clientCA = pool
	}
	return l, nil
}
