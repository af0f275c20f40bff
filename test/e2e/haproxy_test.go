//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

//go:embed haproxy.cfg.tmpl
var haproxyConfigText string

var haproxyConfig = template.Must(template.New("haproxy.cfg").Parse(haproxyConfigText))

// lbConfig fills haproxy.cfg.tmpl.
type lbConfig struct {
	Socket      string        // admin socket path
	Port        int           // frontend port on 127.0.0.1
	KeepAlive   time.Duration // client-side keep-alive timeout
	HealthCheck bool          // model "health-checked" when true, "endpoint lag" when false
	H2          bool          // HTTP/2 (h2c) on the frontend and to the backends
	Inter       time.Duration // health-check interval
	Slots       []string      // server names in backend "be"
}

// loadBalancer is a running HAProxy and its runtime API.
type loadBalancer struct {
	cfg  lbConfig
	addr string // frontend host:port

	mu   sync.Mutex
	free map[string]bool // slot name -> unused
}

// startHAProxy renders the config into a temp dir, starts haproxy in the
// foreground and waits until its admin socket answers. The process is killed
// when the test ends.
func startHAProxy(t *testing.T, healthCheck, h2 bool, inter time.Duration, slots int) *loadBalancer {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatalf("haproxy not found (apt-get install haproxy): %v", err)
	}
	dir := t.TempDir()
	cfg := lbConfig{
		Socket:      filepath.Join(dir, "admin.sock"),
		Port:        freePort(t),
		KeepAlive:   10 * time.Second,
		HealthCheck: healthCheck,
		H2:          h2,
		Inter:       inter,
	}
	lb := &loadBalancer{cfg: cfg, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)), free: map[string]bool{}}
	for i := 1; i <= slots; i++ {
		name := fmt.Sprintf("s%d", i)
		lb.cfg.Slots = append(lb.cfg.Slots, name)
		lb.free[name] = true
	}
	var buf bytes.Buffer
	if err := haproxyConfig.Execute(&buf, lb.cfg); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	// -db: foreground, no daemon; -W is not used so there is one process to kill.
	cmd := exec.Command(bin, "-db", "-f", cfgPath)
	cmd.SysProcAttr = dieWithTest()
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := lb.cmd("show info"); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited at start: %v\n%s\nconfig:\n%s", waitErr, out.String(), buf.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy admin socket did not answer within 10s:\n%s", out.String())
		}
	}
	return lb
}

// cmd sends one command over the runtime API. The socket is in non-interactive
// mode, so HAProxy closes it after the answer.
func (lb *loadBalancer) cmd(command string) (string, error) {
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "unix", lb.cfg.Socket)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// mustCmd runs a runtime API command that answers with an empty line on
// success; anything else is a test failure.
func (lb *loadBalancer) mustCmd(t *testing.T, command string) {
	t.Helper()
	out, err := lb.cmd(command)
	if err != nil {
		t.Fatalf("haproxy %q: %v", command, err)
	}
	if s := strings.TrimSpace(out); s != "" && !strings.HasPrefix(s, "IP changed") && !strings.HasPrefix(s, "no need to change") && !strings.Contains(s, "port changed") {
		t.Fatalf("haproxy %q: %s", command, s)
	}
}

// add puts inst into a free slot and makes it eligible for traffic. In the
// health-checked model HAProxy still waits for one good check before it
// sends traffic; waitUp polls for that.
func (lb *loadBalancer) add(t *testing.T, inst *instance) {
	t.Helper()
	lb.mu.Lock()
	slot := ""
	for _, s := range lb.cfg.Slots {
		if lb.free[s] {
			slot = s
			lb.free[s] = false
			break
		}
	}
	lb.mu.Unlock()
	if slot == "" {
		t.Fatal("no free haproxy server slot")
	}
	inst.slot = slot
	host, port := splitHostPort(t, inst.httpAddr)
	lb.mustCmd(t, fmt.Sprintf("set server be/%s addr %s port %d", slot, host, port))
	if lb.cfg.HealthCheck {
		_, aport := splitHostPort(t, inst.adminAddr)
		lb.mustCmd(t, fmt.Sprintf("set server be/%s check-port %d", slot, aport))
	}
	lb.mustCmd(t, fmt.Sprintf("set server be/%s state ready", slot))
}

// disable puts inst's slot in maintenance: HAProxy sends it no new request
// (requests already forwarded finish). Used by the endpoint-lag model, and by
// both models to free the slot after the process exited.
func (lb *loadBalancer) disable(t *testing.T, inst *instance) {
	t.Helper()
	lb.mustCmd(t, fmt.Sprintf("set server be/%s state maint", inst.slot))
}

// release returns inst's slot to the pool once it is in maintenance.
func (lb *loadBalancer) release(t *testing.T, inst *instance) {
	t.Helper()
	lb.disable(t, inst)
	lb.mu.Lock()
	lb.free[inst.slot] = true
	lb.mu.Unlock()
}

// serverStates parses "show servers state be" into slot -> column -> value.
func (lb *loadBalancer) serverStates() (map[string]map[string]string, error) {
	out, err := lb.cmd("show servers state be")
	if err != nil {
		return nil, err
	}
	var cols []string
	states := map[string]map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "# "):
			cols = strings.Fields(strings.TrimPrefix(line, "# "))
		case line == "" || cols == nil:
		default:
			f := strings.Fields(line)
			row := map[string]string{}
			for i, c := range cols {
				if i < len(f) {
					row[c] = f[i]
				}
			}
			states[row["srv_name"]] = row
		}
	}
	if cols == nil {
		return nil, fmt.Errorf("unexpected 'show servers state' answer: %q", out)
	}
	return states, nil
}

// waitUp polls the runtime API until inst's slot is UP and not in
// maintenance or drain: srv_op_state 2 (SRV_ST_RUNNING) and no
// srv_admin_state bit but 0x04 (SRV_ADMF_CMAINT, which only remembers the
// "disabled" keyword of the config and stays set).
func (lb *loadBalancer) waitUp(t *testing.T, inst *instance, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := lb.serverStates()
		if err != nil {
			t.Fatal(err)
		}
		admin, _ := strconv.Atoi(st[inst.slot]["srv_admin_state"])
		if st[inst.slot]["srv_op_state"] == "2" && admin&^0x04 == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s (%s) not UP within %v: %v", inst.slot, inst.httpAddr, timeout, st[inst.slot])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessions returns the current sessions (requests being served) on inst's
// slot, column scur of "show stat".
func (lb *loadBalancer) sessions(inst *instance) int {
	out, err := lb.cmd("show stat")
	if err != nil {
		return -1
	}
	var cols []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, ",")
		if strings.HasPrefix(line, "# ") {
			cols = strings.Split(strings.TrimPrefix(line, "# "), ",")
			continue
		}
		if len(f) < 2 || f[0] != "be" || f[1] != inst.slot {
			continue
		}
		for i, c := range cols {
			if c == "scur" && i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
		}
	}
	return -1
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}

// freePort asks the kernel for a free loopback port. HAProxy binds it a
// moment later; the race with other processes is acceptable on a test box.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// dieWithTest makes a child process get SIGKILL when the test binary dies.
// t.Cleanup covers every normal end, but not the panic of -timeout, which
// would otherwise leave HAProxy and kubeskel instances running.
func dieWithTest() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// lockedBuffer is an io.Writer safe for a process's stdout and stderr at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
