package charttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	NetworkMode string            `yaml:"network_mode"`
}

func readCompose(t *testing.T) map[string]composeService {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(Root(), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return f.Services
}

// TestComposeFile checks what docker-compose.yml must bring up: KRaft Kafka, Redis, an
// OpenTelemetry collector and Jaeger, the four services built from the one Dockerfile, and the
// one-shot apply of examples/.
func TestComposeFile(t *testing.T) {
	svcs := readCompose(t)
	for name, image := range map[string]string{"kafka": "apache/kafka:", "redis": "redis:", "otel-collector": "otel/opentelemetry-collector", "jaeger": "jaegertracing/"} {
		if s, ok := svcs[name]; !ok || !strings.HasPrefix(s.Image, image) {
			t.Errorf("service %s: want image %s*, got %+v", name, image, s)
		}
	}
	if roles := svcs["kafka"].Environment["KAFKA_PROCESS_ROLES"]; roles != "broker,controller" {
		t.Errorf("kafka: KAFKA_PROCESS_ROLES = %q, want broker,controller (KRaft, one node)", roles)
	}
	for _, target := range []string{"ingest", "evaluator", "timer", "dispatcher"} {
		s, ok := svcs[target]
		if !ok {
			t.Errorf("no service %s", target)
			continue
		}
		if s.Build != "." || s.Image != "hookstream:dev" {
			t.Errorf("%s: want build . and image hookstream:dev, got build %v image %q", target, s.Build, s.Image)
		}
		if len(s.Command) < 2 || s.Command[0] != "serve" || s.Command[1] != target {
			t.Errorf("%s: command %q, want serve %s ...", target, s.Command, target)
		}
		if s.Environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "" {
			t.Errorf("%s: no OTEL_EXPORTER_OTLP_ENDPOINT", target)
		}
	}
	for _, target := range []string{"evaluator", "timer"} {
		if !slices.ContainsFunc(svcs[target].Command, func(a string) bool { return strings.HasPrefix(a, "-"+target+".instance-id=") }) {
			t.Errorf("%s: want a static -%s.instance-id", target, target)
		}
	}
	apply := svcs["apply"]
	if strings.Join(apply.Command, " ") != "apply -f /examples --server http://ingest:8080" || !slices.Contains(apply.Volumes, "./examples:/examples:ro") {
		t.Errorf("apply: command %q volumes %q, want apply -f /examples --server http://ingest:8080 with ./examples mounted", apply.Command, apply.Volumes)
	}
}

// TestComposeCommands runs each service's command line through the real binary's
// -config.verify, so that a renamed flag breaks this test rather than the compose file.
func TestComposeCommands(t *testing.T) {
	bin := hookstream(t)
	for name, s := range readCompose(t) {
		if len(s.Command) == 0 || s.Command[0] != "serve" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, append(slices.Clone(s.Command), "-config.verify")...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("hookstream %s -config.verify: %v\n%s", strings.Join(s.Command, " "), err, out)
			}
		})
	}
}

// TestComposeConfig validates docker-compose.yml with docker-compose itself (Debian's 1.29
// needs no Docker engine for `config`).
func TestComposeConfig(t *testing.T) {
	compose := Compose(t)
	args := append(slices.Clone(compose[1:]), "-f", filepath.Join(Root(), "docker-compose.yml"), "config", "-q")
	if out, err := Run(compose[0], args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
