package timer

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// maxFireBatch caps the timers fired in one produce round trip.
const maxFireBatch = 1000

// loop fires due timers, emits run markers and cleans up markers until ctx
// ends. Pacing follows the injected clock; the ticker only says when to
// look.
func (s *Service) loop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.Tick.Std())
	defer tick.Stop()
	pace := newPacer(s.cfg.FireRate, s.cfg.Tick.Std(), s.now())
	sweepEvery := max(1, int(time.Second/s.cfg.Tick.Std()))
	for i := 0; ; {
		ticked := false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			ticked = true
			i++
		case <-s.wake:
		}
		s.refreshPartitions(ctx, ticked)
		if err := s.emitRuns(ctx, s.now()); err != nil && ctx.Err() == nil {
			s.log.Error("emitting run markers failed; will retry", "err", err)
		}
		if err := s.fire(ctx, pace); err != nil && ctx.Err() == nil {
			s.log.Error("firing timers failed; will retry", "err", err)
		}
		if ticked && i%sweepEvery == 0 {
			if err := s.sweep(ctx, s.now()); err != nil && ctx.Err() == nil {
				s.log.Error("cleaning up fired markers failed; will retry", "err", err)
			}
		}
	}
}

// pacer is a token bucket on the injected clock: at most rate timers per
// second, in bursts of at most two ticks' worth. It starts empty, so that
// partitions that catch up at slightly different moments after a start
// still fire a backlog in due order across all of them.
type pacer struct {
	rate, burst, tokens float64
	last                time.Time
}

func newPacer(rate int, tick time.Duration, now time.Time) *pacer {
	perTick := max(1, float64(rate)*tick.Seconds())
	return &pacer{rate: float64(rate), burst: 2 * perTick, last: now}
}

// available refills the bucket up to now and returns the whole tokens in it.
func (p *pacer) available(now time.Time) int {
	if now.After(p.last) {
		p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		p.last = now
	}
	return int(p.tokens)
}

func (p *pacer) spend(n int) { p.tokens -= float64(n) }

// fire fires as many due timers as the pacer allows.
func (s *Service) fire(ctx context.Context, pace *pacer) error {
	for {
		now := s.now()
		n := min(pace.available(now), maxFireBatch)
		if n == 0 {
			return nil
		}
		k, err := s.fireDue(ctx, now, n)
		pace.spend(k)
		if err != nil || k < n {
			return err
		}
	}
}

// fireDue fires up to limit due timers of the ready partitions, in due
// order across partitions: their payloads first, then their fired markers.
// A crash in between fires them again (consumers deduplicate by id) rather
// than losing one. The lock is not held while producing, so that commands
// keep being applied: a timer moved or cancelled meanwhile keeps its new
// state, because its fired marker is conditional on the version that fired.
func (s *Service) fireDue(ctx context.Context, now time.Time, limit int) (int, error) {
	nowMs := now.UnixMilli()
	due, tcs, out, markers, marks, err := s.collectDue(nowMs, limit)
	if err != nil || len(due) == 0 {
		if err == nil {
			s.mu.Lock()
			for p, at := range marks {
				s.raiseLow(p, 'd', at)
			}
			s.mu.Unlock()
		}
		return 0, err
	}
	spans := s.startFireSpans(ctx, due, tcs, out, nowMs)
	err = kafka.ProduceSync(ctx, s.cons.Client(), out...)
	for _, sp := range spans {
		if err != nil {
			sp.SetStatus(codes.Error, err.Error())
		}
		sp.End()
	}
	if err != nil {
		return 0, fmt.Errorf("fire timers: %w", err)
	}
	if s.hook != nil {
		s.hook("fire")
	}
	if err := s.produceDirect(ctx, markers...); err != nil {
		return 0, fmt.Errorf("write fired markers: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.store.writer()
	defer w.close()
	for _, d := range due {
		s.lateHist.Record(ctx, float64(nowMs-d.e.at)/1000)
		if v, ok := s.firing[timerKey{d.p, d.id}]; !ok || v != d.e.version {
			continue // changed while firing: the new state stands
		}
		if err := w.set(d.p, d.id, d.e, &entry{state: stateFiring, version: d.e.version, cmd: d.e.cmd, at: d.e.at}); err != nil {
			return 0, err
		}
	}
	// Not synced: a machine crash loses a suffix of batches, which only
	// fires these timers again.
	counts, err := w.commit(pebble.NoSync)
	if err != nil {
		return 0, fmt.Errorf("store fired timers: %w", err)
	}
	s.committed(w, counts)
	for p, at := range marks {
		s.raiseLow(p, 'd', at)
	}
	s.fired.Add(ctx, int64(len(due)))
	return len(due), nil
}

// collectDue reads up to limit due timers and builds their records.
// marks says, per partition, where the next scan may start once they are
// handled.
func (s *Service) collectDue(nowMs int64, limit int) (due []indexed, tcs []map[string]string, out, markers []*kgo.Record, marks map[int32]int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.firing)
	scanned := map[int32]int{}
	for _, p := range s.readyParts() {
		s.beginScan(p, 'd')
		ds, err := s.store.scan('d', p, s.parts[p].low['d'], nowMs, limit)
		if err != nil {
			return nil, nil, nil, nil, nil, fmt.Errorf("read due timers of partition %d: %w", p, err)
		}
		scanned[p] = len(ds)
		due = append(due, ds...)
	}
	slices.SortFunc(due, func(a, b indexed) int {
		return cmp.Or(cmp.Compare(a.e.at, b.e.at), cmp.Compare(a.p, b.p), cmp.Compare(a.id, b.id))
	})
	due = due[:min(len(due), limit)]
	// Each partition's kept entries are a prefix of its due order: the
	// next scan starts at the last one kept, or past now when every entry
	// due by now was kept.
	kept := map[int32]int{}
	marks = map[int32]int64{}
	for _, d := range due {
		kept[d.p]++
		marks[d.p] = d.e.at
		s.firing[timerKey{d.p, d.id}] = d.e.version
	}
	for p, n := range scanned {
		if n < limit && kept[p] == n {
			marks[p] = nowMs + 1
		}
	}
	out = make([]*kgo.Record, 0, len(due))
	markers = make([]*kgo.Record, 0, len(due))
	firedMs := strconv.FormatInt(nowMs, 10)
	for _, d := range due {
		var c hookstreamv1.TimerCommand
		if err := proto.Unmarshal(d.e.raw, &c); err != nil {
			return nil, nil, nil, nil, nil, fmt.Errorf("decode stored timer %q: %w", d.id, err)
		}
		payload := c.Payload
		if c.DestinationTopic == s.topics.Events {
			payload = stampFired(payload, &c, nowMs)
		}
		out = append(out, &kgo.Record{Topic: c.DestinationTopic, Key: c.DestinationKey, Value: payload, Headers: []kgo.RecordHeader{
			{Key: HeaderTimerID, Value: []byte(c.Id)},
			{Key: HeaderTimerDueMs, Value: []byte(strconv.FormatInt(c.DueMs, 10))},
			{Key: HeaderTimerFiredMs, Value: []byte(firedMs)},
		}})
		mv, err := proto.Marshal(&hookstreamv1.TimerCommand{Id: c.Id, DueMs: c.DueMs, Owner: OwnerFired, CreatedMs: nowMs})
		if err != nil {
			return nil, nil, nil, nil, nil, err
		}
		m := s.conditional(d.p, d.id, d.e.version)
		m.Value = mv
		markers = append(markers, m)
		tcs = append(tcs, c.TraceContext)
	}
	return due, tcs, out, markers, marks, nil
}

// startFireSpans starts a span for each fired record whose command carries
// the trace context of the span that scheduled it: a child of that span,
// linked to it, so that the firing continues the trace; the span's context
// becomes the record's, whose headers then carry it on.
func (s *Service) startFireSpans(ctx context.Context, due []indexed, tcs []map[string]string, out []*kgo.Record, nowMs int64) []trace.Span {
	var spans []trace.Span
	for i, d := range due {
		tc := tcs[i]
		if len(tc) == 0 {
			continue
		}
		parent := otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(tc))
		sctx, sp := s.tracer.Start(parent, "timer.fire", trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(trace.LinkFromContext(parent)))
		if sp.IsRecording() {
			// Set with where the record went, by the Kafka hook.
			a := spanattr.Get()
			*a = append(*a, attribute.String("timer_id", d.id), attribute.Int64("due_ms", d.e.at), attribute.Int64("lateness_ms", nowMs-d.e.at))
			sctx = spanattr.Defer(sctx, a)
		}
		out[i].Context = sctx
		spans = append(spans, sp)
	}
	return spans
}

// stampFired fills in fired_ms (and the timer id and due time when unset)
// of an evaluator's KIND_TIMER_FIRED event; other payloads pass unchanged.
func stampFired(payload []byte, c *hookstreamv1.TimerCommand, nowMs int64) []byte {
	var ev hookstreamv1.Event
	if proto.Unmarshal(payload, &ev) != nil || ev.Kind != hookstreamv1.Event_KIND_TIMER_FIRED {
		return payload
	}
	if ev.Timer == nil {
		ev.Timer = &hookstreamv1.TimerFired{}
	}
	ev.Timer.FiredMs = nowMs
	if ev.Timer.TimerId == "" {
		ev.Timer.TimerId = c.Id
	}
	if ev.Timer.DueMs == 0 {
		ev.Timer.DueMs = c.DueMs
	}
	b, err := proto.Marshal(&ev)
	if err != nil {
		return payload
	}
	return b
}

// sweepBatch caps the expired entries handled per partition and sweep.
const sweepBatch = 5000

// sweep removes fired markers whose TTL has passed from the compacted topic
// (a conditional tombstone: it cannot delete a timer scheduled again since)
// and forgets gone timers whose TTL has passed.
func (s *Service) sweep(ctx context.Context, now time.Time) error {
	nowMs := now.UnixMilli()
	expired, marks, err := s.forgetExpired(nowMs)
	if err != nil {
		return err
	}
	tombs := make([]*kgo.Record, 0, len(expired))
	for _, x := range expired {
		tombs = append(tombs, s.conditional(x.p, x.id, x.e.version))
	}
	if s.hook != nil && len(tombs) > 0 {
		s.hook("sweep")
	}
	if err := s.produceDirect(ctx, tombs...); err != nil {
		return fmt.Errorf("clean up fired markers: %w", err)
	}
	// Look again after another TTL in case a tombstone is never applied
	// (a crash before it is written).
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.store.writer()
	defer w.close()
	for _, x := range expired {
		cur, err := w.load(x.p, x.id)
		if err != nil {
			return err
		}
		if cur == nil || cur.state != stateFired || cur.version != x.e.version {
			continue
		}
		if err := w.set(x.p, x.id, cur, &entry{state: stateFired, version: cur.version, cmd: cur.cmd, at: nowMs + s.cfg.MarkerTTL.Std().Milliseconds()}); err != nil {
			return err
		}
	}
	counts, err := w.commit(pebble.NoSync)
	if err != nil {
		return fmt.Errorf("store cleaned-up markers: %w", err)
	}
	s.committed(w, counts)
	for p, at := range marks {
		s.raiseLow(p, 'x', at)
	}
	return nil
}

// forgetExpired forgets the gone timers whose TTL has passed and returns
// the fired markers whose TTL has passed, with where the next sweep of
// each partition may start once they are handled.
func (s *Service) forgetExpired(nowMs int64) ([]indexed, map[int32]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.store.writer()
	defer w.close()
	var fired []indexed
	marks := map[int32]int64{}
	for _, p := range s.readyParts() {
		s.beginScan(p, 'x')
		exp, err := s.store.scan('x', p, s.parts[p].low['x'], nowMs, sweepBatch)
		if err != nil {
			return nil, nil, fmt.Errorf("read expired markers of partition %d: %w", p, err)
		}
		marks[p] = nowMs + 1
		if len(exp) == sweepBatch {
			marks[p] = exp[len(exp)-1].e.at
		}
		for _, x := range exp {
			if x.e.state == stateFired {
				fired = append(fired, x)
			} else if err := w.set(x.p, x.id, x.e, nil); err != nil {
				return nil, nil, err
			}
		}
	}
	counts, err := w.commit(pebble.NoSync)
	if err != nil {
		return nil, nil, fmt.Errorf("forget expired timers: %w", err)
	}
	s.committed(w, counts)
	return fired, marks, nil
}
