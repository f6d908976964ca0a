// Package e2e runs the real hookstream binary against real parts: kcat as
// an independent Kafka client, HTTP receivers, and the embedded broker.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hookstream-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "hookstream")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hookstream:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// webhookReceiver is a real HTTP server that records every webhook.
type webhookReceiver struct {
	*httptest.Server
	delay time.Duration
	mu    sync.Mutex
	got   []receivedHook
}

type receivedHook struct {
	Header http.Header
	Body   []byte
	URL    string
}

func newReceiver(t *testing.T, delay time.Duration) *webhookReceiver {
	r := &webhookReceiver{delay: delay}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		time.Sleep(r.delay)
		r.mu.Lock()
		r.got = append(r.got, receivedHook{req.Header.Clone(), body, req.URL.String()})
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *webhookReceiver) hooks() []receivedHook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedHook(nil), r.got...)
}

// ids returns how many times each webhook-id arrived.
func (r *webhookReceiver) ids() map[string]int {
	out := map[string]int{}
	for _, h := range r.hooks() {
		out[h.Header.Get("webhook-id")]++
	}
	return out
}

func (r *webhookReceiver) waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (received %d webhooks)", timeout, what, len(r.hooks()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// devProcess is a running `hookstream dev`.
type devProcess struct {
	cmd       *exec.Cmd
	kafkaAddr string
	httpAddr  string
	logPath   string
	done      chan struct{} // closed when the process has exited
	err       error         // its exit error, valid after done
}

type devOptions struct {
	dataDir   string
	kafkaPort int
	manifests string
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startDev(t *testing.T, o devOptions) *devProcess {
	t.Helper()
	if o.kafkaPort == 0 {
		o.kafkaPort = freePort(t)
	}
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	logf, err := os.CreateTemp(t.TempDir(), "dev-*.log")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"dev", "--kafka-port", fmt.Sprint(o.kafkaPort), "--listen", httpAddr, "--data-dir", o.dataDir, "--log.level", "debug"}
	if o.manifests != "" {
		args = append(args, "-f", o.manifests)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &devProcess{cmd: cmd, kafkaAddr: fmt.Sprintf("127.0.0.1:%d", o.kafkaPort), httpAddr: httpAddr, logPath: logf.Name(), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-p.done:
			p.dumpLog(t)
			t.Fatalf("hookstream dev exited before ready: %v", p.err)
		default:
		}
		if time.Now().After(deadline) {
			p.dumpLog(t)
			t.Fatal("hookstream dev not ready in 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *devProcess) dumpLog(t *testing.T) {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 150 {
		lines = lines[len(lines)-150:]
	}
	t.Logf("hookstream dev log (last lines):\n%s", strings.Join(lines, "\n"))
}

func (p *devProcess) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// stop sends SIGTERM and waits for a clean exit.
func (p *devProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		if p.err != nil {
			p.dumpLog(t)
			t.Fatalf("hookstream dev exited with %v after SIGTERM, want 0", p.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hookstream dev did not stop within 60s of SIGTERM")
	}
}

// kcatProduce produces lines (one record each) with kcat to topic. A line
// "KEY|VALUE" is keyed: producers key by identity to keep a user's records
// in order. Each header ("NAME=VALUE") is set on every record.
func kcatProduce(t *testing.T, broker, topic string, lines []string, headers ...string) {
	t.Helper()
	kcat := kafkatest.RequireKcat(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := []string{"-b", broker, "-t", topic, "-P", "-z", "snappy", "-K", "|"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v: %s", err, out)
	}
}

// writeManifests writes a webhook pointing at url and the given campaign
// YAML into a temporary directory and returns it.
func writeManifests(t *testing.T, url, campaigns string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: receiver}
spec:
  url: %s/hooks/orders
---
%s`, url, campaigns)
	if err := os.WriteFile(filepath.Join(dir, "manifests.yaml"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, b)
	}
	return m
}
