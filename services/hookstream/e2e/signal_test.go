package e2e

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/twmb/franz-go/pkg/kgo"
)

// SIGTERM stops gracefully: the dispatcher finishes the webhook in flight
// before the process exits 0. A second signal while it waits exits at once
// with status 1.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	tests := []struct {
		name string
		// second is sent while the drain waits; 0: none, the receiver
		// answers instead.
		second   syscall.Signal
		wantCode int
	}{
		{name: "SIGTERM twice", second: syscall.SIGTERM, wantCode: 1},
		{name: "SIGINT after SIGTERM", second: syscall.SIGINT, wantCode: 1},
		{name: "one SIGTERM waits for the webhook in flight", wantCode: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recv := newHangingReceiver(t)
			dev := startDev(t, devOptions{dataDir: t.TempDir(), manifests: writeSlowWebhookManifests(t, recv.URL)})
			produceRawEvent(t, dev.kafkaAddr, `{"type":"event","identity":"u-1","name":"Order Completed","properties":{"total":27.5},"id":"e-1"}`)
			select {
			case <-recv.arrived:
			case <-time.After(30 * time.Second):
				t.Fatal("the webhook never reached the receiver")
			}

			if err := dev.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// The webhook's timeout is 30s: a graceful stop waits for it.
			// No fixed wait could prove that it waits forever; 2s shows
			// that the first signal did not end the process.
			select {
			case <-dev.done:
				t.Fatalf("hookstream dev exited (%v) within 2s of one SIGTERM with a webhook in flight, want it to drain", dev.err)
			case <-time.After(2 * time.Second):
			}
			if !strings.Contains(dev.log(), "shutting down") {
				t.Fatalf("no shutdown message in the log after SIGTERM:\n%s", dev.log())
			}

			start := time.Now()
			if tt.second != 0 {
				if err := dev.cmd.Process.Signal(tt.second); err != nil {
					t.Fatal(err)
				}
			} else {
				recv.answer()
			}
			select {
			case <-dev.done:
			case <-time.After(20 * time.Second):
				t.Fatal("hookstream dev still runs 20s later")
			}
			t.Logf("exited %v after the second signal or the answer: %v", time.Since(start).Round(time.Millisecond), dev.err)
			code := 0
			if dev.err != nil {
				var ee *exec.ExitError
				if !errors.As(dev.err, &ee) {
					t.Fatalf("hookstream dev: %v", dev.err)
				}
				code = ee.ExitCode()
			}
			if code != tt.wantCode {
				t.Fatalf("exit status %d (%v), want %d", code, dev.err, tt.wantCode)
			}
			if tt.second != 0 {
				if !strings.Contains(dev.log(), "second signal: exiting now without draining") {
					t.Errorf("the log does not say why the process exited:\n%s", dev.log())
				}
				if recv.answered() {
					t.Error("the receiver answered: the process waited for the webhook after all")
				}
			} else if !recv.answered() {
				t.Error("the process exited 0 without the webhook's answer: the drain did not wait for it")
			}
		})
	}
}

// hangingReceiver holds every webhook request open until answer is called
// (or the client goes away).
type hangingReceiver struct {
	*httptest.Server
	arrived chan struct{} // closed at the first request
	release chan struct{}

	mu                 sync.Mutex
	arrivedOnce, ended bool
	answeredCount      int
}

func newHangingReceiver(t *testing.T) *hangingReceiver {
	r := &hangingReceiver{arrived: make(chan struct{}), release: make(chan struct{})}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		if !r.arrivedOnce {
			r.arrivedOnce = true
			close(r.arrived)
		}
		r.mu.Unlock()
		select {
		case <-r.release:
			r.mu.Lock()
			r.answeredCount++
			r.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(r.Close)
	t.Cleanup(r.answer) // before Close, which waits for the handlers
	return r
}

func (r *hangingReceiver) answer() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.ended {
		r.ended = true
		close(r.release)
	}
}

func (r *hangingReceiver) answered() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.answeredCount > 0
}

// writeSlowWebhookManifests is writeManifests with the longest webhook
// timeout, so that an unanswered request keeps the dispatcher's drain
// waiting.
func writeSlowWebhookManifests(t *testing.T, url string) string {
	t.Helper()
	dir := t.TempDir()
	body := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: receiver}
spec:
  url: %s/hooks/orders
  timeout: 30s
---
%s`, url, orderCampaign)
	if err := os.WriteFile(filepath.Join(dir, "manifests.yaml"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// produceRawEvent produces one record for user u-1 to events.raw.
func produceRawEvent(t *testing.T, broker, value string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "hookstream.events.raw", Key: []byte("u-1"), Value: []byte(value)}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}
