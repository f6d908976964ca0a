package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func tracked(r *recorder, name string, runErr error) *Service {
	return New(name,
		func(context.Context) error { r.add("start " + name); return nil },
		func(ctx context.Context) error {
			if runErr != nil {
				return runErr
			}
			<-ctx.Done()
			r.add("drain " + name)
			return nil
		},
		func(error) error { r.add("stop " + name); return nil })
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestManagerStartsInOrderAndStopsInReverse(t *testing.T) {
	r := &recorder{}
	m := NewManager(quiet(), tracked(r, "a", nil), tracked(r, "b", nil), tracked(r, "c", nil))
	ctx, cancel := context.WithCancel(context.Background())
	errCh := make(chan error)
	go func() { errCh <- m.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !m.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("manager never became ready")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errCh; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if m.Ready() {
		t.Fatal("ready after stop")
	}
	want := []string{"start a", "start b", "start c", "drain c", "stop c", "drain b", "stop b", "drain a", "stop a"}
	if got := r.get(); !slices.Equal(got, want) {
		t.Fatalf("lifecycle order:\n got %v\nwant %v", got, want)
	}
}

func TestManagerStopsAllWhenOneFails(t *testing.T) {
	r := &recorder{}
	boom := errors.New("boom")
	m := NewManager(quiet(), tracked(r, "a", nil), tracked(r, "b", boom))
	err := m.Run(context.Background())
	if !errors.Is(err, boom) {
		t.Fatalf("Run error = %v, want it to wrap %v", err, boom)
	}
	if got := r.get(); !slices.Contains(got, "stop a") || !slices.Contains(got, "stop b") {
		t.Fatalf("not every service was stopped: %v", got)
	}
}

func TestManagerFailsWhenStartingFails(t *testing.T) {
	r := &recorder{}
	bad := New("bad", func(context.Context) error { return errors.New("no disk") }, nil, nil)
	m := NewManager(quiet(), tracked(r, "a", nil), bad, tracked(r, "c", nil))
	err := m.Run(context.Background())
	if err == nil || err.Error() != "bad: starting: no disk" {
		t.Fatalf("Run error = %v, want %q", err, "bad: starting: no disk")
	}
	if got := r.get(); slices.Contains(got, "start c") || !slices.Contains(got, "stop a") {
		t.Fatalf("c must not start and a must stop: %v", got)
	}
}

func TestStopWhileStartingIsClean(t *testing.T) {
	started := make(chan struct{})
	s := New("slow", func(ctx context.Context) error { close(started); <-ctx.Done(); return ctx.Err() }, nil, nil)
	if err := s.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-started
	s.StopAsync()
	if err := s.AwaitTerminated(context.Background()); err != nil {
		t.Fatalf("stop while starting: %v", err)
	}
	if s.State() != StateTerminated {
		t.Fatalf("state = %v, want terminated", s.State())
	}
	if err := s.AwaitRunning(context.Background()); err == nil {
		t.Fatal("AwaitRunning succeeded on a service that never ran")
	}
}
