package timer

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Headers on every fired record and run marker, so that consumers can tell
// a timer's intended time from when it fired and apply their lateness rules.
const (
	HeaderTimerID      = "hookstream-timer-id"
	HeaderTimerDueMs   = "hookstream-timer-due-ms"
	HeaderTimerFiredMs = "hookstream-timer-fired-ms"
	// HeaderIfVersion marks the timer service's own records on the timers
	// topic (fired markers, clean-up tombstones, restatements) as
	// conditional: they were written for the timer state from the record at
	// this offset and take effect only if no command of another writer
	// came after it. See docs/timers.md.
	HeaderIfVersion = "hookstream-timer-if-version"
)

// Owners of the records the timer service writes to the timers topic.
const (
	// OwnerFired is the owner of a fired marker: a TimerCommand with the
	// fired timer's id and due time and no destination.
	OwnerFired = "timer.fired"
	// OwnerSchedule is the owner of a scheduled campaign's progress record.
	OwnerSchedule = "timer.schedule"
)

// RunKeyPrefix starts the keys of scheduled-campaign progress records on the
// timers topic ("hookstream.run/<campaign>"); timer ids must not start with
// it.
const RunKeyPrefix = "hookstream.run/"

// Campaigns is what the timer service reads of the catalog to emit the run
// markers of scheduled campaigns. *catalog.Catalog implements it; it must be
// safe for concurrent use.
type Campaigns interface {
	// Campaigns returns every campaign; the objects must not be modified.
	Campaigns() []*manifest.Campaign
	// Version changes whenever the set of campaigns may have.
	Version() int64
}

// AppliedAtFunc reports when a campaign's generation was applied (the
// timestamp of its record on the campaigns topic), false when not known yet.
type AppliedAtFunc func(campaign string, generation int64) (time.Time, bool)

// Option changes a Service.
type Option func(*Service)

// WithAppliedAt replaces the campaigns-topic reader that tells when each
// campaign generation was applied (tests use it with a fake clock).
func WithAppliedAt(f AppliedAtFunc) Option { return func(s *Service) { s.appliedAt = f } }

// Service is the timer service.
type Service struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	now    func() time.Time
	cat    Campaigns

	store *store
	cons  *kafka.Consumer
	// direct produces the service's own records to explicit partitions of
	// the timers topic, untraced (bookkeeping, part of no user's trace);
	// runCl produces run markers to explicit partitions of the events topic.
	direct *kgo.Client
	runCl  *kgo.Client
	tracer trace.Tracer
	// produceDirect produces through direct and waits for the acks.
	produceDirect func(ctx context.Context, recs ...*kgo.Record) error
	index         *appliedIndex
	// appliedAt is index.lookup unless replaced by WithAppliedAt.
	appliedAt AppliedAtFunc

	// mu orders applying commands against firing, emitting and sweeping;
	// everything below is guarded by it.
	mu    sync.Mutex
	parts map[int32]*partition
	runs  runState
	// firing holds the versions of the timers being fired; apply removes a
	// timer it changes, so that firing does not overwrite the change.
	firing map[timerKey]int64

	// counts are the pending timers per owned partition, for the gauge.
	countMu sync.Mutex
	counts  map[int32]int64

	wake chan struct{}
	// hook, when set (tests), is called without mu at named points:
	// "fire" between producing payloads and fired markers, "sweep" before
	// producing clean-up tombstones.
	hook func(point string)

	fired    metric.Int64Counter
	lateHist metric.Float64Histogram
	runsOut  metric.Int64Counter
	restated metric.Int64Counter
}

// partition is an owned partition of the timers topic.
type partition struct {
	// next is the next offset to apply (-1: the store never saw it).
	next int64
	// target is the end offset when the partition was assigned (-1 until
	// known); the partition fires nothing until it has applied up to it, so
	// that a stale store never fires a timer cancelled or moved since.
	target int64
	ready  bool
	// stalled counts ticks without progress while behind target.
	stalled  int
	lastNext int64
	// low holds, per time index ('d', 'x'), a time below which the index
	// is empty: scans start there.
	low map[byte]int64
	// written holds, per time index, the earliest time indexed since the
	// current scan of it began, so that raising low once the scanned
	// entries are handled never skips an entry written meanwhile.
	written map[byte]int64
}

func newPartition(next int64) *partition {
	return &partition{next: next, target: -1, lastNext: next, low: map[byte]int64{}, written: map[byte]int64{}}
}

// New returns a timer service. cat gives the scheduled campaigns (nil: no
// run markers); now is its clock (time.Now when nil).
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, meter metric.Meter, cat Campaigns, now func() time.Time, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	s := &Service{
		cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "timer"), now: now, cat: cat, tracer: kafka.Tracer("timer"),
		parts: map[int32]*partition{}, counts: map[int32]int64{}, wake: make(chan struct{}, 1), firing: map[timerKey]int64{},
	}
	s.runs.init()
	s.produceDirect = func(ctx context.Context, recs ...*kgo.Record) error { return kafka.ProduceSync(ctx, s.direct, recs...) }
	for _, o := range opts {
		o(s)
	}
	var err error
	if s.fired, err = meter.Int64Counter("hookstream_timers_fired_total", metric.WithDescription("Timers fired.")); err != nil {
		return nil, err
	}
	if s.lateHist, err = meter.Float64Histogram("hookstream_timer_fire_lateness_seconds", metric.WithDescription("How long after its due time a timer fired."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	if s.runsOut, err = meter.Int64Counter("hookstream_timer_runs_total", metric.WithDescription("Scheduled-campaign run markers emitted (one per run and partition).")); err != nil {
		return nil, err
	}
	if s.restated, err = meter.Int64Counter("hookstream_timer_restated_total", metric.WithDescription("Timer states written again because a conditional record lost a race.")); err != nil {
		return nil, err
	}
	_, err = meter.Int64ObservableGauge("hookstream_timers_pending", metric.WithDescription("Timers waiting, in this process's partitions."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(s.Pending())
			return nil
		}))
	return s, err
}

// Service returns the timer service's lifecycle.
func (s *Service) Service() *service.Service {
	return service.New("timer", s.starting, s.running, s.stopping)
}

func (s *Service) starting(ctx context.Context) error {
	st, reset, err := openStore(s.cfg.DataDir, s.log)
	if err != nil {
		return err
	}
	s.store = st
	if reset {
		s.log.Warn("timer state had another layout; emptied it, rebuilding from the timers topic", "dir", s.cfg.DataDir)
	}
	if s.direct, err = kafka.NewUntracedClient(s.kcfg, s.log, "timer-direct", kgo.RecordPartitioner(kgo.ManualPartitioner())); err != nil {
		return err
	}
	if s.runCl, err = kafka.NewClient(s.kcfg, s.log, "timer-runs", kgo.RecordPartitioner(kgo.ManualPartitioner())); err != nil {
		return err
	}
	if err := s.checkPartitions(ctx); err != nil {
		return err
	}
	if s.cat != nil && s.appliedAt == nil {
		if s.index, err = newAppliedIndex(s.kcfg, s.log); err != nil {
			return err
		}
		s.appliedAt = s.index.lookup
	}
	s.cons, err = kafka.NewConsumer(s.kcfg, s.log, "timer", kafka.ConsumerConfig{
		Group: s.kcfg.Group("timer"), Topics: []string{s.topics.Timers}, InstanceID: s.cfg.InstanceID,
		OnAssigned: s.assigned, OnRevoked: s.revoked,
	}, s.apply, kgo.AdjustFetchOffsetsFn(s.localOffsets),
		// An empty fetch (kfake answers one when starting inside a
		// compacted gap) should not hold a rebuild up for the default 5s.
		kgo.FetchMaxWait(time.Second))
	return err
}

func (s *Service) running(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.loop(ctx) }()
	if s.index != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.index.run(ctx) }()
	}
	err := s.cons.Run(ctx)
	wg.Wait()
	return err
}

func (s *Service) stopping(error) error {
	if s.cons != nil {
		s.cons.Close()
	}
	if s.index != nil {
		s.index.close()
	}
	if s.direct != nil {
		s.direct.Close()
	}
	if s.runCl != nil {
		s.runCl.Close()
	}
	if s.store != nil {
		return s.store.db.Close()
	}
	return nil
}

// checkPartitions makes sure that partition p of the timers topic can stand
// for partition p of the events topic: run markers go to the partition of
// the same number, so the two must have the same count.
func (s *Service) checkPartitions(ctx context.Context) error {
	td, err := kadm.NewClient(s.direct).ListTopics(ctx, s.topics.Timers, s.topics.Events)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	var n [2]int
	for i, t := range []string{s.topics.Timers, s.topics.Events} {
		d, ok := td[t]
		if !ok || d.Err != nil {
			return fmt.Errorf("topic %s: missing (%v)", t, d.Err)
		}
		n[i] = len(d.Partitions)
	}
	if n[0] != n[1] {
		return fmt.Errorf("topics %s (%d partitions) and %s (%d) must have the same partition count", s.topics.Timers, n[0], s.topics.Events, n[1])
	}
	return nil
}

// localOffsets starts each assigned partition where the local store left
// off, or at the beginning when the store has never seen it: the compacted
// topic then rebuilds every pending timer.
func (s *Service) localOffsets(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, ps := range m {
		for p := range ps {
			off, err := s.store.offset(p)
			if err != nil {
				return nil, fmt.Errorf("local offset of partition %d: %w", p, err)
			}
			m[t][p] = kgo.NewOffset().At(max(off, 0))
		}
	}
	return m, nil
}

func (s *Service) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	for _, p := range m[s.topics.Timers] {
		next, err := s.store.offset(p)
		if err != nil {
			s.log.Error("reading local offset", "partition", p, "err", err)
		}
		n, err := s.store.pending(p)
		if err != nil {
			s.log.Error("reading pending count", "partition", p, "err", err)
		}
		s.parts[p] = newPartition(next)
		s.countMu.Lock()
		s.counts[p] = n
		s.countMu.Unlock()
	}
	s.mu.Unlock()
	s.log.Info("partitions assigned", "partitions", m[s.topics.Timers])
	s.poke()
}

func (s *Service) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	for _, p := range m[s.topics.Timers] {
		delete(s.parts, p)
		s.runs.forget(p)
		s.countMu.Lock()
		delete(s.counts, p)
		s.countMu.Unlock()
	}
	s.mu.Unlock()
	s.log.Info("partitions revoked", "partitions", m[s.topics.Timers])
}

// refreshPartitions learns the end offsets of newly assigned partitions and
// marks the ones that have caught up as ready to fire. ticked says that a
// tick (not a wake-up) called it, for the stall count.
func (s *Service) refreshPartitions(ctx context.Context, ticked bool) {
	s.mu.Lock()
	var unknown []int32
	for p, ps := range s.parts {
		if ps.target < 0 {
			unknown = append(unknown, p)
		}
	}
	s.mu.Unlock()
	var ends kadm.ListedOffsets
	if len(unknown) > 0 {
		var err error
		if ends, err = kadm.NewClient(s.direct).ListEndOffsets(ctx, s.topics.Timers); err != nil {
			s.log.Warn("listing end offsets of the timers topic; will retry", "err", err)
			ends = nil
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A partition that waits while the consumer reads the others (a
	// rebuild reads them one after another) is not stalled: only a tick in
	// which no partition behind its end advanced counts.
	advanced := false
	for _, ps := range s.parts {
		if !ps.ready && ps.target >= 0 && ps.next != ps.lastNext {
			advanced = true
		}
	}
	for p, ps := range s.parts {
		if ps.target < 0 {
			if o, ok := ends.Lookup(s.topics.Timers, p); ok && o.Err == nil {
				ps.target = o.Offset
			} else {
				continue
			}
		}
		if ps.ready {
			continue
		}
		switch {
		case max(ps.next, 0) >= ps.target:
			ps.ready = true
			s.log.Info("partition caught up; firing", "partition", p, "offset", ps.next)
		case !ticked:
		case ps.next == ps.lastNext && advanced:
			ps.stalled = 0 // waiting its turn
		case ps.next == ps.lastNext:
			// Compaction can remove the records at the very end of the
			// log, so the end offset may never be reached: a partition
			// that stops advancing for stallAfter, while no other
			// partition does either, is taken as caught up.
			if ps.stalled++; time.Duration(ps.stalled)*s.cfg.Tick.Std() >= stallAfter {
				ps.ready = true
				s.log.Warn("partition stopped short of its end offset; firing", "partition", p, "offset", ps.next, "end", ps.target)
			}
		default:
			ps.stalled, ps.lastNext = 0, ps.next
		}
	}
}

// stallAfter is how long without progress, of the partition and of every
// other one behind its end, makes a partition that is behind its end
// offset count as caught up (counted in ticks, not clock time).
const stallAfter = 30 * time.Second

// readyParts returns the owned partitions that may fire, in order. Call
// with mu held.
func (s *Service) readyParts() []int32 {
	out := make([]int32, 0, len(s.parts))
	for p, ps := range s.parts {
		if ps.ready {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// committed takes in what a committed writer changed: the pending counts
// and the earliest times it indexed. Call with mu held.
func (s *Service) committed(w *writer, counts map[int32]int64) {
	for k, at := range w.low {
		if ps := s.parts[k.p]; ps != nil {
			ps.low[k.kind] = min(ps.low[k.kind], at)
			if v, ok := ps.written[k.kind]; ok {
				ps.written[k.kind] = min(v, at)
			}
		}
	}
	s.setCounts(counts)
}

// beginScan notes that a scan of index kind of p starts. Call with mu held.
func (s *Service) beginScan(p int32, kind byte) {
	if ps := s.parts[p]; ps != nil {
		ps.written[kind] = math.MaxInt64
	}
}

// raiseLow moves the start of the scans of index kind of p up to at, the
// time before which the last scan found nothing left to handle, but never
// past an entry written since that scan began. Call with mu held.
func (s *Service) raiseLow(p int32, kind byte, at int64) {
	ps := s.parts[p]
	if ps == nil {
		return
	}
	if v, ok := ps.written[kind]; ok {
		at = min(at, v)
	}
	ps.low[kind] = max(ps.low[kind], at)
}

func (s *Service) setCounts(counts map[int32]int64) {
	if len(counts) == 0 {
		return
	}
	s.countMu.Lock()
	for p, n := range counts {
		if _, ok := s.counts[p]; ok {
			s.counts[p] = n
		}
	}
	s.countMu.Unlock()
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// readyPartitions counts the owned partitions that have caught up.
func (s *Service) readyPartitions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.readyParts())
}

// Pending counts the timers in the partitions this process owns. It is
// O(partitions): the counts are kept with every batch.
func (s *Service) Pending() int64 {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	var n int64
	for _, c := range s.counts {
		n += c
	}
	return n
}

// Schedule returns the record that schedules (or moves) a timer. The id
// must not be empty nor start with RunKeyPrefix, and the destination topic
// is required.
func Schedule(topics kafka.Topics, c *hookstreamv1.TimerCommand) (*kgo.Record, error) {
	switch {
	case c.Id == "" || strings.HasPrefix(c.Id, RunKeyPrefix):
		return nil, fmt.Errorf("timer id %q: must be set and not start with %q", c.Id, RunKeyPrefix)
	case c.DestinationTopic == "":
		return nil, fmt.Errorf("timer %q: destination_topic is required", c.Id)
	}
	v, err := proto.Marshal(c)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: topics.Timers, Key: []byte(c.Id), Value: v}, nil
}

// Cancel returns the record that cancels a timer.
func Cancel(topics kafka.Topics, id string) *kgo.Record {
	return &kgo.Record{Topic: topics.Timers, Key: []byte(id)}
}
