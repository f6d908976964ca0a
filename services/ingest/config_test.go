package ingest

import (
	"strings"
	"testing"
)

// An API without tokens is refused beyond loopback, with the keys to set in
// the error; loopback, tokens for both endpoints, or an explicit
// allow_unauthenticated are accepted.
func TestCheckAuth(t *testing.T) {
	both := Config{Tokens: []string{"t"}, AdminTokens: []string{"a"}}
	tests := []struct {
		name    string
		cfg     Config
		listen  string
		wantErr string // substring; "" for no error
	}{
		{"no tokens on 127.0.0.1", Config{}, "127.0.0.1:8080", ""},
		{"no tokens on ::1", Config{}, "[::1]:8080", ""},
		{"no tokens on localhost", Config{}, "localhost:8080", ""},
		{"no tokens on every interface", Config{}, ":8080", `ingest.tokens and ingest.admin_tokens empty and the API listens on ":8080", beyond loopback`},
		{"no tokens on 0.0.0.0", Config{}, "0.0.0.0:8080", "ingest.tokens and ingest.admin_tokens empty"},
		{"no admin tokens on a pod address", Config{Tokens: []string{"t"}}, "10.0.0.7:8080", "ingest.admin_tokens empty"},
		{"no event tokens", Config{AdminTokens: []string{"a"}}, ":8080", "ingest.tokens empty"},
		{"both tokens", both, ":8080", ""},
		{"allowed open", Config{AllowUnauthenticated: true}, ":8080", ""},
		{"not host:port", Config{}, "8080", "beyond loopback"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.CheckAuth(tt.listen)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("accepted")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q, want it to say %q", err, tt.wantErr)
			}
		})
	}
}
