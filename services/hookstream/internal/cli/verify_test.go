package cli

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// `serve TARGET -config.file=F -config.verify` loads and validates the
// configuration, prints it (secrets hidden) or the problems a user must
// fix, and exits without starting a service or dialling Kafka.
func TestServeConfigVerify(t *testing.T) {
	// A listener standing in for Kafka: verify must never connect to it.
	broker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	t.Setenv("HOOKSTREAM_TEST_SASL_PASSWORD", "kafka-s3cret")
	valid := fmt.Sprintf(`kafka:
  brokers: [%s]
  session_timeout: 15s
  sasl:
    mechanism: SCRAM-SHA-512
    username: hookstream
    password: ${HOOKSTREAM_TEST_SASL_PASSWORD}
server:
  listen_address: 127.0.0.1:0
log:
  level: ${HOOKSTREAM_TEST_UNSET_LEVEL:-warn}
`, broker.Addr())

	tests := []struct {
		name string
		// yaml is the configuration file; args follow "serve".
		yaml string
		args []string
		// wantCode is the exit status; want are substrings of stdout when
		// it is 0 and of stderr otherwise.
		wantCode int
		want     []string
		// notWant must not appear on stdout.
		notWant []string
	}{
		{
			name:     "valid",
			yaml:     valid,
			args:     []string{"ingest"},
			wantCode: 0,
			want: []string{
				"# configuration is valid\n",
				"target: ingest\n",
				broker.Addr().String(),
				"session_timeout: 15s\n",
				"level: warn\n",
				"password: <redacted>\n",
			},
			notWant: []string{"kafka-s3cret"},
		},
		{
			name:     "target from the file",
			yaml:     "target: dispatcher\n" + valid,
			wantCode: 0,
			want:     []string{"# configuration is valid\n", "target: dispatcher\n"},
		},
		{
			name:     "the command's target over the file's",
			yaml:     "target: ingester\n" + valid,
			args:     []string{"timer"},
			wantCode: 0,
			want:     []string{"# configuration is valid\n", "target: timer\n"},
		},
		{
			name:     "unknown key",
			yaml:     "kafka:\n  brokers: [127.0.0.1:1]\n  sesion_timeout: 15s\n",
			args:     []string{"all"},
			wantCode: 1,
			want:     []string{`error: config CONFIG: line 3: unknown key "sesion_timeout"`},
		},
		{
			name:     "bad duration",
			yaml:     "kafka:\n  session_timeout: 15 seconds\n",
			args:     []string{"evaluator"},
			wantCode: 1,
			want:     []string{`error: config CONFIG: line 2: "15 seconds": must be a duration like 30m, 36h, 3d or 2w`},
		},
		{
			name:     "environment variable not set",
			yaml:     "kafka:\n  sasl:\n    mechanism: PLAIN\n    username: hookstream\n    password: ${HOOKSTREAM_TEST_UNSET_PASSWORD}\n",
			args:     []string{"timer"},
			wantCode: 1,
			want: []string{
				"error: config CONFIG: line 5: environment variable HOOKSTREAM_TEST_UNSET_PASSWORD is not set (write ${HOOKSTREAM_TEST_UNSET_PASSWORD:-default} for a default)",
			},
		},
		{
			name:     "invalid values",
			yaml:     "kafka:\n  partitions: 0\n  tls:\n    ca_file: /etc/kafka/ca.pem\n",
			args:     []string{"ingest"},
			wantCode: 1,
			want: []string{
				"error: invalid configuration:\n",
				"kafka.partitions: must be at least 1, got 0",
				"kafka.tls.ca_file: set, but kafka.tls.enabled is false",
			},
		},
		{
			name:     "unknown target",
			yaml:     valid,
			args:     []string{"ingester"},
			wantCode: 1,
			want:     []string{"error: invalid configuration:\ntarget: must be ingest, evaluator, timer, dispatcher or all, got \"ingester\""},
		},
		{
			name:     "missing file",
			args:     []string{"ingest"},
			wantCode: 1,
			want:     []string{"error: config: open CONFIG: no such file or directory"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hookstream.yaml")
			if tt.yaml != "" {
				if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := append(append([]string{"serve"}, tt.args...), "-config.file="+path, "-config.verify")
			var stdout, stderr bytes.Buffer
			code := make(chan int, 1)
			go func() { code <- Main(args, &stdout, &stderr) }()
			var got int
			select {
			case got = <-code:
			case <-time.After(30 * time.Second):
				// Only a process that went on to run its services
				// blocks this long.
				t.Fatal("hookstream serve -config.verify did not exit")
			}
			out := stdout.String()
			if got != tt.wantCode {
				t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tt.wantCode, out, stderr.String())
			}
			if tt.wantCode != 0 {
				if out != "" {
					t.Errorf("stdout of a failed verify: %q, want nothing", out)
				}
				out = stderr.String()
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "CONFIG", path); !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output shows %q:\n%s", w, out)
				}
			}
		})
	}
	// Nothing dialled the broker.
	if err := broker.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if c, err := broker.Accept(); err == nil {
		c.Close()
		t.Error("-config.verify connected to Kafka")
	}
}
