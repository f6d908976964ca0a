package ingest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
)

// TestPostEventsAcrossLifecycle posts while the service starts, runs and
// after it stopped: the process serves HTTP before ingest runs and after it
// stops, so the endpoint must answer 503 (send again) rather than fail or
// lose events, and must not race with the service's start.
func TestPostEventsAcrossLifecycle(t *testing.T) {
	e := newEnv(t)
	in, err := New(defaultConfig(), e.kcfg, quiet, noop.NewMeterProvider().Meter("ingest"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	in.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	// post returns the status of a POST, or 0 when the request failed.
	post := func() int {
		res, err := srv.Client().Post(srv.URL+"/v1/events", "application/json",
			strings.NewReader(`{"type":"event","identity":"life-1","name":"N"}`))
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}

	if got := post(); got != http.StatusServiceUnavailable {
		t.Fatalf("before start: status %d, want 503", got)
	}

	// Post concurrently with the start: every answer is 503 until the
	// service runs, then 200.
	svc := in.Service()
	done := make(chan []int)
	go func() {
		var codes []int
		for len(codes) == 0 || codes[len(codes)-1] == http.StatusServiceUnavailable {
			codes = append(codes, post())
		}
		done <- codes
	}()
	if err := svc.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	codes := <-done
	for _, c := range codes[:len(codes)-1] {
		if c != http.StatusServiceUnavailable {
			t.Errorf("while starting: status %d, want 503 until running", c)
		}
	}
	if last := codes[len(codes)-1]; last != http.StatusOK {
		t.Errorf("once running: status %d, want 200", last)
	}

	svc.StopAsync()
	if err := svc.AwaitTerminated(ctx); err != nil {
		t.Fatal(err)
	}
	if got := post(); got != http.StatusServiceUnavailable {
		t.Errorf("after stop: status %d, want 503", got)
	}
}
