// Package testenv lets tests require external tools (redis-server, kcat). A
// missing tool skips the test with a loud SKIP line, except under CI=true,
// where it fails the test: CI must never pass by skipping.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireTool returns the path of the named program or ends the test.
func RequireTool(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s not found on PATH (install the Debian package %q, or run make test as root to have it installed)", name, debianPackage)
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true: %s", msg)
	}
	fmt.Fprintf(os.Stderr, "\n*** SKIP %s: %s ***\n\n", t.Name(), msg)
	t.Skip("SKIP: " + msg)
	return ""
}
