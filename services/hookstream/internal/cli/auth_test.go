package cli

import (
	"bytes"

	"strings"
	"testing"
)

// The API has no tokens only where that is safe: a target that serves it
// (ingest, all) refuses to start, or to verify, without tokens on an
// address beyond loopback unless told to allow it; the other targets do
// not care; dev refuses a --listen beyond loopback unless told to allow it.
func TestAPIWithoutTokensOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string // substring; "" for success
	}{
		{"serve ingest, every interface", []string{"serve", "ingest", "-config.verify", "-server.listen-address=:8080"}, "ingest.tokens and ingest.admin_tokens empty"},
		{"serve all, every interface", []string{"serve", "all", "-config.verify", "-server.listen-address=:8080"}, "beyond loopback"},
		{"serve ingest, loopback", []string{"serve", "ingest", "-config.verify", "-server.listen-address=127.0.0.1:8080"}, ""},
		{"serve ingest, tokens", []string{"serve", "ingest", "-config.verify", "-server.listen-address=:8080", "-ingest.tokens=t", "-ingest.admin-tokens=a"}, ""},
		{"serve ingest, allowed", []string{"serve", "ingest", "-config.verify", "-server.listen-address=:8080", "-ingest.allow-unauthenticated"}, ""},
		{"serve evaluator, every interface", []string{"serve", "evaluator", "-config.verify", "-server.listen-address=:8080"}, ""},
		{"dev, every interface", []string{"dev", "--ephemeral", "--listen", "0.0.0.0:0"}, "pass --allow-unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tt.args, &stdout, &stderr)
			switch {
			case tt.wantErr == "" && code != 0:
				t.Fatalf("exit %d: %s", code, stderr.String())
			case tt.wantErr != "" && code == 0:
				t.Fatalf("exit 0, want an error saying %q; stdout %s", tt.wantErr, stdout.String())
			case tt.wantErr != "" && !strings.Contains(stderr.String(), tt.wantErr):
				t.Fatalf("stderr %q, want it to say %q", stderr.String(), tt.wantErr)
			}
			if tt.wantErr != "" && strings.Contains(stdout.String(), "send events") {
				t.Error("dev printed its banner before refusing")
			}
		})
	}
}
