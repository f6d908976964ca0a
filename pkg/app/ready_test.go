package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/service"
)

// readyz is one answer of /readyz.
type readyz struct {
	status     int
	Ready      bool              `json:"ready"`
	Components map[string]string `json:"components"`
}

func getReadyz(t *testing.T, addr string) readyz {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	r := readyz{status: resp.StatusCode}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("GET /readyz: body: %v", err)
	}
	return r
}

func healthz(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func requireHealthy(t *testing.T, addr, when string) {
	t.Helper()
	if code, err := healthz(addr); err != nil || code != http.StatusOK {
		t.Fatalf("/healthz %s: status %d, %v; want 200", when, code, err)
	}
}

// awaitReadyz polls /readyz until it answers status (the lifecycle moves on
// its own goroutines) and returns that answer.
func awaitReadyz(t *testing.T, addr string, status int) readyz {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := getReadyz(t, addr)
		if r.status == status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still answers %d %+v, want %d", r.status, r, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// /readyz is 503 until every service runs, 200 while they all do, and 503
// from the moment a stop is requested, while a service still drains;
// /healthz answers 200 until the HTTP server, stopped last, goes away.
func TestReadyzFollowsTheLifecycle(t *testing.T) {
	tests := []struct {
		name string
		// stop requests the graceful stop.
		stop func(t *testing.T, cancel context.CancelFunc)
	}{
		{name: "context cancelled", stop: func(_ *testing.T, cancel context.CancelFunc) { cancel() }},
		{name: "SIGTERM", stop: func(t *testing.T, _ context.CancelFunc) { signalSelf(t, syscall.SIGTERM) }},
		{name: "SIGINT", stop: func(t *testing.T, _ context.CancelFunc) { signalSelf(t, syscall.SIGINT) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			srv := NewServer(ServerConfig{ListenAddress: "127.0.0.1:0", ShutdownTimeout: duration.Duration(5 * time.Second)}, log, nil)
			started, stopping := make(chan struct{}), make(chan struct{})
			release, drained := make(chan struct{}), make(chan struct{})
			slow := service.New("slow",
				func(context.Context) error {
					close(started)
					<-release
					return nil
				},
				func(ctx context.Context) error {
					<-ctx.Done()
					close(stopping)
					<-drained // in-flight work that outlives the stop request
					return nil
				}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- RunManager(ctx, log, srv, service.NewManager(log, srv.Service(), slow)) }()
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("the slow service was never started")
			}
			addr := srv.Addr()

			r := getReadyz(t, addr)
			if r.status != http.StatusServiceUnavailable || r.Ready || r.Components["slow"] != "starting" {
				t.Errorf("/readyz while a service starts: %d %+v, want 503 with slow: starting", r.status, r)
			}
			requireHealthy(t, addr, "while a service starts")

			close(release)
			r = awaitReadyz(t, addr, http.StatusOK)
			if !r.Ready || r.Components["slow"] != "running" || r.Components["server"] != "running" {
				t.Errorf("/readyz when all run: %+v, want ready with every component running", r)
			}

			tt.stop(t, cancel)
			select {
			case <-stopping:
			case <-time.After(10 * time.Second):
				t.Fatal("the slow service was never asked to stop")
			}
			r = getReadyz(t, addr)
			if r.status != http.StatusServiceUnavailable || r.Ready || r.Components["process"] != "shutting down" {
				t.Errorf("/readyz while draining: %d %+v, want 503 with process: shutting down", r.status, r)
			}
			requireHealthy(t, addr, "while a service drains")
			select {
			case err := <-done:
				t.Fatalf("RunManager returned (%v) before the slow service drained", err)
			default:
			}

			close(drained)
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("RunManager: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("RunManager did not return after the drain")
			}
			if code, err := healthz(addr); err == nil {
				t.Errorf("/healthz after the stop: status %d, want the server gone", code)
			}
		})
	}
}

// signalSelf sends sig to the test process, which RunManager catches.
func signalSelf(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
}
