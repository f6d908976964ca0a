package app

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

type testConfig struct {
	Name    string            `yaml:"name"`
	Timeout duration.Duration `yaml:"timeout"`
	Nested  struct {
		Password string `yaml:"password"`
		Port     int    `yaml:"port"`
	} `yaml:"nested"`
}

func (c *testConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Name, "name", "default-name", "")
	c.Timeout = duration.Duration(3 * time.Second)
	fs.Var(&c.Timeout, "timeout", "")
	fs.IntVar(&c.Nested.Port, "nested.port", 80, "")
}

func (c *testConfig) Validate() error { return nil }

func env(vars map[string]string) LoadOptions {
	return LoadOptions{LookupEnv: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		args    []string
		env     map[string]string
		wantErr string // substring of the error a user sees; "" for success
		check   func(t *testing.T, c *testConfig)
	}{
		{
			name: "defaults without a file",
			check: func(t *testing.T, c *testConfig) {
				if c.Name != "default-name" || c.Timeout.Std() != 3*time.Second || c.Nested.Port != 80 {
					t.Fatalf("defaults not applied: %+v", c)
				}
			},
		},
		{
			name: "file over defaults, flags over file",
			yaml: "name: from-file\ntimeout: 2d\nnested:\n  port: 81\n",
			args: []string{"-nested.port=82"},
			check: func(t *testing.T, c *testConfig) {
				if c.Name != "from-file" || c.Timeout.Std() != 48*time.Hour || c.Nested.Port != 82 {
					t.Fatalf("layers wrong: %+v", c)
				}
			},
		},
		{
			name:    "unknown key",
			yaml:    "name: x\nnested:\n  passwrod: y\n",
			wantErr: `line 3: unknown key "passwrod"`,
		},
		{
			name:    "bad duration",
			yaml:    "timeout: 3 seconds\n",
			wantErr: `line 1: "3 seconds": must be a duration like 30m, 36h, 3d or 2w`,
		},
		{
			name:    "number where a duration belongs",
			yaml:    "timeout: 30\n",
			wantErr: `line 1: "30" must be a duration like 30m, 36h, 3d or 2w`,
		},
		{
			name: "env expansion with default",
			yaml: "name: ${NAME}\nnested:\n  password: ${PW:-fallback}\n",
			env:  map[string]string{"NAME": "from-env"},
			check: func(t *testing.T, c *testConfig) {
				if c.Name != "from-env" || c.Nested.Password != "fallback" {
					t.Fatalf("env not expanded: %+v", c)
				}
			},
		},
		{
			name: "dollar escape",
			yaml: "nested:\n  password: a$$b\n",
			check: func(t *testing.T, c *testConfig) {
				if c.Nested.Password != "a$b" {
					t.Fatalf("$$ not unescaped: %q", c.Nested.Password)
				}
			},
		},
		{
			name:    "env not set",
			yaml:    "name: x\nnested:\n  password: ${KAFKA_PASSWORD}\n",
			wantErr: "line 3: environment variable KAFKA_PASSWORD is not set (write ${KAFKA_PASSWORD:-default} for a default)",
		},
		{
			name:    "wrong type",
			yaml:    "nested:\n  port: eighty\n",
			wantErr: "line 2: cannot unmarshal !!str `eighty` into int",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c testConfig
			args := tt.args
			if tt.yaml != "" {
				args = append([]string{"-config.file", writeFile(t, tt.yaml)}, args...)
			}
			_, err := LoadConfig(&c, flag.NewFlagSet("t", flag.ContinueOnError), args, env(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, &c)
		})
	}
}

func TestModulesResolveOrdersDependenciesFirst(t *testing.T) {
	var m Modules
	m.Register(Module{Name: "server"})
	m.Register(Module{Name: "kafka"})
	m.Register(Module{Name: "catalog", Deps: []string{"kafka"}})
	m.Register(Module{Name: "ingest", Deps: []string{"server", "kafka", "catalog"}, Target: true})
	m.Register(Module{Name: "evaluator", Deps: []string{"server", "catalog"}, Target: true})
	m.Register(Module{Name: "all", Deps: []string{"ingest", "evaluator"}, Target: true})
	got, err := m.Resolve("all")
	if err != nil {
		t.Fatal(err)
	}
	want := "server kafka catalog ingest evaluator all"
	if strings.Join(got, " ") != want {
		t.Fatalf("order = %v, want %s", got, want)
	}
	if _, err := m.Resolve("catalog"); err == nil || !strings.Contains(err.Error(), `unknown target "catalog"`) {
		t.Fatalf("resolving a non-target: %v", err)
	}
	m.Register(Module{Name: "kafka", Deps: []string{"ingest"}})
	if _, err := m.Resolve("ingest"); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("cycle not detected: %v", err)
	}
}
