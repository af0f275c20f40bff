package config_test

import (
	"bufio"
	"errors"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubeskel/kubeskel/internal/config"
)

// cleanEnv unsets every APP_* variable for the duration of the test, so the
// test sees the defaults whatever the environment it runs in. Like
// t.Setenv, it forbids t.Parallel.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, config.Prefix+"_") {
			t.Setenv(key, "") // restores the old value after the test
			os.Unsetenv(key)
		}
	}
}

// setEnv sets every KEY=value of env for the duration of the test.
func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// configErrors returns the *config.Error values in err, which is one
// *config.Error or an errors.Join of them.
func configErrors(t *testing.T, err error) []*config.Error {
	t.Helper()
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var errs []*config.Error
		for _, e := range joined.Unwrap() {
			errs = append(errs, configErrors(t, e)...)
		}
		return errs
	}
	var ce *config.Error
	if errors.As(err, &ce) {
		return []*config.Error{ce}
	}
	return nil
}

func TestLoadDefaults(t *testing.T) {
	cleanEnv(t)
	c, err := config.Load()
	if err != nil {
		t.Fatalf("Load() with no APP_* variables: %v", err)
	}
	want := config.Config{
		HTTPAddr:                         ":8080",
		AdminAddr:                        ":8081",
		PrestopDelay:                     5 * time.Second,
		PrestopQuietPeriod:               0,
		DrainConnectionClose:             true,
		ShutdownTimeout:                  20 * time.Second,
		HandlerCancelMargin:              time.Second,
		TelemetryFlushTimeout:            2 * time.Second,
		TerminationGracePeriod:           30 * time.Second,
		SidecarReadyTimeout:              60 * time.Second,
		SidecarQuitTimeout:               time.Second,
		ReadHeaderTimeout:                5 * time.Second,
		IdleTimeout:                      620 * time.Second,
		MaxHeaderBytes:                   1 << 20,
		HTTP2:                            "h2c",
		TLSReloadInterval:                10 * time.Second,
		SlowMax:                          30 * time.Second,
		GRPCKeepaliveMinTime:             10 * time.Second,
		GRPCKeepalivePermitWithoutStream: true,
		GRPCMaxConnectionAge:             5 * time.Minute,
		GRPCStreamWorkers:                32,
		CheckInterval:                    10 * time.Second,
		CheckTimeout:                     2 * time.Second,
		MemoryLimitRatio:                 0.9,
		LogFormat:                        "json",
		LogLevel:                         "info",
		RequestLog:                       false,
	}
	// nil and empty slices are both "no checks".
	if len(c.CheckTCP) != 0 || len(c.CheckHTTP) != 0 {
		t.Errorf("CheckTCP = %q, CheckHTTP = %q; want both empty", c.CheckTCP, c.CheckHTTP)
	}
	c.CheckTCP, c.CheckHTTP = nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load() =\n%+v\nwant\n%+v", c, want)
	}
	// 5s + 20s + 2s + 1s admin stop
	if got, want := c.ShutdownBudget(), 28*time.Second; got != want {
		t.Errorf("ShutdownBudget() = %s, want %s", got, want)
	}
}

func TestLoadValues(t *testing.T) {
	cleanEnv(t)
	setEnv(t, map[string]string{
		"APP_HTTP_ADDR":                "127.0.0.1:0",
		"APP_ADMIN_ADDR":               "127.0.0.1:0", // both :0 is allowed
		"APP_PRESTOP_DELAY":            "1500ms",
		"APP_SHUTDOWN_TIMEOUT":         "1m30s",
		"APP_CHECK_TCP":                "db:5432,cache:6379",
		"APP_CHECK_HTTP":               "http://a/healthz,https://b:8443/",
		"APP_REQUEST_LOG":              "true",
		"APP_MAX_HEADER_BYTES":         "8192",
		"APP_LOG_FORMAT":               "text",
		"APP_LOG_LEVEL":                "debug",
		"APP_SIDECAR_QUIT_URL":         "http://127.0.0.1:15020/quitquitquit",
		"APP_TERMINATION_GRACE_PERIOD": "2m",
		"APP_HTTP2":                    "off",
	})
	c, err := config.Load()
	if err != nil {
		t.Fatalf("Load(): %v", err)
	}
	if got, want := c.PrestopDelay, 1500*time.Millisecond; got != want {
		t.Errorf("PrestopDelay = %s, want %s", got, want)
	}
	if got, want := c.ShutdownTimeout, 90*time.Second; got != want {
		t.Errorf("ShutdownTimeout = %s, want %s", got, want)
	}
	if got, want := c.CheckTCP, []string{"db:5432", "cache:6379"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CheckTCP = %q, want %q", got, want)
	}
	if got, want := c.CheckHTTP, []string{"http://a/healthz", "https://b:8443/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CheckHTTP = %q, want %q", got, want)
	}
	if got, want := c.HTTP2, "off"; got != want {
		t.Errorf("HTTP2 = %q, want %q", got, want)
	}
	if !c.RequestLog {
		t.Error("RequestLog = false, want true")
	}
	if got, want := c.MaxHeaderBytes, 8192; got != want {
		t.Errorf("MaxHeaderBytes = %d, want %d", got, want)
	}
	// 1.5s + 90s + 2s + 1s (quit URL set) + 1s admin stop
	if got, want := c.ShutdownBudget(), 95500*time.Millisecond; got != want {
		t.Errorf("ShutdownBudget() = %s, want %s", got, want)
	}
}

func TestLoadRejectsBadValues(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		variable string
		contains []string // the expected form, and the value when it is not secret
	}{
		{"duration word", map[string]string{"APP_SHUTDOWN_TIMEOUT": "five"}, "APP_SHUTDOWN_TIMEOUT", []string{`"five"`, "Go duration"}},
		{"duration without unit", map[string]string{"APP_PRESTOP_DELAY": "5"}, "APP_PRESTOP_DELAY", []string{`"5"`, "Go duration"}},
		{"duration empty", map[string]string{"APP_IDLE_TIMEOUT": ""}, "APP_IDLE_TIMEOUT", []string{"Go duration"}},
		{"negative prestop delay", map[string]string{"APP_PRESTOP_DELAY": "-1s"}, "APP_PRESTOP_DELAY", []string{"negative", "-1s"}},
		{"negative quiet period", map[string]string{"APP_PRESTOP_QUIET_PERIOD": "-1ms"}, "APP_PRESTOP_QUIET_PERIOD", []string{"negative"}},
		{"negative read timeout", map[string]string{"APP_READ_TIMEOUT": "-2s"}, "APP_READ_TIMEOUT", []string{"negative"}},
		{"negative write timeout", map[string]string{"APP_WRITE_TIMEOUT": "-2s"}, "APP_WRITE_TIMEOUT", []string{"negative"}},
		{"negative cancel margin", map[string]string{"APP_HANDLER_CANCEL_MARGIN": "-1s"}, "APP_HANDLER_CANCEL_MARGIN", []string{"negative"}},
		{"negative native sidecar shutdown", map[string]string{"APP_NATIVE_SIDECAR_SHUTDOWN": "-1s"}, "APP_NATIVE_SIDECAR_SHUTDOWN", []string{"negative"}},
		{"zero shutdown timeout", map[string]string{"APP_SHUTDOWN_TIMEOUT": "0s"}, "APP_SHUTDOWN_TIMEOUT", []string{"positive"}},
		{"negative flush timeout", map[string]string{"APP_TELEMETRY_FLUSH_TIMEOUT": "-1s"}, "APP_TELEMETRY_FLUSH_TIMEOUT", []string{"positive"}},
		{"zero grace period", map[string]string{"APP_TERMINATION_GRACE_PERIOD": "0s"}, "APP_TERMINATION_GRACE_PERIOD", []string{"positive"}},
		{"zero sidecar ready timeout", map[string]string{"APP_SIDECAR_READY_TIMEOUT": "0s"}, "APP_SIDECAR_READY_TIMEOUT", []string{"positive"}},
		{"zero sidecar quit timeout", map[string]string{"APP_SIDECAR_QUIT_TIMEOUT": "0s"}, "APP_SIDECAR_QUIT_TIMEOUT", []string{"positive"}},
		{"zero read header timeout", map[string]string{"APP_READ_HEADER_TIMEOUT": "0s"}, "APP_READ_HEADER_TIMEOUT", []string{"positive"}},
		{"zero idle timeout", map[string]string{"APP_IDLE_TIMEOUT": "0s"}, "APP_IDLE_TIMEOUT", []string{"positive"}},
		{"zero slow max", map[string]string{"APP_SLOW_MAX": "0s"}, "APP_SLOW_MAX", []string{"positive"}},
		{"zero check interval", map[string]string{"APP_CHECK_INTERVAL": "0s"}, "APP_CHECK_INTERVAL", []string{"positive"}},
		{"negative check timeout", map[string]string{"APP_CHECK_TIMEOUT": "-1s"}, "APP_CHECK_TIMEOUT", []string{"positive"}},
		{"addr without port", map[string]string{"APP_HTTP_ADDR": "localhost"}, "APP_HTTP_ADDR", []string{`"localhost"`, "host:port"}},
		{"addr port 70000", map[string]string{"APP_HTTP_ADDR": ":70000"}, "APP_HTTP_ADDR", []string{`":70000"`, "host:port"}},
		{"addr negative port", map[string]string{"APP_ADMIN_ADDR": ":-1"}, "APP_ADMIN_ADDR", []string{`":-1"`, "host:port"}},
		{"addr named port", map[string]string{"APP_ADMIN_ADDR": ":http"}, "APP_ADMIN_ADDR", []string{"host:port"}},
		{"same addr twice", map[string]string{"APP_HTTP_ADDR": ":9000", "APP_ADMIN_ADDR": ":9000"}, "APP_ADMIN_ADDR", []string{"must differ", "APP_HTTP_ADDR"}},
		{"bad bool", map[string]string{"APP_REQUEST_LOG": "yes please"}, "APP_REQUEST_LOG", []string{`"yes please"`, "true or false"}},
		{"bad int", map[string]string{"APP_MAX_HEADER_BYTES": "1MiB"}, "APP_MAX_HEADER_BYTES", []string{`"1MiB"`, "whole number"}},
		{"small int", map[string]string{"APP_MAX_HEADER_BYTES": "100"}, "APP_MAX_HEADER_BYTES", []string{"at least 4096", "100"}},
		{"log format", map[string]string{"APP_LOG_FORMAT": "xml"}, "APP_LOG_FORMAT", []string{`"xml"`, "json or text"}},
		{"http2", map[string]string{"APP_HTTP2": "h2"}, "APP_HTTP2", []string{`"h2"`, "h2c or off"}},
		{"grpc addr without port", map[string]string{"APP_GRPC_ADDR": "localhost"}, "APP_GRPC_ADDR", []string{`"localhost"`, "host:port"}},
		{"grpc addr same as http", map[string]string{"APP_HTTP_ADDR": ":9000", "APP_GRPC_ADDR": ":9000"}, "APP_GRPC_ADDR", []string{"must differ", "APP_HTTP_ADDR"}},
		{"grpc addr same as admin", map[string]string{"APP_GRPC_ADDR": ":8081"}, "APP_GRPC_ADDR", []string{"must differ", "APP_ADMIN_ADDR"}},
		{"grpc keepalive min time zero", map[string]string{"APP_GRPC_KEEPALIVE_MIN_TIME": "0s"}, "APP_GRPC_KEEPALIVE_MIN_TIME", []string{"positive"}},
		{"grpc max connection age negative", map[string]string{"APP_GRPC_MAX_CONNECTION_AGE": "-1m"}, "APP_GRPC_MAX_CONNECTION_AGE", []string{"negative"}},
		{"grpc max connection age grace negative", map[string]string{"APP_GRPC_MAX_CONNECTION_AGE_GRACE": "-1s"}, "APP_GRPC_MAX_CONNECTION_AGE_GRACE", []string{"negative"}},
		{"grpc stream workers negative", map[string]string{"APP_GRPC_STREAM_WORKERS": "-1"}, "APP_GRPC_STREAM_WORKERS", []string{"[0, 4096]", "-1"}},
		{"grpc stream workers too many", map[string]string{"APP_GRPC_STREAM_WORKERS": "100000"}, "APP_GRPC_STREAM_WORKERS", []string{"[0, 4096]", "100000"}},
		{"grpc stream workers not a number", map[string]string{"APP_GRPC_STREAM_WORKERS": "many"}, "APP_GRPC_STREAM_WORKERS", []string{`"many"`, "whole number"}},
		{"grpc reflection", map[string]string{"APP_GRPC_REFLECTION": "on"}, "APP_GRPC_REFLECTION", []string{`"on"`, "true or false"}},
		{"http2 empty", map[string]string{"APP_HTTP2": ""}, "APP_HTTP2", []string{`""`, "h2c or off"}},
		{"log level", map[string]string{"APP_LOG_LEVEL": "verbose"}, "APP_LOG_LEVEL", []string{`"verbose"`, "debug, info, warn or error"}},
		{"log level case", map[string]string{"APP_LOG_LEVEL": "INFO"}, "APP_LOG_LEVEL", []string{`"INFO"`}},
		{"sidecar ready URL scheme", map[string]string{"APP_SIDECAR_READY_URL": "ftp://proxy/ready"}, "APP_SIDECAR_READY_URL", []string{"http(s)://"}},
		{"sidecar ready URL no host", map[string]string{"APP_SIDECAR_READY_URL": "http:///ready"}, "APP_SIDECAR_READY_URL", []string{"http(s)://"}},
		{"sidecar quit URL relative", map[string]string{"APP_SIDECAR_QUIT_URL": "/quitquitquit"}, "APP_SIDECAR_QUIT_URL", []string{"http(s)://"}},
		{"sidecar ready URL set but empty", map[string]string{"APP_SIDECAR_READY_URL": ""}, "APP_SIDECAR_READY_URL", []string{"set but empty"}},
		{"sidecar quit URL set but empty", map[string]string{"APP_SIDECAR_QUIT_URL": ""}, "APP_SIDECAR_QUIT_URL", []string{"set but empty"}},
		{"check TCP without port", map[string]string{"APP_CHECK_TCP": "db:5432,cache"}, "APP_CHECK_TCP", []string{"item 2", `"cache"`, "host:port"}},
		{"check TCP port 0", map[string]string{"APP_CHECK_TCP": "db:0"}, "APP_CHECK_TCP", []string{"item 1", `"db:0"`}},
		{"check TCP port 70000", map[string]string{"APP_CHECK_TCP": "db:70000"}, "APP_CHECK_TCP", []string{"item 1"}},
		{"check TCP trailing comma", map[string]string{"APP_CHECK_TCP": "db:5432,"}, "APP_CHECK_TCP", []string{"item 2"}},
		{"check HTTP scheme", map[string]string{"APP_CHECK_HTTP": "http://a/ok,tcp://b:1"}, "APP_CHECK_HTTP", []string{"item 2", "http(s) URL"}},
		{"memory ratio zero", map[string]string{"APP_MEMORY_LIMIT_RATIO": "0"}, "APP_MEMORY_LIMIT_RATIO", []string{"(0, 1]", "0"}},
		{"memory ratio above one", map[string]string{"APP_MEMORY_LIMIT_RATIO": "1.01"}, "APP_MEMORY_LIMIT_RATIO", []string{"(0, 1]", "1.01"}},
		{"memory ratio NaN", map[string]string{"APP_MEMORY_LIMIT_RATIO": "NaN"}, "APP_MEMORY_LIMIT_RATIO", []string{"(0, 1]", "NaN"}},
		{"memory ratio word", map[string]string{"APP_MEMORY_LIMIT_RATIO": "most"}, "APP_MEMORY_LIMIT_RATIO", []string{`"most"`, "a number such as 0.9"}},
		{"TLS cert without key", map[string]string{"APP_TLS_CERT_FILE": "/tls/tls.crt"}, "APP_TLS_KEY_FILE", []string{"APP_TLS_CERT_FILE", "both or neither"}},
		{"TLS key without cert", map[string]string{"APP_TLS_KEY_FILE": "/tls/tls.key"}, "APP_TLS_CERT_FILE", []string{"APP_TLS_KEY_FILE", "both or neither"}},
		{"TLS client CA without cert", map[string]string{"APP_TLS_CLIENT_CA_FILE": "/tls/ca.crt"}, "APP_TLS_CLIENT_CA_FILE", []string{"APP_TLS_CERT_FILE"}},
		{"TLS cert set but empty", map[string]string{"APP_TLS_CERT_FILE": "", "APP_TLS_KEY_FILE": ""}, "APP_TLS_CERT_FILE", []string{"set but empty"}},
		{"negative TLS reload interval", map[string]string{"APP_TLS_RELOAD_INTERVAL": "-1s"}, "APP_TLS_RELOAD_INTERVAL", []string{"negative"}},
		{"cancel margin equals shutdown timeout", map[string]string{"APP_HANDLER_CANCEL_MARGIN": "20s"}, "APP_HANDLER_CANCEL_MARGIN", []string{"shorter than APP_SHUTDOWN_TIMEOUT", "20s >= 20s"}},
		{"cancel margin above shutdown timeout", map[string]string{"APP_SHUTDOWN_TIMEOUT": "2s", "APP_HANDLER_CANCEL_MARGIN": "3s"}, "APP_HANDLER_CANCEL_MARGIN", []string{"3s >= 2s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			setEnv(t, tt.env)
			_, err := config.Load()
			if err == nil {
				t.Fatalf("Load() with %v = nil error, want an error naming %s", tt.env, tt.variable)
			}
			errs := configErrors(t, err)
			if len(errs) == 0 {
				t.Fatalf("Load() error %q (%T) holds no *config.Error", err, err)
			}
			var found *config.Error
			for _, e := range errs {
				if e.Variable == tt.variable {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("Load() error %q does not name %s", err, tt.variable)
			}
			if !strings.HasPrefix(found.Error(), tt.variable+": ") {
				t.Errorf("error %q does not start with %q", found.Error(), tt.variable+": ")
			}
			for _, s := range tt.contains {
				if !strings.Contains(found.Error(), s) {
					t.Errorf("error %q does not contain %q", found.Error(), s)
				}
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	cleanEnv(t)
	setEnv(t, map[string]string{
		"APP_HTTP_ADDR":     "nope",
		"APP_LOG_FORMAT":    "xml",
		"APP_PRESTOP_DELAY": "-1s",
	})
	_, err := config.Load()
	var got []string
	for _, e := range configErrors(t, err) {
		got = append(got, e.Variable)
	}
	want := []string{"APP_HTTP_ADDR", "APP_PRESTOP_DELAY", "APP_LOG_FORMAT"}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("Load() error names %q, want it to name %s too (error: %v)", got, w, err)
		}
	}
}

func TestSecretValuesNeverEchoed(t *testing.T) {
	const secret = "hunter2-s3cr3t"
	tests := []struct {
		name, variable, value string
	}{
		{"ready URL bad scheme", "APP_SIDECAR_READY_URL", "ftp://user:" + secret + "@proxy/ready"},
		{"ready URL no host", "APP_SIDECAR_READY_URL", "http://" + "/" + secret},
		{"quit URL unparsable", "APP_SIDECAR_QUIT_URL", "http://user:" + secret + "@[::1/quit"},
		{"quit URL relative", "APP_SIDECAR_QUIT_URL", "/quit?token=" + secret},
		{"check HTTP bad item", "APP_CHECK_HTTP", "https://ok.example/,gopher://user:" + secret + "@db/"},
		{"check HTTP unparsable item", "APP_CHECK_HTTP", "http://a%zz/" + secret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			t.Setenv(tt.variable, tt.value)
			_, err := config.Load()
			if err == nil {
				t.Fatalf("Load() with %s=%q: nil error, want one", tt.variable, tt.value)
			}
			if !strings.Contains(err.Error(), tt.variable) {
				t.Errorf("error %q does not name %s", err, tt.variable)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q echoes the secret value of %s", err, tt.variable)
			}
		})
	}
}

func TestBudgetRule(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		wantErr  bool
		contains []string
	}{
		{
			name:    "defaults fit",
			env:     map[string]string{},
			wantErr: false,
		},
		{
			name:    "just below the grace period",
			env:     map[string]string{"APP_TERMINATION_GRACE_PERIOD": "28001ms"},
			wantErr: false,
		},
		{
			name:     "the admin stop counts",
			env:      map[string]string{"APP_TERMINATION_GRACE_PERIOD": "27500ms"},
			wantErr:  true,
			contains: []string{"admin stop 1s", "= 28s", "not below APP_TERMINATION_GRACE_PERIOD 27.5s"},
		},
		{
			name:     "equal to the grace period",
			env:      map[string]string{"APP_TERMINATION_GRACE_PERIOD": "28s"},
			wantErr:  true,
			contains: []string{"APP_PRESTOP_DELAY 5s", "APP_SHUTDOWN_TIMEOUT 20s", "APP_TELEMETRY_FLUSH_TIMEOUT 2s", "admin stop 1s", "= 28s", "not below APP_TERMINATION_GRACE_PERIOD 28s"},
		},
		{
			name:     "over the grace period",
			env:      map[string]string{"APP_PRESTOP_DELAY": "10s", "APP_SHUTDOWN_TIMEOUT": "25s"},
			wantErr:  true,
			contains: []string{"APP_PRESTOP_DELAY 10s", "APP_SHUTDOWN_TIMEOUT 25s", "APP_TELEMETRY_FLUSH_TIMEOUT 2s", "= 38s", "not below APP_TERMINATION_GRACE_PERIOD 30s"},
		},
		{
			name:    "the kubelet's preStop sleep counts",
			env:     map[string]string{"APP_PRESTOP_SLEEP": "5s", "APP_PRESTOP_DELAY": "0s"},
			wantErr: false,
		},
		{
			name:     "the kubelet's preStop sleep counts on top of the delay",
			env:      map[string]string{"APP_PRESTOP_SLEEP": "3s"},
			wantErr:  true,
			contains: []string{"APP_PRESTOP_SLEEP 3s", "APP_PRESTOP_DELAY 5s", "= 31s", "not below APP_TERMINATION_GRACE_PERIOD 30s"},
		},
		{
			name: "quit timeout counts when the quit URL is set",
			env: map[string]string{
				"APP_TERMINATION_GRACE_PERIOD": "28s",
				"APP_PRESTOP_DELAY":            "4s",
				"APP_SIDECAR_QUIT_URL":         "http://127.0.0.1:15020/quitquitquit",
				"APP_SIDECAR_QUIT_TIMEOUT":     "1s",
			},
			wantErr:  true,
			contains: []string{"APP_SIDECAR_QUIT_TIMEOUT 1s", "= 28s", "not below APP_TERMINATION_GRACE_PERIOD 28s"},
		},
		{
			name:     "native sidecars' shutdown counts after the admin stop",
			env:      map[string]string{"APP_TERMINATION_GRACE_PERIOD": "30s", "APP_NATIVE_SIDECAR_SHUTDOWN": "2s"},
			wantErr:  true,
			contains: []string{"admin stop 1s + APP_NATIVE_SIDECAR_SHUTDOWN 2s = 30s", "not below APP_TERMINATION_GRACE_PERIOD 30s"},
		},
		{
			name:    "native sidecars' shutdown within the grace period",
			env:     map[string]string{"APP_TERMINATION_GRACE_PERIOD": "31s", "APP_NATIVE_SIDECAR_SHUTDOWN": "2s"},
			wantErr: false,
		},
		{
			name:    "quit timeout ignored without the quit URL",
			env:     map[string]string{"APP_TERMINATION_GRACE_PERIOD": "29s", "APP_SIDECAR_QUIT_TIMEOUT": "10s"},
			wantErr: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			setEnv(t, tt.env)
			_, err := config.Load()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("Load() error = %v, want error: %t", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			errs := configErrors(t, err)
			if got, want := len(errs), 1; got != want {
				t.Fatalf("Load() gave %d errors (%v), want %d", got, err, want)
			}
			if got, want := errs[0].Variable, "APP_TERMINATION_GRACE_PERIOD"; got != want {
				t.Errorf("Variable = %q, want %q", got, want)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "quitquitquit") {
				t.Errorf("error %q echoes the secret quit URL", err)
			}
		})
	}
}

// contractVariables reads the variable table of docs/contract.md.
func contractVariables(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../docs/contract.md")
	if err != nil {
		t.Fatalf("open contract: %v", err)
	}
	defer f.Close()
	var names []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		cells := strings.Split(s.Text(), "|")
		if len(cells) >= 3 && strings.HasPrefix(strings.TrimSpace(cells[1]), "APP_") {
			names = append(names, strings.TrimSpace(cells[1]))
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("read contract: %v", err)
	}
	if len(names) == 0 {
		t.Fatal("no APP_ variables found in docs/contract.md")
	}
	return names
}

func TestVariablesMatchContract(t *testing.T) {
	want := contractVariables(t)
	var got []string
	for _, v := range config.Variables() {
		got = append(got, v.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Variables() names =\n%q\ncontract lists\n%q", got, want)
	}
	if got, want := len(want), 42; got != want {
		t.Errorf("contract lists %d variables, want %d", got, want)
	}
}

func TestVariable(t *testing.T) {
	tests := []struct{ field, want string }{
		{"HTTPAddr", "APP_HTTP_ADDR"},
		{"SidecarReadyURL", "APP_SIDECAR_READY_URL"},
		{"CheckTCP", "APP_CHECK_TCP"},
		{"TerminationGracePeriod", "APP_TERMINATION_GRACE_PERIOD"},
		{"HTTP2", "APP_HTTP2"},
		{"NoSuchField", "NoSuchField"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			if got := config.Variable(tt.field); got != tt.want {
				t.Errorf("Variable(%q) = %q, want %q", tt.field, got, tt.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	var b strings.Builder
	if err := config.Usage(&b); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := contractVariables(t)
	if got, want := len(lines), len(want)+1; got != want {
		t.Fatalf("Usage wrote %d lines, want %d (header and one per variable):\n%s", got, want, b.String())
	}
	for i, name := range want {
		line := lines[i+1]
		if got := strings.Fields(line)[0]; got != name {
			t.Errorf("line %d starts with %q, want %q", i+2, got, name)
		}
	}
	for _, line := range lines {
		if strings.HasPrefix(line, "APP_SHUTDOWN_TIMEOUT ") && !strings.Contains(line, "20s") {
			t.Errorf("usage line %q does not show the default 20s", line)
		}
	}
}

// serviceLinks are the variables Kubernetes injects into every pod for a
// Service named "app" in the same namespace.
var serviceLinks = map[string]string{
	"APP_PORT":                       "tcp://10.0.0.1:8080",
	"APP_PORT_8080_TCP":              "tcp://10.0.0.1:8080",
	"APP_PORT_8080_TCP_ADDR":         "10.0.0.1",
	"APP_PORT_8080_TCP_PORT":         "8080",
	"APP_PORT_8080_TCP_PROTO":        "tcp",
	"APP_PORT_53_UDP_PROTO":          "udp",
	"APP_SERVICE_HOST":               "10.0.0.1",
	"APP_SERVICE_PORT":               "8080",
	"APP_SERVICE_PORT_HTTP":          "8080",
	"APP_SERVICE_PORT_ADMIN_METRICS": "8081",
}

func TestUnknown(t *testing.T) {
	var environ []string
	for k, v := range serviceLinks {
		environ = append(environ, k+"="+v)
	}
	environ = append(environ,
		"APP_HTTP_ADDR=:8080",      // known
		"APP_LOG_LEVEL=debug",      // known
		"APP_SHUTDOWN_TIMOUT=10s",  // typo
		"APP_LOGLEVEL=debug",       // typo
		"APP_PORTS=8080",           // not a service link
		"APP_PORT_8080_TCP_HOST=x", // not a service link
		"HOME=/root",               // not ours
		"OTEL_SERVICE_NAME=x",      // not ours
		"APPLE=1",                  // no APP_ prefix
		"APP_EMPTY=",
	)
	got := config.Unknown(environ)
	want := []string{"APP_EMPTY", "APP_LOGLEVEL", "APP_PORTS", "APP_PORT_8080_TCP_HOST", "APP_SHUTDOWN_TIMOUT"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Unknown() = %q, want %q", got, want)
	}
	if got := config.Unknown(nil); len(got) != 0 {
		t.Errorf("Unknown(nil) = %q, want none", got)
	}
}

func TestLoadWithServiceLinks(t *testing.T) {
	cleanEnv(t)
	setEnv(t, serviceLinks)
	c, err := config.Load()
	if err != nil {
		t.Fatalf("Load() with Kubernetes service-link variables: %v", err)
	}
	if got, want := c.HTTPAddr, ":8080"; got != want {
		t.Errorf("HTTPAddr = %q, want %q", got, want)
	}
	if got := config.Unknown(os.Environ()); len(got) != 0 {
		t.Errorf("Unknown(os.Environ()) = %q, want none for service links", got)
	}
}

func TestErrorMessage(t *testing.T) {
	e := &config.Error{Variable: "APP_X", Problem: "must be positive"}
	if got, want := e.Error(), "APP_X: must be positive"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestVariableNameMatchesEnvconfig: the fast name rule used on the start-up
// path must name every field exactly as envconfig does.
func TestVariableNameMatchesEnvconfig(t *testing.T) {
	vars := config.Variables()
	if len(vars) == 0 {
		t.Fatal("no variables")
	}
	for _, v := range vars {
		if got := config.Variable(v.Field); got != v.Name {
			t.Errorf("Variable(%q) = %q, envconfig says %q", v.Field, got, v.Name)
		}
	}
	if got := config.Variable("NoSuchField"); got != "NoSuchField" {
		t.Errorf("Variable of an unknown field = %q, want it unchanged", got)
	}
}

// TestEveryFieldNamesItsVariable: variableName relies on every field
// carrying its name, upper case, words joined by "_".
func TestEveryFieldNamesItsVariable(t *testing.T) {
	valid := regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)
	for _, f := range reflect.VisibleFields(reflect.TypeFor[config.Config]()) {
		if key := f.Tag.Get("envconfig"); !valid.MatchString(key) {
			t.Errorf("field %s: envconfig tag %q, want its variable name without APP_ (upper case, words joined by _)", f.Name, key)
		}
		if f.Tag.Get("split_words") != "" {
			t.Errorf("field %s: split_words makes envconfig split the name with regular expressions at start-up; name it in the envconfig tag", f.Name)
		}
	}
}

// TestDurationsCapped checks that no duration can exceed config.MaxDuration,
// so the budget's sum cannot overflow and pass the rule by wrapping round.
func TestDurationsCapped(t *testing.T) {
	tests := []struct {
		name      string
		env       map[string]string
		variables []string
	}{
		{"sum would overflow", map[string]string{"APP_PRESTOP_DELAY": "2000000h", "APP_SHUTDOWN_TIMEOUT": "2000000h"},
			[]string{"APP_PRESTOP_DELAY", "APP_SHUTDOWN_TIMEOUT"}},
		{"just over the cap", map[string]string{"APP_IDLE_TIMEOUT": "24h0m1s"}, []string{"APP_IDLE_TIMEOUT"}},
		{"preStop sleep", map[string]string{"APP_PRESTOP_SLEEP": "25h"}, []string{"APP_PRESTOP_SLEEP"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cleanEnv(t)
			setEnv(t, tt.env)
			_, err := config.Load()
			if err == nil {
				t.Fatal("Load() = nil error, want the cap exceeded")
			}
			var got []string
			for _, e := range configErrors(t, err) {
				got = append(got, e.Variable)
				if !strings.Contains(e.Problem, "at most 24h") {
					t.Errorf("%s: problem %q does not name the cap", e.Variable, e.Problem)
				}
			}
			if !reflect.DeepEqual(got, tt.variables) {
				t.Errorf("errors name %q, want %q (%v)", got, tt.variables, err)
			}
		})
	}
	t.Run("the cap itself is allowed", func(t *testing.T) {
		cleanEnv(t)
		setEnv(t, map[string]string{"APP_IDLE_TIMEOUT": "24h"})
		if _, err := config.Load(); err != nil {
			t.Errorf("Load() with APP_IDLE_TIMEOUT=24h: %v", err)
		}
	})
}

// TestUnknownServiceLinks checks that the variables Kubernetes injects for
// any Service whose name starts with "app" (app, app-admin, app-v2-http, as
// pkg/kubelet/envvars builds them: name upper-cased, "-" as "_") are not
// reported as typos, while look-alikes are.
func TestUnknownServiceLinks(t *testing.T) {
	tests := []struct {
		name    string
		unknown bool
	}{
		{"APP_ADMIN_SERVICE_HOST", false},
		{"APP_ADMIN_SERVICE_PORT", false},
		{"APP_ADMIN_SERVICE_PORT_ADMIN", false},
		{"APP_ADMIN_SERVICE_PORT_HTTP_METRICS", false},
		{"APP_ADMIN_PORT", false},
		{"APP_ADMIN_PORT_8081_TCP", false},
		{"APP_ADMIN_PORT_8081_TCP_ADDR", false},
		{"APP_ADMIN_PORT_8081_TCP_PORT", false},
		{"APP_ADMIN_PORT_8081_TCP_PROTO", false},
		{"APP_V2_HTTP_PORT_53_UDP", false},
		{"APP_V2_HTTP_PORT_9000_SCTP_ADDR", false},
		{"APP_SERVICE_HOST", false},
		{"APP_PORT_8080_TCP", false},
		{"APP_ADMIN_PORT_8081_TCP_HOST", true}, // no such suffix
		{"APP_ADMIN_PORT_8081_HTTP", true},     // not a protocol
		{"APP_ADMIN_PORT_X_TCP", true},         // not a port number
		{"APP_ADMIN_SERVICE_ADDR", true},
		{"APP_ADMIN_PORTS", true},
		{"APP__PORT", true},
		{"APP_ADMIN_SERVICE_HOST_", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := len(config.Unknown([]string{tt.name + "=1"})) == 1
			if got != tt.unknown {
				t.Errorf("Unknown reports %s: %t, want %t", tt.name, got, tt.unknown)
			}
		})
	}
}
