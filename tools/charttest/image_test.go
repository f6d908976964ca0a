package charttest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfile checks what can be checked of the image without a Docker engine: a static
// build of the binary with its version stamped into a variable that exists, a distroless or
// scratch final stage run as a non-root user, and a build context that keeps what the build
// needs.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(Root(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(data)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "go work edit -dropuse=./tools/charttest", "./services/hookstream"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}

	// The -X flag must name a variable that exists, or the version is silently not set.
	m := regexp.MustCompile(`-X (github\.com/hookstream/hookstream/services/hookstream/internal/cli)\.(\w+)=`).FindStringSubmatch(df)
	if m == nil {
		t.Fatal("Dockerfile: no -X .../internal/cli.Version= ldflag")
	}
	cli, err := os.ReadFile(filepath.Join(Root(), "services", "hookstream", "internal", "cli", "cli.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^var ` + m[2] + ` = ""`).Match(cli) {
		t.Errorf("Dockerfile sets cli.%s, but cli.go declares no `var %s = \"\"`", m[2], m[2])
	}

	stages := regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`).FindAllStringSubmatch(df, -1)
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stages", len(stages))
	}
	if final := stages[len(stages)-1][1]; !strings.HasPrefix(final, "gcr.io/distroless/static") && final != "scratch" {
		t.Errorf("final stage %s: want distroless static or scratch", final)
	}
	users := regexp.MustCompile(`(?m)^USER\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(users) == 0 || strings.HasPrefix(users[len(users)-1][1], "root") || strings.HasPrefix(users[len(users)-1][1], "0") {
		t.Errorf("want a non-root USER in the final stage, got %v", users)
	}

	ignore, err := os.ReadFile(filepath.Join(Root(), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(ignore), "\n") {
		line = strings.TrimSpace(line)
		for _, needed := range []string{"go.work", "go.work.sum", "pkg", "proto", "services"} {
			if line == needed || line == needed+"/" || line == "*" {
				t.Errorf(".dockerignore excludes %s, which the build needs", line)
			}
		}
	}
}
