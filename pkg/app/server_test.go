package app

import (
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestServerPprof(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// want maps a path to the status it must answer.
		want map[string]int
	}{
		{
			name: "off by default",
			want: map[string]int{
				"/healthz":                       http.StatusOK,
				"/debug/pprof/":                  http.StatusNotFound,
				"/debug/pprof/heap":              http.StatusNotFound,
				"/debug/pprof/cmdline":           http.StatusNotFound,
				"/debug/pprof/profile?seconds=1": http.StatusNotFound,
			},
		},
		{
			name: "on with -server.pprof",
			args: []string{"-server.pprof"},
			want: map[string]int{
				"/healthz":                       http.StatusOK,
				"/debug/pprof/":                  http.StatusOK,
				"/debug/pprof/heap?debug=1":      http.StatusOK,
				"/debug/pprof/goroutine?debug=1": http.StatusOK,
				"/debug/pprof/cmdline":           http.StatusOK,
				"/debug/pprof/profile?seconds=1": http.StatusOK,
				"/debug/pprof/trace?seconds=0.1": http.StatusOK,
				"/debug/pprof/nonexistent":       http.StatusNotFound,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg ServerConfig
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			cfg.RegisterFlags("server.", fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			s := NewServer(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
			srv := httptest.NewServer(s.Mux)
			defer srv.Close()
			for path, want := range tt.want {
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s: status %d, want %d", path, resp.StatusCode, want)
				}
				if path == "/debug/pprof/" && want == http.StatusOK && !strings.Contains(string(body), "goroutine") {
					t.Errorf("GET %s: no profile index in %q", path, body)
				}
			}
		})
	}
}

func TestServerPprofFromYAML(t *testing.T) {
	var c struct {
		Server ServerConfig `yaml:"server"`
	}
	c.Server.RegisterFlags("server.", flag.NewFlagSet("t", flag.ContinueOnError))
	if c.Server.Pprof {
		t.Fatal("server.pprof is on by default")
	}
	if err := DecodeStrict([]byte("server:\n  pprof: true\n"), &c); err != nil {
		t.Fatal(err)
	}
	if !c.Server.Pprof || c.Server.ListenAddress != ":8080" {
		t.Fatalf("server = %+v", c.Server)
	}
}
