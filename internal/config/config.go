// Package config loads the service's configuration from APP_* environment
// variables, fills defaults and validates it. It is the only package that
// knows about github.com/kelseyhightower/envconfig.
package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the prefix of every variable the service reads.
const Prefix = "APP"

// Config is the whole configuration of the service. Every field is one
// environment variable: APP_ plus its envconfig tag (HTTPAddr is
// APP_HTTP_ADDR). Fields marked secret never have their value echoed in an
// error.
type Config struct {
	HTTPAddr  string `envconfig:"HTTP_ADDR" default:":8080" desc:"traffic listener address (host:port; :0 picks a free port)"`
	AdminAddr string `envconfig:"ADMIN_ADDR" default:":8081" desc:"admin listener address for /live, /ready and /metrics"`

	PrestopSleep           time.Duration `envconfig:"PRESTOP_SLEEP" default:"0s" desc:"the kubelet's preStop sleep, which runs before SIGTERM inside the same grace period; counted in the shutdown budget only (the chart sets it)"`
	PrestopDelay           time.Duration `envconfig:"PRESTOP_DELAY" default:"5s" desc:"after SIGTERM, keep serving (not ready, Connection: close) this long so load balancers deregister the pod; 0 disables"`
	PrestopQuietPeriod     time.Duration `envconfig:"PRESTOP_QUIET_PERIOD" default:"0s" desc:"end the pre-stop delay early once no request has arrived for this long; 0 disables"`
	DrainConnectionClose   bool          `envconfig:"DRAIN_CONNECTION_CLOSE" default:"true" desc:"during the pre-stop delay, answer with Connection: close (a GOAWAY on HTTP/2) so pooled connections move to other pods; false leaves them open until the shutdown closes them"`
	ShutdownTimeout        time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"20s" desc:"deadline for in-flight requests to complete after the pre-stop delay; the rest are cut"`
	HandlerCancelMargin    time.Duration `envconfig:"HANDLER_CANCEL_MARGIN" default:"1s" desc:"cancel request contexts this long before the shutdown deadline so handlers can return cleanly"`
	TelemetryFlushTimeout  time.Duration `envconfig:"TELEMETRY_FLUSH_TIMEOUT" default:"2s" desc:"deadline for exporting the last spans after the drain"`
	TerminationGracePeriod time.Duration `envconfig:"TERMINATION_GRACE_PERIOD" default:"30s" desc:"the pod's terminationGracePeriodSeconds; the shutdown budget must fit inside it"`

	SidecarReadyURL     string        `envconfig:"SIDECAR_READY_URL" secret:"true" desc:"if set, poll this URL until it answers 200 before reporting ready (e.g. a mesh proxy)"`
	SidecarReadyTimeout time.Duration `envconfig:"SIDECAR_READY_TIMEOUT" default:"60s" desc:"give up start-up (exit 1) if the sidecar is not ready by then"`
	SidecarQuitURL      string        `envconfig:"SIDECAR_QUIT_URL" secret:"true" desc:"if set, POST to this URL after the drain to stop a sidecar (best effort)"`
	SidecarQuitTimeout  time.Duration `envconfig:"SIDECAR_QUIT_TIMEOUT" default:"1s" desc:"deadline for the sidecar quit request"`
	// NativeSidecarShutdown is not waited for by the binary: the kubelet
	// stops native sidecars only after the app has exited, inside the same
	// grace period, so the budget must leave them this much.
	NativeSidecarShutdown time.Duration `envconfig:"NATIVE_SIDECAR_SHUTDOWN" default:"0s" desc:"time the pod's native sidecars get to shut down after the app has exited, inside the same grace period; counted in the shutdown budget only (the chart sets it)"`

	ReadHeaderTimeout time.Duration `envconfig:"READ_HEADER_TIMEOUT" default:"5s" desc:"time allowed to read request headers (slowloris protection)"`
	ReadTimeout       time.Duration `envconfig:"READ_TIMEOUT" default:"0s" desc:"time allowed to read a whole request; 0 means no limit"`
	WriteTimeout      time.Duration `envconfig:"WRITE_TIMEOUT" default:"0s" desc:"time allowed to write a response; 0 means no limit"`
	IdleTimeout       time.Duration `envconfig:"IDLE_TIMEOUT" default:"620s" desc:"keep-alive idle timeout; keep it above every load balancer's idle timeout"`
	MaxHeaderBytes    int           `envconfig:"MAX_HEADER_BYTES" default:"1048576" desc:"maximum size of request headers in bytes"`
	HTTP2             string        `envconfig:"HTTP2" default:"h2c" desc:"h2c: the traffic port also serves cleartext HTTP/2 with prior knowledge (no Upgrade: h2c); off: HTTP/1.1 only"`

	TLSCertFile       string        `envconfig:"TLS_CERT_FILE" desc:"PEM certificate chain: the traffic port serves HTTPS (HTTP/2 and HTTP/1.1 by ALPN, whatever APP_HTTP2 says); set with APP_TLS_KEY_FILE or not at all. The admin port stays plain HTTP"`
	TLSKeyFile        string        `envconfig:"TLS_KEY_FILE" desc:"PEM private key of APP_TLS_CERT_FILE"`
	TLSClientCAFile   string        `envconfig:"TLS_CLIENT_CA_FILE" desc:"PEM CA certificates: if set, clients must present a certificate they signed (mutual TLS); needs APP_TLS_CERT_FILE"`
	TLSReloadInterval time.Duration `envconfig:"TLS_RELOAD_INTERVAL" default:"10s" desc:"also re-read the TLS files this often, besides watching their directories; 0 watches only"`

	SlowMax time.Duration `envconfig:"SLOW_MAX" default:"30s" desc:"cap on the duration the example /slow endpoint sleeps"`

	GRPCAddr                         string        `envconfig:"GRPC_ADDR" default:"" desc:"gRPC listener address (host:port); empty disables the gRPC server"`
	GRPCReflection                   bool          `envconfig:"GRPC_REFLECTION" default:"false" desc:"serve gRPC server reflection (grpcurl, grpcui) on the gRPC port"`
	GRPCKeepaliveMinTime             time.Duration `envconfig:"GRPC_KEEPALIVE_MIN_TIME" default:"10s" desc:"shortest interval between client keepalive pings the gRPC server accepts; faster pingers get GOAWAY too_many_pings"`
	GRPCKeepalivePermitWithoutStream bool          `envconfig:"GRPC_KEEPALIVE_PERMIT_WITHOUT_STREAM" default:"true" desc:"accept client keepalive pings on gRPC connections with no RPC open"`
	GRPCMaxConnectionAge             time.Duration `envconfig:"GRPC_MAX_CONNECTION_AGE" default:"5m" desc:"send GOAWAY to a gRPC connection this long after it opened (±10%), so clients rebalance across pods; 0 disables"`
	GRPCMaxConnectionAgeGrace        time.Duration `envconfig:"GRPC_MAX_CONNECTION_AGE_GRACE" default:"0s" desc:"after that GOAWAY, cut RPCs still open this long later; 0 waits for them without limit"`
	GRPCStreamWorkers                int           `envconfig:"GRPC_STREAM_WORKERS" default:"32" desc:"goroutines kept to run gRPC streams, so an RPC does not grow a fresh goroutine's stack; a stream arriving while all are busy gets its own goroutine; 0 starts one per stream (grpc-go's default); at most 4096"`

	CheckTCP      []string      `envconfig:"CHECK_TCP" desc:"comma-separated host:port dependencies that must accept TCP connections for readiness"`
	CheckHTTP     []string      `envconfig:"CHECK_HTTP" secret:"true" desc:"comma-separated URLs that must answer 2xx for readiness"`
	CheckInterval time.Duration `envconfig:"CHECK_INTERVAL" default:"10s" desc:"how often dependency checks run (in the background)"`
	CheckTimeout  time.Duration `envconfig:"CHECK_TIMEOUT" default:"2s" desc:"timeout of one dependency check"`

	MemoryLimitRatio float64 `envconfig:"MEMORY_LIMIT_RATIO" default:"0.9" desc:"set the Go soft memory limit to this fraction of the cgroup memory limit, in (0, 1]; an explicit GOMEMLIMIT wins"`

	LogFormat  string `envconfig:"LOG_FORMAT" default:"json" desc:"log format: json or text"`
	LogLevel   string `envconfig:"LOG_LEVEL" default:"info" desc:"log level: debug, info, warn or error"`
	RequestLog bool   `envconfig:"REQUEST_LOG" default:"false" desc:"log one line per request (with trace_id and span_id)"`

	Pprof bool `envconfig:"PPROF" default:"false" desc:"serve net/http/pprof under /debug/pprof/ on the admin port (CPU, heap and allocation profiles, execution traces); the admin port must stay off the Service"`
}

// Error is a configuration error. Its message names the variable and the
// expected form; the process exits with code 2 on it.
type Error struct {
	Variable string
	Problem  string
}

func (e *Error) Error() string { return e.Variable + ": " + e.Problem }

// Load reads the configuration from the process environment and validates
// it. The error, if any, is an errors.Join of *Error values, one per problem.
func Load() (Config, error) {
	var c Config
	if err := envconfig.Process(Prefix, &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return c, &Error{Variable: pe.KeyName, Problem: parseProblem(pe)}
		}
		return c, fmt.Errorf("read environment: %w", err)
	}
	// Set but empty means "configured wrongly", not "off": unset to disable.
	var errs []error
	for _, field := range []string{"SidecarReadyURL", "SidecarQuitURL", "TLSCertFile", "TLSKeyFile", "TLSClientCAFile"} {
		name := variableName(field)
		if v, set := os.LookupEnv(name); set && strings.TrimSpace(v) == "" {
			errs = append(errs, &Error{Variable: name, Problem: "is set but empty; unset it to disable"})
		}
	}
	c.CheckTCP, c.CheckHTTP = trimList(c.CheckTCP), trimList(c.CheckHTTP)
	return c, errors.Join(append(errs, c.Validate())...)
}

// trimList trims spaces around list items ("db:5432, cache:6379").
func trimList(items []string) []string {
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

// parseProblem explains a value envconfig could not convert, echoing the value
// only for variables that are not secret.
func parseProblem(pe *envconfig.ParseError) string {
	var form string
	switch pe.TypeName {
	case "time.Duration":
		form = "a Go duration such as 1500ms, 5s or 1m30s"
	case "int":
		form = "a whole number"
	case "bool":
		form = "true or false"
	case "float64":
		form = "a number such as 0.9"
	default:
		form = "a " + pe.TypeName
	}
	if secret(pe.FieldName) {
		return "invalid value; want " + form
	}
	return fmt.Sprintf("invalid value %q; want %s", pe.Value, form)
}

func secret(field string) bool {
	f, ok := reflect.TypeFor[Config]().FieldByName(field)
	return ok && f.Tag.Get("secret") == "true"
}

// MaxDuration caps every duration variable, so that the shutdown budget's
// sum cannot overflow.
const MaxDuration = 24 * time.Hour

// MaxGRPCStreamWorkers caps APP_GRPC_STREAM_WORKERS: every worker is a
// goroutine that keeps the stack its largest RPC grew.
const MaxGRPCStreamWorkers = 4096

// TLS reports whether the traffic port serves TLS.
func (c Config) TLS() bool { return c.TLSCertFile != "" }

// AdminStopTimeout bounds the admin server's graceful stop, the last step of
// the shutdown; it counts in ShutdownBudget.
const AdminStopTimeout = time.Second

// ShutdownBudget is the longest the pod's termination may take, from the
// start of the grace period to the process's exit: the kubelet's preStop
// sleep (before SIGTERM), pre-stop delay, shutdown deadline, telemetry
// flush, the sidecar quit request if configured, and the admin stop; then,
// when APP_NATIVE_SIDECAR_SHUTDOWN is set, the native sidecars' shutdown,
// which the kubelet starts only after the process has exited. Every term is
// at most MaxDuration, so the sum cannot overflow.
func (c Config) ShutdownBudget() time.Duration {
	var b time.Duration
	for _, term := range c.budgetTerms() {
		b += term.d
	}
	return b
}

type budgetTerm struct {
	name string
	d    time.Duration
}

// budgetTerms are the terms of ShutdownBudget, in the order they happen.
func (c Config) budgetTerms() []budgetTerm {
	terms := []budgetTerm{
		{Variable("PrestopSleep"), c.PrestopSleep}, {Variable("PrestopDelay"), c.PrestopDelay},
		{Variable("ShutdownTimeout"), c.ShutdownTimeout}, {Variable("TelemetryFlushTimeout"), c.TelemetryFlushTimeout},
	}
	if c.SidecarQuitURL != "" {
		terms = append(terms, budgetTerm{Variable("SidecarQuitTimeout"), c.SidecarQuitTimeout})
	}
	terms = append(terms, budgetTerm{"admin stop", AdminStopTimeout})
	if c.NativeSidecarShutdown > 0 {
		terms = append(terms, budgetTerm{Variable("NativeSidecarShutdown"), c.NativeSidecarShutdown})
	}
	return terms
}

// BudgetArithmetic shows the sum ShutdownBudget makes and how it compares
// with the grace period, for example "APP_PRESTOP_SLEEP 0s + ... + admin
// stop 1s = 28s, below APP_TERMINATION_GRACE_PERIOD 30s".
func (c Config) BudgetArithmetic() string {
	var parts []string
	for _, term := range c.budgetTerms() {
		parts = append(parts, term.name+" "+term.d.String())
	}
	rel := "below"
	if c.ShutdownBudget() >= c.TerminationGracePeriod {
		rel = "not below"
	}
	return fmt.Sprintf("%s = %s, %s %s %s", strings.Join(parts, " + "), c.ShutdownBudget(), rel, Variable("TerminationGracePeriod"), c.TerminationGracePeriod)
}

// Validate checks single values and the rules between them. It returns all
// problems at once, joined, each an *Error naming its variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, problem string, args ...any) {
		errs = append(errs, &Error{Variable: Variable(field), Problem: fmt.Sprintf(problem, args...)})
	}
	for _, a := range []struct{ field, addr string }{{"HTTPAddr", c.HTTPAddr}, {"AdminAddr", c.AdminAddr}} {
		if _, port, err := net.SplitHostPort(a.addr); err != nil || !validPort(port) {
			bad(a.field, "invalid address %q; want host:port such as :8080 or 127.0.0.1:0", a.addr)
		}
	}
	if c.HTTPAddr == c.AdminAddr && !strings.HasSuffix(c.HTTPAddr, ":0") {
		bad("AdminAddr", "must differ from %s (%s)", Variable("HTTPAddr"), c.HTTPAddr)
	}
	if c.GRPCAddr != "" {
		if _, port, err := net.SplitHostPort(c.GRPCAddr); err != nil || !validPort(port) {
			bad("GRPCAddr", "invalid address %q; want host:port such as :9090 or 127.0.0.1:0, or empty to disable", c.GRPCAddr)
		}
		for _, other := range []string{"HTTPAddr", "AdminAddr"} {
			if addr := map[string]string{"HTTPAddr": c.HTTPAddr, "AdminAddr": c.AdminAddr}[other]; addr == c.GRPCAddr && !strings.HasSuffix(addr, ":0") {
				bad("GRPCAddr", "must differ from %s (%s)", Variable(other), addr)
			}
		}
	}
	nonNegative := map[string]time.Duration{
		"PrestopSleep": c.PrestopSleep, "PrestopDelay": c.PrestopDelay, "PrestopQuietPeriod": c.PrestopQuietPeriod,
		"ReadTimeout": c.ReadTimeout, "WriteTimeout": c.WriteTimeout, "HandlerCancelMargin": c.HandlerCancelMargin,
		"NativeSidecarShutdown": c.NativeSidecarShutdown,
		"TLSReloadInterval":     c.TLSReloadInterval,
		"GRPCMaxConnectionAge":  c.GRPCMaxConnectionAge, "GRPCMaxConnectionAgeGrace": c.GRPCMaxConnectionAgeGrace,
	}
	positive := map[string]time.Duration{
		"ShutdownTimeout": c.ShutdownTimeout, "TelemetryFlushTimeout": c.TelemetryFlushTimeout,
		"TerminationGracePeriod": c.TerminationGracePeriod, "SidecarReadyTimeout": c.SidecarReadyTimeout,
		"SidecarQuitTimeout": c.SidecarQuitTimeout, "ReadHeaderTimeout": c.ReadHeaderTimeout,
		"IdleTimeout": c.IdleTimeout, "SlowMax": c.SlowMax, "CheckInterval": c.CheckInterval, "CheckTimeout": c.CheckTimeout,
		"GRPCKeepaliveMinTime": c.GRPCKeepaliveMinTime,
	}
	for _, field := range sortedKeys(nonNegative) {
		if nonNegative[field] < 0 {
			bad(field, "must not be negative (got %s)", nonNegative[field])
		}
	}
	for _, field := range sortedKeys(positive) {
		if positive[field] <= 0 {
			bad(field, "must be positive (got %s)", positive[field])
		}
	}
	all := map[string]time.Duration{}
	maps.Copy(all, nonNegative)
	maps.Copy(all, positive)
	for _, field := range sortedKeys(all) {
		if all[field] > MaxDuration {
			bad(field, "must be at most 24h (got %s)", all[field])
		}
	}
	if c.HandlerCancelMargin >= c.ShutdownTimeout && c.ShutdownTimeout > 0 {
		bad("HandlerCancelMargin", "must be shorter than %s (%s >= %s)", Variable("ShutdownTimeout"), c.HandlerCancelMargin, c.ShutdownTimeout)
	}
	if c.GRPCStreamWorkers < 0 || c.GRPCStreamWorkers > MaxGRPCStreamWorkers {
		bad("GRPCStreamWorkers", "must be in [0, %d] (got %d)", MaxGRPCStreamWorkers, c.GRPCStreamWorkers)
	}
	if c.MaxHeaderBytes < 4096 {
		bad("MaxHeaderBytes", "must be at least 4096 (got %d)", c.MaxHeaderBytes)
	}
	for _, u := range []struct{ field, raw string }{{"SidecarReadyURL", c.SidecarReadyURL}, {"SidecarQuitURL", c.SidecarQuitURL}} {
		if u.raw != "" && !validURL(u.raw) {
			bad(u.field, "invalid URL; want http(s)://host[:port]/path")
		}
	}
	for _, list := range []struct {
		field string
		items []string
	}{{"CheckTCP", c.CheckTCP}, {"CheckHTTP", c.CheckHTTP}} {
		seen := map[string]bool{}
		for i, item := range list.items {
			if seen[item] {
				bad(list.field, "item %d repeats an earlier item", i+1)
			}
			seen[item] = true
		}
	}
	for i, addr := range c.CheckTCP {
		if _, port, err := net.SplitHostPort(addr); err != nil || !validPort(port) || port == "0" {
			bad("CheckTCP", "item %d %q is not host:port", i+1, addr)
		}
	}
	for i, raw := range c.CheckHTTP {
		if !validURL(raw) {
			bad("CheckHTTP", "item %d is not an http(s) URL", i+1)
		}
	}
	if !slices.Contains([]string{"h2c", "off"}, c.HTTP2) {
		bad("HTTP2", "invalid value %q; want h2c or off", c.HTTP2)
	}
	// TLS: a certificate without its key (or the reverse) is a mistake, not
	// a request for cleartext; so is a client CA without a certificate.
	switch {
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		bad("TLSKeyFile", "must be set with %s (both or neither)", Variable("TLSCertFile"))
	case c.TLSCertFile == "" && c.TLSKeyFile != "":
		bad("TLSCertFile", "must be set with %s (both or neither)", Variable("TLSKeyFile"))
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		bad("TLSClientCAFile", "needs %s and %s (mutual TLS is TLS)", Variable("TLSCertFile"), Variable("TLSKeyFile"))
	}
	if !slices.Contains([]string{"json", "text"}, c.LogFormat) {
		bad("LogFormat", "invalid value %q; want json or text", c.LogFormat)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		bad("LogLevel", "invalid value %q; want debug, info, warn or error", c.LogLevel)
	}
	if !(c.MemoryLimitRatio > 0 && c.MemoryLimitRatio <= 1) { // also catches NaN
		bad("MemoryLimitRatio", "must be in (0, 1] (got %v)", c.MemoryLimitRatio)
	}
	// Strictly below: the process also needs a moment to exit, and the
	// kubelet's SIGKILL at the end of the grace period does not wait.
	if len(errs) == 0 && c.ShutdownBudget() >= c.TerminationGracePeriod {
		bad("TerminationGracePeriod", "shutdown budget does not fit: %s; raise the grace period or shorten the drain", c.BudgetArithmetic())
	}
	return errors.Join(errs...)
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

func validURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func sortedKeys(m map[string]time.Duration) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Variable returns the environment variable of a Config field, or the field
// name itself if there is no such field.
func Variable(field string) string {
	if _, ok := reflect.TypeFor[Config]().FieldByName(field); !ok {
		return field
	}
	return variableName(field)
}

// variableName is the variable of a Config field: APP_ and its envconfig
// tag, which every field has (TestEveryFieldNamesItsVariable), so neither
// envconfig nor this function splits field names into words with regular
// expressions on the start-up path. TestVariableNameMatchesEnvconfig
// checks it against envconfig's own usage output.
func variableName(field string) string {
	f, _ := reflect.TypeFor[Config]().FieldByName(field)
	return Prefix + "_" + f.Tag.Get("envconfig")
}

// Var describes one environment variable the service reads.
type Var struct {
	Name, Field, Type, Default, Description string
}

// Variables lists every variable the service reads, in declaration order.
func Variables() []Var {
	var b strings.Builder
	// envconfig knows how it names fields; ask it rather than repeat its rules.
	const format = `{{range .}}{{usage_key .}}	{{.Name}}	{{usage_type .}}	{{usage_default .}}	{{usage_description .}}
{{end}}`
	if err := envconfig.Usagef(Prefix, &Config{}, &b, format); err != nil {
		return nil // cannot happen: Config is a valid specification
	}
	var vars []Var
	for line := range strings.Lines(b.String()) {
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), "\t", 5)
		if len(f) == 5 {
			vars = append(vars, Var{Name: f[0], Field: f[1], Type: f[2], Default: f[3], Description: f[4]})
		}
	}
	return vars
}

// Usage writes the help text: every variable with its type, default and
// description.
func Usage(w io.Writer) error {
	// Lay the table out in memory, where writes cannot fail, and write it
	// once, so the one error that can happen is returned.
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintln(tw, "VARIABLE\tTYPE\tDEFAULT\tDESCRIPTION")
	for _, v := range Variables() {
		def := v.Default
		if def == "" {
			def = `""`
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, v.Type, def, v.Description)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// serviceLink matches the variables the kubelet injects (pkg/kubelet/envvars)
// for a Service whose name starts with "app" ("app", "app-admin": upper-cased,
// "-" as "_"): NAME_SERVICE_HOST, NAME_SERVICE_PORT, NAME_SERVICE_PORT_PORTNAME,
// NAME_PORT, NAME_PORT_8080_TCP and its _PROTO, _PORT and _ADDR.
// It is compiled only when a variable needs it: most runs have none.
const serviceLink = `^APP(_[A-Z0-9_]*[A-Z0-9])?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9][A-Z0-9_]*[A-Z0-9]|_[A-Z0-9])?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`

// Unknown returns the APP_* variables in environ ("KEY=value" pairs) that the
// service does not read, most likely typos. Kubernetes service-link variables
// are not reported.
func Unknown(environ []string) []string {
	known := map[string]bool{}
	for _, f := range reflect.VisibleFields(reflect.TypeFor[Config]()) {
		known[variableName(f.Name)] = true
	}
	var unknown []string
	var link *regexp.Regexp
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(key, Prefix+"_") || known[key] {
			continue
		}
		if link == nil {
			link = regexp.MustCompile(serviceLink)
		}
		if !link.MatchString(key) {
			unknown = append(unknown, key)
		}
	}
	slices.Sort(unknown)
	return unknown
}
