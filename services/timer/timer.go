package timer

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Headers on every fired record, so that consumers can tell a timer's
// intended time from when it fired and apply their lateness rules.
const (
	HeaderTimerID      = "hookstream-timer-id"
	HeaderTimerDueMs   = "hookstream-timer-due-ms"
	HeaderTimerFiredMs = "hookstream-timer-fired-ms"
)

// Service is the timer service.
type Service struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	now    func() time.Time
	store  *store
	cons   *kafka.Consumer
	tomb   *kgo.Client // produces tombstones to an explicit partition

	mu    sync.Mutex // orders applying commands against firing
	owned map[int32]bool
	wake  chan struct{}

	fired    metric.Int64Counter
	lateHist metric.Float64Histogram
}

// New returns a timer service; now is its clock (time.Now when nil).
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, meter metric.Meter, now func() time.Time) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	s := &Service{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "timer"), now: now, owned: map[int32]bool{}, wake: make(chan struct{}, 1)}
	var err error
	if s.fired, err = meter.Int64Counter("hookstream_timers_fired_total", metric.WithDescription("Timers fired.")); err != nil {
		return nil, err
	}
	if s.lateHist, err = meter.Float64Histogram("hookstream_timer_fire_lateness_seconds", metric.WithDescription("How long after its due time a timer fired."), metric.WithUnit("s")); err != nil {
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
	return service.New("timer",
		func(ctx context.Context) error {
			var err error
			if s.store, err = openStore(s.cfg.DataDir); err != nil {
				return err
			}
			if s.tomb, err = kafka.NewClient(s.kcfg, s.log, "timer-tombstones", kgo.RecordPartitioner(kgo.ManualPartitioner())); err != nil {
				return err
			}
			s.cons, err = kafka.NewConsumer(s.kcfg, s.log, "timer", kafka.ConsumerConfig{
				Group: "hookstream-timer", Topics: []string{s.topics.Timers}, InstanceID: s.cfg.InstanceID,
				OnAssigned: s.assigned, OnRevoked: s.revoked,
			}, s.apply, kgo.AdjustFetchOffsetsFn(s.localOffsets))
			return err
		},
		func(ctx context.Context) error {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); s.fireLoop(ctx) }()
			err := s.cons.Run(ctx)
			wg.Wait()
			return err
		},
		func(error) error {
			if s.cons != nil {
				s.cons.Close()
			}
			if s.tomb != nil {
				s.tomb.Close()
			}
			if s.store != nil {
				return s.store.db.Close()
			}
			return nil
		})
}

// localOffsets starts each assigned partition where the local store left
// off, or at the beginning when the store has never seen it: the compacted
// topic then rebuilds every pending timer.
func (s *Service) localOffsets(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	for t, ps := range m {
		for p := range ps {
			off, err := s.store.offset(p)
			if err != nil {
				return nil, err
			}
			if off < 0 {
				off = 0
			}
			m[t][p] = kgo.NewOffset().At(off)
		}
	}
	return m, nil
}

func (s *Service) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	for _, p := range m[s.topics.Timers] {
		s.owned[p] = true
	}
	s.mu.Unlock()
	s.poke()
}

func (s *Service) revoked(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	for _, p := range m[s.topics.Timers] {
		delete(s.owned, p)
	}
	s.mu.Unlock()
}

// apply stores a batch of timer commands and their offsets in one batch.
func (s *Service) apply(_ context.Context, recs []*kgo.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.store.db.NewIndexedBatch()
	defer b.Close()
	for _, r := range recs {
		id := string(r.Key)
		if r.Value == nil {
			if err := remove(b, r.Partition, id); err != nil {
				return err
			}
		} else {
			var c hookstreamv1.TimerCommand
			if err := proto.Unmarshal(r.Value, &c); err != nil || c.Id != id {
				s.log.Error("skipping bad timer command", "partition", r.Partition, "offset", r.Offset, "err", err)
			} else if err := put(b, r.Partition, &c, r.Value); err != nil {
				return err
			}
		}
		if err := setOffset(b, r.Partition, r.Offset+1); err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store timers: %w", err)
	}
	s.poke()
	return nil
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fireLoop fires due timers until ctx ends, at most FireRate per second.
func (s *Service) fireLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Tick.Std())
	defer tick.Stop()
	perTick := max(1, int(float64(s.cfg.FireRate)*s.cfg.Tick.Std().Seconds()))
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.wake:
		}
		if err := s.fireDue(context.WithoutCancel(ctx), perTick); err != nil {
			s.log.Error("firing timers failed; will retry", "err", err)
		}
	}
}

// fireDue fires up to limit due timers: their payloads first, then their
// tombstones, then removes them locally. A crash in between fires again
// (consumers deduplicate by id) rather than losing a timer.
func (s *Service) fireDue(ctx context.Context, limit int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	parts := make([]int32, 0, len(s.owned))
	for p := range s.owned {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	type due struct {
		p int32
		c *hookstreamv1.TimerCommand
	}
	var all []due
	for _, p := range parts {
		cs, err := s.store.due(p, now.UnixMilli(), limit)
		if err != nil {
			return err
		}
		for _, c := range cs {
			all = append(all, due{p, c})
		}
	}
	if len(all) == 0 {
		return nil
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].c.DueMs < all[j].c.DueMs })
	if len(all) > limit {
		all = all[:limit]
	}
	out := make([]*kgo.Record, 0, len(all))
	tombs := make([]*kgo.Record, 0, len(all))
	firedMs := strconv.FormatInt(now.UnixMilli(), 10)
	for _, d := range all {
		out = append(out, &kgo.Record{Topic: d.c.DestinationTopic, Key: d.c.DestinationKey, Value: d.c.Payload, Headers: []kgo.RecordHeader{
			{Key: HeaderTimerID, Value: []byte(d.c.Id)},
			{Key: HeaderTimerDueMs, Value: []byte(strconv.FormatInt(d.c.DueMs, 10))},
			{Key: HeaderTimerFiredMs, Value: []byte(firedMs)},
		}})
		tombs = append(tombs, &kgo.Record{Topic: s.topics.Timers, Partition: d.p, Key: []byte(d.c.Id)})
	}
	if err := kafka.ProduceSync(ctx, s.cons.Client(), out...); err != nil {
		return err
	}
	if err := kafka.ProduceSync(ctx, s.tomb, tombs...); err != nil {
		return err
	}
	b := s.store.db.NewIndexedBatch()
	defer b.Close()
	for _, d := range all {
		s.lateHist.Record(ctx, now.Sub(time.UnixMilli(d.c.DueMs)).Seconds())
		cur, err := get(b, d.p, d.c.Id)
		if err != nil {
			return err
		}
		if cur != nil && cur.DueMs == d.c.DueMs {
			if err := remove(b, d.p, d.c.Id); err != nil {
				return err
			}
		}
	}
	s.fired.Add(ctx, int64(len(all)))
	return b.Commit(pebble.Sync)
}

// Pending counts the timers in the partitions this process owns.
func (s *Service) Pending() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.store == nil {
		return 0
	}
	var n int64
	for p := range s.owned {
		c, err := s.store.pending(p)
		if err == nil {
			n += c
		}
	}
	return n
}

// Schedule returns the record that schedules (or moves) a timer.
func Schedule(topics kafka.Topics, c *hookstreamv1.TimerCommand) (*kgo.Record, error) {
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
