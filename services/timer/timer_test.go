package timer

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// testLogger discards logs unless HOOKSTREAM_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("HOOKSTREAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }
func (c *clock) At(h, m int) time.Time {
	n := c.Now()
	return time.Date(n.Year(), n.Month(), n.Day(), h, m, 0, 0, n.Location())
}
func (c *clock) SetAt(h, m int)             { c.Set(c.At(h, m)) }
func (c *clock) AddDays(days int, h, m int) { n := c.At(h, m); c.Set(n.AddDate(0, 0, days)) }

type harness struct {
	t      testing.TB
	cfg    kafka.Config
	clock  *clock
	client *kgo.Client
	cat    *fakeCatalog
	fired  chan *kgo.Record // records on "out"
	events chan *kgo.Record // records on the events topic
	// wall runs services on the wall clock instead of clock.
	wall bool
	// noWait makes start return before the partitions have caught up.
	noWait bool
}

func newHarness(t testing.TB) *harness {
	kc := kafkatest.New(t)
	cfg := kc.Config()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := kafka.NewClient(cfg, log, "test", kgo.ConsumeTopics("out", cfg.Topics().Events), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	specs := append(cfg.TopicSpecs(), kafka.TopicSpec{Name: "out", Partitions: 1})
	if err := kafka.EnsureTopics(context.Background(), cl, -1, specs); err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, cfg: cfg, clock: &clock{now: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}, client: cl, cat: newFakeCatalog(),
		fired: make(chan *kgo.Record, 10000), events: make(chan *kgo.Record, 10000),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Topic == "out" {
					h.fired <- r
				} else {
					h.events <- r
				}
			})
		}
	}()
	t.Cleanup(func() { cl.Close(); <-done })
	return h
}

// instance is a running timer service.
type instance struct {
	s   *Service
	svc *service.Service
}

func (h *harness) config() Config {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	return cfg
}

func (h *harness) start(dir string, opts ...Option) *instance {
	cfg := h.config()
	cfg.DataDir = dir
	return h.startWith(cfg, opts...)
}

func (h *harness) startWith(cfg Config, opts ...Option) *instance {
	h.t.Helper()
	opts = append([]Option{WithAppliedAt(h.cat.appliedAt)}, opts...)
	now := h.clock.Now
	if h.wall {
		now = time.Now
	}
	s, err := New(cfg, h.cfg, testLogger(), noop.NewMeterProvider().Meter("t"), h.cat, now, opts...)
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
	in := &instance{s: s, svc: svc}
	if h.noWait {
		return in
	}
	h.eventually("every partition caught up", func() bool { return s.readyPartitions() == h.cfg.Partitions })
	return in
}

func (in *instance) stop(t testing.TB) {
	t.Helper()
	in.svc.StopAsync()
	if err := in.svc.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) command(id string, due time.Time, payload string) *hookstreamv1.TimerCommand {
	return &hookstreamv1.TimerCommand{Id: id, DueMs: due.UnixMilli(), DestinationTopic: "out", DestinationKey: []byte("k"), Payload: []byte(payload)}
}

func (h *harness) schedule(id string, in time.Duration) {
	h.scheduleAt(id, h.clock.Now().Add(in), id)
}

func (h *harness) scheduleAt(id string, due time.Time, payload string) {
	rec, err := Schedule(h.cfg.Topics(), h.command(id, due, payload))
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

func headers(r *kgo.Record) map[string]string {
	hdr := map[string]string{}
	for _, x := range r.Headers {
		hdr[x.Key] = string(x.Value)
	}
	return hdr
}

// expect waits for exactly the given payloads, in order, then checks that
// nothing else fires for a moment. It returns the records.
func (h *harness) expect(want ...string) []*kgo.Record {
	h.t.Helper()
	var got []*kgo.Record
	for _, w := range want {
		select {
		case r := <-h.fired:
			if string(r.Value) != w {
				h.t.Fatalf("fired %q, want %q next", r.Value, w)
			}
			hdr := headers(r)
			if hdr[HeaderTimerID] == "" || hdr[HeaderTimerDueMs] == "" || hdr[HeaderTimerFiredMs] == "" {
				h.t.Fatalf("fired record headers %v", hdr)
			}
			got = append(got, r)
		case <-time.After(20 * time.Second):
			h.t.Fatalf("timer %q did not fire", w)
		}
	}
	select {
	case r := <-h.fired:
		h.t.Fatalf("unexpected firing of %q", r.Value)
	case <-time.After(500 * time.Millisecond):
	}
	return got
}

func TestTimersFireInDueOrderAfterMovesAndCancels(t *testing.T) {
	h := newHarness(t)
	in := h.start(t.TempDir())
	h.schedule("a", 10*time.Second)
	h.schedule("b", 5*time.Second)
	h.schedule("c", 20*time.Second)
	h.schedule("a", 3*time.Second) // move a before b
	h.produce(Cancel(h.cfg.Topics(), "c"))
	h.eventually("two pending timers", func() bool { return in.s.Pending() == 2 })
	h.expect()
	base := h.clock.Now()
	h.clock.Set(base.Add(6 * time.Second))
	recs := h.expect("a", "b")
	if hdr := headers(recs[0]); hdr[HeaderTimerDueMs] != strconv.FormatInt(base.Add(3*time.Second).UnixMilli(), 10) || hdr[HeaderTimerFiredMs] != strconv.FormatInt(base.Add(6*time.Second).UnixMilli(), 10) {
		t.Fatalf("a's headers %v: want its moved due time and the firing time", hdr)
	}
	h.clock.Set(base.Add(30 * time.Second))
	h.expect() // c was cancelled
	if n := in.s.Pending(); n != 0 {
		t.Fatalf("pending %d after firing everything", n)
	}
}

// A timer service whose disk is lost rebuilds every pending timer from the
// compacted topic; fired timers (marked fired) do not fire again.
func TestTimersRebuildFromTopicOnNewDisk(t *testing.T) {
	h := newHarness(t)
	in := h.start(t.TempDir())
	h.schedule("early", time.Second)
	h.schedule("late", time.Minute)
	base := h.clock.Now()
	h.clock.Set(base.Add(2 * time.Second))
	h.expect("early")
	in.stop(t)
	in = h.start(t.TempDir()) // a new, empty disk
	h.expect()
	if n := in.s.Pending(); n != 1 {
		t.Fatalf("pending %d after the rebuild, want 1", n)
	}
	h.clock.Set(base.Add(2 * time.Minute))
	h.expect("late")
}

// The pending gauge is kept per partition with every batch: it is right at
// once after a restart, without scanning.
func TestPendingCountSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	in := h.start(dir)
	for i := range 6 {
		h.schedule("t"+strconv.Itoa(i), time.Duration(i+1)*time.Minute)
	}
	h.produce(Cancel(h.cfg.Topics(), "t5"))
	h.eventually("five pending", func() bool { return in.s.Pending() == 5 })
	h.clock.Advance(2*time.Minute + time.Second)
	h.expect("t0", "t1")
	if n := in.s.Pending(); n != 3 {
		t.Fatalf("pending %d after firing two of five", n)
	}
	in.stop(t)
	in = h.start(dir)
	if n := in.s.Pending(); n != 3 {
		t.Fatalf("pending %d after a restart, want 3", n)
	}
}

// Timers due while the service was down fire at FireRate per second of the
// (injected) clock, in due order across partitions, each with its intended
// time.
func TestRecoveryStormIsPacedInDueOrder(t *testing.T) {
	h := newHarness(t)
	base := h.clock.Now()
	const n = 35
	for i := range n {
		// Due times interleave across partitions (ids hash anywhere).
		h.scheduleAt("storm-"+strconv.Itoa(i), base.Add(-time.Duration(n-i)*time.Second), strconv.Itoa(i))
	}
	cfg := h.config()
	cfg.DataDir = t.TempDir()
	cfg.FireRate = 100 // 10 per 100ms tick
	h.startWith(cfg)
	h.expect() // the clock has not moved: no tokens yet
	next := 0
	for _, batch := range []int{10, 10, 10, 5} {
		h.clock.Advance(100 * time.Millisecond)
		var want []string
		for range batch {
			want = append(want, strconv.Itoa(next))
			next++
		}
		recs := h.expect(want...)
		for i, r := range recs {
			if due := headers(r)[HeaderTimerDueMs]; due != strconv.FormatInt(base.Add(-time.Duration(n-next+batch-i)*time.Second).UnixMilli(), 10) {
				t.Fatalf("timer %s carries due %s", r.Value, due)
			}
		}
	}
}

// A timer moved while its old version is firing keeps its new schedule:
// the fired marker is conditional on the version that fired, and the
// service restates the moved timer so that the compacted topic keeps it.
func TestMoveWhileFiringKeepsTheNewSchedule(t *testing.T) {
	h := newHarness(t)
	base := h.clock.Now()
	moved := base.Add(time.Hour)
	var once sync.Once
	hook := func(point string) {
		if point == "fire" {
			once.Do(func() { h.scheduleAt("x", moved, "moved") })
		}
	}
	in := h.start(t.TempDir(), func(s *Service) { s.hook = hook })
	h.schedule("x", time.Second)
	h.eventually("x pending", func() bool { return in.s.Pending() == 1 })
	h.clock.Advance(2 * time.Second)
	h.expect("x")
	h.eventually("the moved timer pending again", func() bool { return in.s.Pending() == 1 })

	// The compacted topic keeps the move: a new disk rebuilds it.
	in.stop(t)
	time.Sleep(time.Second) // let kfake compact
	in = h.start(t.TempDir())
	if n := in.s.Pending(); n != 1 {
		t.Fatalf("pending %d after rebuilding from the topic, want the moved timer", n)
	}
	h.clock.Set(moved.Add(-time.Second))
	h.expect()
	h.clock.Set(moved.Add(time.Second))
	h.expect("moved")
}

// A timer scheduled again just as its old fired marker is cleaned up is not
// deleted by the clean-up tombstone.
func TestRescheduleDuringMarkerCleanupKeepsTheTimer(t *testing.T) {
	h := newHarness(t)
	base := h.clock.Now()
	again := base.Add(time.Hour)
	var once sync.Once
	hook := func(point string) {
		if point == "sweep" {
			once.Do(func() { h.scheduleAt("y", again, "again") })
		}
	}
	in := h.start(t.TempDir(), func(s *Service) { s.hook = hook })
	h.schedule("y", time.Second)
	h.clock.Advance(2 * time.Second)
	h.expect("y")
	h.clock.Advance(2 * time.Minute) // past the marker TTL: the sweep runs
	h.eventually("y scheduled again", func() bool { return in.s.Pending() == 1 })
	time.Sleep(2 * time.Second) // the clean-up tombstone and the restatement are applied
	if n := in.s.Pending(); n != 1 {
		t.Fatalf("pending %d after the clean-up, want the new timer", n)
	}
	in.stop(t)
	in = h.start(t.TempDir())
	if n := in.s.Pending(); n != 1 {
		t.Fatalf("pending %d after rebuilding from the topic, want the new timer", n)
	}
	h.clock.Set(again.Add(time.Second))
	h.expect("again")
}

// An evaluator timer's KIND_TIMER_FIRED event gets fired_ms filled in.
func TestFiredEventCarriesFiredTime(t *testing.T) {
	h := newHarness(t)
	h.start(t.TempDir())
	due := h.clock.Now().Add(time.Second)
	payload, err := proto.Marshal(&hookstreamv1.Event{Kind: hookstreamv1.Event_KIND_TIMER_FIRED, Id: "ev-1", Identity: "u-1", Timer: &hookstreamv1.TimerFired{Payload: []byte("state")}})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Schedule(h.cfg.Topics(), &hookstreamv1.TimerCommand{Id: "ev-timer", DueMs: due.UnixMilli(), DestinationTopic: h.cfg.Topics().Events, DestinationKey: []byte("u-1"), Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	h.produce(rec)
	h.clock.Advance(3 * time.Second)
	select {
	case r := <-h.events:
		var ev hookstreamv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		want := &hookstreamv1.TimerFired{TimerId: "ev-timer", DueMs: due.UnixMilli(), FiredMs: h.clock.Now().UnixMilli(), Payload: []byte("state")}
		if !proto.Equal(ev.Timer, want) || string(r.Key) != "u-1" {
			t.Fatalf("fired event timer %v key %q, want %v", ev.Timer, r.Key, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the evaluator timer did not fire")
	}
}

// fakeCatalog is a catalog whose campaigns tests set directly, with the
// times they were applied on the test clock.
type fakeCatalog struct {
	mu      sync.Mutex
	version int64
	camps   map[string]*manifest.Campaign
	applied map[string]time.Time // name/generation → applied
}

func newFakeCatalog() *fakeCatalog {
	return &fakeCatalog{camps: map[string]*manifest.Campaign{}, applied: map[string]time.Time{}}
}

func (f *fakeCatalog) Campaigns() []*manifest.Campaign {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*manifest.Campaign, 0, len(f.camps))
	for _, c := range f.camps {
		out = append(out, c)
	}
	return out
}

func (f *fakeCatalog) Version() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.version
}

// put applies a campaign at time at, as a new generation.
func (f *fakeCatalog) put(name string, d manifest.Delivery, state string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gen := int64(1)
	if c, ok := f.camps[name]; ok {
		gen = c.Metadata.Generation + 1
	}
	f.camps[name] = &manifest.Campaign{
		TypeMeta: manifest.TypeMeta{APIVersion: manifest.APIVersion, Kind: manifest.KindCampaign},
		Metadata: manifest.Metadata{Name: name, Generation: gen},
		Spec:     manifest.CampaignSpec{Webhook: "w", State: state, Delivery: d},
	}
	f.applied[name+"/"+strconv.FormatInt(gen, 10)] = at
	f.version++
}

func (f *fakeCatalog) del(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.camps, name)
	f.version++
}

func (f *fakeCatalog) appliedAt(name string, gen int64) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.applied[name+"/"+strconv.FormatInt(gen, 10)]
	return t, ok
}

// A timer scheduled already overdue, after the service fired everything
// before it, still fires: scans start past fired entries but never past a
// new one.
func TestOverdueTimerScheduledLateFires(t *testing.T) {
	h := newHarness(t)
	in := h.start(t.TempDir())
	for i := range 3 {
		h.schedule("early-"+strconv.Itoa(i), time.Duration(i+1)*time.Second)
	}
	h.clock.Advance(5 * time.Second)
	h.expect("early-0", "early-1", "early-2")
	h.clock.Advance(time.Minute) // scans have moved past now
	h.expect()
	h.scheduleAt("overdue", h.clock.Now().Add(-time.Hour), "overdue")
	h.expect("overdue")
	if n := in.s.Pending(); n != 0 {
		t.Fatalf("pending %d", n)
	}
}

// A fired timer's marker is removed from the topic by a tombstone after
// the marker TTL, and its state is forgotten after another.
func TestFiredMarkersAreCleanedUp(t *testing.T) {
	h := newHarness(t)
	in := h.start(t.TempDir())
	h.schedule("x", time.Second)
	h.clock.Advance(2 * time.Second)
	h.expect("x")
	state := func() state {
		in.s.mu.Lock()
		defer in.s.mu.Unlock()
		for p := range int32(h.cfg.Partitions) {
			if e, err := load(in.s.store.db, p, "x"); err != nil {
				t.Fatal(err)
			} else if e != nil {
				return e.state
			}
		}
		return 0
	}
	h.eventually("the fired marker applied", func() bool { return state() == stateFired })
	h.clock.Advance(time.Minute + time.Second)
	h.eventually("the clean-up tombstone applied", func() bool { return state() == stateGone })
	h.clock.Advance(time.Minute + time.Second)
	h.eventually("the timer forgotten", func() bool { return state() == 0 })
}

// A fired record continues the trace of the span that scheduled its timer:
// its traceparent header carries that trace.
func TestFiredRecordContinuesTheSchedulingTrace(t *testing.T) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	tp := sdktrace.NewTracerProvider()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		_ = tp.Shutdown(context.Background())
	})
	h := newHarness(t)
	h.start(t.TempDir())
	ctx, span := tp.Tracer("test").Start(context.Background(), "evaluator.schedule_timer")
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	span.End()
	c := h.command("traced", h.clock.Now().Add(time.Second), "traced")
	c.TraceContext = carrier
	rec, err := Schedule(h.cfg.Topics(), c)
	if err != nil {
		t.Fatal(err)
	}
	h.produce(rec)
	h.clock.Advance(2 * time.Second)
	got := h.expect("traced")
	if tp := headers(got[0])["traceparent"]; !strings.Contains(tp, span.SpanContext().TraceID().String()) {
		t.Fatalf("fired record traceparent %q, want trace %s", tp, span.SpanContext().TraceID())
	}
}
