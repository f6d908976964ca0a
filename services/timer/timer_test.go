package timer

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

type harness struct {
	t      *testing.T
	cfg    kafka.Config
	clock  *clock
	client *kgo.Client
	fired  chan *kgo.Record
}

func newHarness(t *testing.T) *harness {
	kc := kafkatest.New(t)
	cfg := kc.Config()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := kafka.NewClient(cfg, log, "test", kgo.ConsumeTopics("out"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	specs := append(cfg.TopicSpecs(), kafka.TopicSpec{Name: "out", Partitions: 1})
	if err := kafka.EnsureTopics(context.Background(), cl, -1, specs); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, clock: &clock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}, client: cl, fired: make(chan *kgo.Record, 100)}
	go func() {
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) { h.fired <- r })
		}
	}()
	return h
}

func (h *harness) start(dir string) *service.Service {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	cfg.DataDir = dir
	s, err := New(cfg, h.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), noop.NewMeterProvider().Meter("t"), h.clock.Now)
	if err != nil {
		h.t.Fatal(err)
	}
	svc := s.Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		h.t.Fatal(err)
	}
	return svc
}

func (h *harness) schedule(id string, in time.Duration) {
	rec, err := Schedule(h.cfg.Topics(), &hookstreamv1.TimerCommand{
		Id: id, DueMs: h.clock.Now().Add(in).UnixMilli(), DestinationTopic: "out", DestinationKey: []byte("k"), Payload: []byte(id),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.produce(rec)
}

func (h *harness) produce(recs ...*kgo.Record) {
	if err := kafka.ProduceSync(context.Background(), h.client, recs...); err != nil {
		h.t.Fatal(err)
	}
}

// expect waits for exactly the given payloads, in order, then checks that
// nothing else fires for a moment.
func (h *harness) expect(want ...string) {
	h.t.Helper()
	for _, w := range want {
		select {
		case r := <-h.fired:
			if string(r.Value) != w {
				h.t.Fatalf("fired %q, want %q next", r.Value, w)
			}
			hdr := map[string]string{}
			for _, x := range r.Headers {
				hdr[x.Key] = string(x.Value)
			}
			if hdr[HeaderTimerID] != w || hdr[HeaderTimerDueMs] == "" || hdr[HeaderTimerFiredMs] == "" {
				h.t.Fatalf("fired record headers %v", hdr)
			}
		case <-time.After(20 * time.Second):
			h.t.Fatalf("timer %q did not fire", w)
		}
	}
	select {
	case r := <-h.fired:
		h.t.Fatalf("unexpected firing of %q", r.Value)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestTimersFireInDueOrderAfterMovesAndCancels(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	h.start(dir)
	h.schedule("a", 10*time.Second)
	h.schedule("b", 5*time.Second)
	h.schedule("c", 20*time.Second)
	h.schedule("a", 3*time.Second) // move a before b
	h.produce(Cancel(h.cfg.Topics(), "c"))
	time.Sleep(300 * time.Millisecond) // commands applied; nothing is due yet
	h.expect()
	base := h.clock.Now()
	h.clock.Set(base.Add(6 * time.Second))
	h.expect("a", "b")
	h.clock.Set(base.Add(30 * time.Second))
	h.expect() // c was cancelled
}

// A timer service whose disk is lost rebuilds every pending timer from the
// compacted topic; fired timers (tombstoned) do not fire again.
func TestTimersRebuildFromTopicOnNewDisk(t *testing.T) {
	h := newHarness(t)
	svc := h.start(t.TempDir())
	h.schedule("early", time.Second)
	h.schedule("late", time.Minute)
	base := h.clock.Now()
	h.clock.Set(base.Add(2 * time.Second))
	h.expect("early")
	svc.StopAsync()
	if err := svc.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.start(t.TempDir()) // a new, empty disk
	h.expect()
	h.clock.Set(base.Add(2 * time.Minute))
	h.expect("late")
}
