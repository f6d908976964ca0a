package evaluator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Evaluator consumes {prefix}events and produces triggers, timer commands,
// conversions and its state changelog.
//
// State, outputs and the consumed offset are committed together with the
// Goka / KIP-1035 pattern: the next input offset of each partition is kept
// in the same Pebble batch as the state and in the changelog, and the
// outputs have deterministic ids. A batch's outputs are acknowledged before
// its changelog records are produced, and both before its Pebble batch
// commits; a crash in between re-processes the batch, which produces the
// same ids again.
type Evaluator struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	eng    *engine
	db     *pebble.DB
	cons   *kafka.Consumer
	clog   *kgo.Client // changelog producer and restorer (explicit partitions)

	restoring sync.Map // partition → "restored/total" progress
	restored  metric.Int64Counter
}

// New returns an evaluator. cat must be kept current by a catalog follower.
// now is the clock (time.Now when nil).
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, cat *catalog.Catalog, meter metric.Meter, now func() time.Time) (*Evaluator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	m, err := newMetrics(meter)
	if err != nil {
		return nil, err
	}
	log = log.With("component", "evaluator")
	e := &Evaluator{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log,
		eng: &engine{cfg: cfg, topics: kcfg.Topics(), cat: cat, now: now, log: log, m: m, tracer: kafka.Tracer("evaluator")}}
	if e.restored, err = meter.Int64Counter("hookstream_evaluator_restored_records_total", metric.WithDescription("Changelog records applied while restoring state.")); err != nil {
		return nil, err
	}
	return e, nil
}

// Keys of the Pebble store. State keys are also the changelog's keys.
//
//	u<p:4><identity>  UserState of a user of partition p
//	o<p:4>            next input offset of partition p (also in the changelog)
//	c<p:4>            next changelog offset to restore from (local only)
func userKey(p int32, identity string) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{'u'}, uint32(p)), identity...)
}
func offsetKey(p int32) []byte     { return binary.BigEndian.AppendUint32([]byte{'o'}, uint32(p)) }
func checkpointKey(p int32) []byte { return binary.BigEndian.AppendUint32([]byte{'c'}, uint32(p)) }

// Service returns the evaluator's lifecycle. It is not ready while it
// restores partitions from the changelog.
func (e *Evaluator) Service() *service.Service {
	s := service.New("evaluator",
		func(ctx context.Context) error {
			var err error
			if e.db, err = pebble.Open(e.cfg.DataDir, pebbleOptions(&e.cfg, e.log)); err != nil {
				return fmt.Errorf("open evaluator state %s: %w", e.cfg.DataDir, err)
			}
			if e.clog, err = kafka.NewUntracedClient(e.kcfg, e.log, "evaluator-changelog", kgo.RecordPartitioner(kgo.ManualPartitioner())); err != nil {
				return err
			}
			if err := e.checkPartitions(ctx); err != nil {
				return err
			}
			e.cons, err = kafka.NewConsumer(e.kcfg, e.log, "evaluator", kafka.ConsumerConfig{
				Group: e.kcfg.Group("evaluator"), Topics: []string{e.topics.Events}, InstanceID: e.cfg.InstanceID,
			}, e.handle, kgo.AdjustFetchOffsetsFn(e.restore))
			return err
		},
		func(ctx context.Context) error { return e.cons.Run(ctx) },
		func(error) error {
			if e.cons != nil {
				e.cons.Close()
			}
			if e.clog != nil {
				e.clog.Close()
			}
			if e.db != nil {
				return e.db.Close()
			}
			return nil
		})
	s.SetReadiness(func() (bool, string) {
		why := ""
		e.restoring.Range(func(k, v any) bool {
			why = fmt.Sprintf("restoring partition %d from the changelog (%s records)", k, v)
			return false
		})
		return why == "", why
	})
	return s
}

// checkPartitions refuses to start when the events topic and the changelog
// have different partition counts: state would land on the wrong partition.
func (e *Evaluator) checkPartitions(ctx context.Context) error {
	td, err := kadm.NewClient(e.clog).ListTopics(ctx, e.topics.Events, e.topics.EvaluatorChangelog)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	ev, cl := td[e.topics.Events], td[e.topics.EvaluatorChangelog]
	if ev.Err != nil || cl.Err != nil {
		return fmt.Errorf("topics %s and %s must exist: %v %v", e.topics.Events, e.topics.EvaluatorChangelog, ev.Err, cl.Err)
	}
	if len(ev.Partitions) != len(cl.Partitions) {
		return fmt.Errorf("%s has %d partitions but %s has %d: they must match", e.topics.Events, len(ev.Partitions), e.topics.EvaluatorChangelog, len(cl.Partitions))
	}
	return nil
}

// restore runs when partitions are assigned, before they are fetched: it
// applies the changelog from the local checkpoint (from the start on a new
// disk) and returns the input offsets the restored state says to resume at.
func (e *Evaluator) restore(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	parts := assigned[e.topics.Events]
	if len(parts) == 0 {
		return assigned, nil
	}
	start := time.Now()
	from := map[int32]kgo.Offset{}
	for p := range parts {
		c, err := e.readInt(checkpointKey(p))
		if err != nil {
			return nil, err
		}
		from[p] = kgo.NewOffset().At(max(c, 0))
		e.restoring.Store(p, "0")
	}
	defer func() {
		for p := range parts {
			e.restoring.Delete(p)
		}
	}()
	n, err := e.restoreChangelog(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("restore changelog: %w", err)
	}
	e.restored.Add(ctx, 0) // the series exists from the first assignment on
	for p := range parts {
		off, err := e.readInt(offsetKey(p))
		if err != nil {
			return nil, err
		}
		if off < 0 {
			off = 0
		}
		assigned[e.topics.Events][p] = kgo.NewOffset().At(off)
	}
	e.log.Info("partitions restored", "partitions", len(parts), "changelog_records", n, "took", time.Since(start).Round(time.Millisecond))
	return assigned, nil
}

// restoreChangelog consumes the given changelog partitions up to their end
// offsets at the time of the call, writing every record into Pebble.
func (e *Evaluator) restoreChangelog(ctx context.Context, from map[int32]kgo.Offset) (int64, error) {
	topic := e.topics.EvaluatorChangelog
	adm := kadm.NewClient(e.clog)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	todo := map[int32]int64{} // partition → end offset
	for p, o := range from {
		end, ok := ends.Lookup(topic, p)
		if !ok || end.Err != nil {
			return 0, fmt.Errorf("changelog partition %d: %v", p, end.Err)
		}
		if end.Offset > o.EpochOffset().Offset {
			todo[p] = end.Offset
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	offsets := map[string]map[int32]kgo.Offset{topic: {}}
	for p := range todo {
		offsets[topic][p] = from[p]
	}
	cl, err := kafka.NewUntracedClient(e.kcfg, e.log, "evaluator-restore", kgo.ConsumePartitions(offsets), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var total int64
	for len(todo) > 0 {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return total, err
		}
		b := e.db.NewBatch()
		next := map[int32]int64{}
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			for _, r := range fp.Records {
				if r.Value == nil {
					_ = b.Delete(r.Key, nil)
				} else {
					_ = b.Set(r.Key, r.Value, nil)
				}
				next[fp.Partition] = r.Offset + 1
				total++
			}
			// Compaction can leave the end past the last readable record.
			if len(fp.Records) == 0 && fp.HighWatermark >= todo[fp.Partition] && fp.Err == nil {
				next[fp.Partition] = max(next[fp.Partition], todo[fp.Partition])
			}
		})
		for p, n := range next {
			_ = b.Set(checkpointKey(p), binary.BigEndian.AppendUint64(nil, uint64(n)), nil)
			e.restoring.Store(p, strconv.FormatInt(n, 10)+"/"+strconv.FormatInt(todo[p], 10))
			if n >= todo[p] {
				delete(todo, p)
			}
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			return total, err
		}
		e.restored.Add(ctx, int64(b.Count()))
		fs.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				e.log.Warn("changelog fetch error", "partition", p, "err", err)
			}
		})
	}
	return total, e.db.Flush()
}

func (e *Evaluator) readInt(key []byte) (int64, error) {
	v, closer, err := e.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return int64(binary.BigEndian.Uint64(v)), nil
}

// batch is the state of one handled batch of records.
type batch struct {
	e     *Evaluator
	pb    *pebble.Batch
	users map[string]*user // by state key
	out   output
}

func (b *batch) user(p int32, identity string) (*user, error) {
	k := userKey(p, identity)
	if u, ok := b.users[string(k)]; ok {
		return u, nil
	}
	var st []byte
	v, closer, err := b.pb.Get(k)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		st = append([]byte(nil), v...) // the user keeps it
		closer.Close()
	}
	u, err := newUser(identity, st)
	if err != nil {
		return nil, fmt.Errorf("decode state of %q: %w", identity, err)
	}
	u.key, u.partition = k, p
	b.users[string(k)] = u
	return u, nil
}

// flush writes the changed users into the Pebble batch and returns their
// changelog records.
func (b *batch) flush(topic string) ([]*kgo.Record, error) {
	var recs []*kgo.Record
	for _, u := range b.users {
		if !u.dirty {
			continue
		}
		v, err := u.encode()
		if err != nil {
			return nil, err
		}
		if v != nil {
			err = b.pb.Set(u.key, v, nil)
		} else {
			err = b.pb.Delete(u.key, nil)
		}
		if err != nil {
			return nil, err
		}
		recs = append(recs, &kgo.Record{Topic: topic, Partition: u.partition, Key: u.key, Value: v})
		u.dirty = false
	}
	return recs, nil
}

// handle evaluates a batch in order and commits state, outputs and offsets
// together (see Evaluator).
func (e *Evaluator) handle(ctx context.Context, recs []*kgo.Record) error {
	b, changelog, err := e.evaluate(ctx, recs)
	if err != nil {
		return err
	}
	defer b.pb.Close()
	outputs, err := e.outputs(&b.out)
	if err != nil {
		return err
	}
	// Outputs first, then the changelog: the changelog carries the state
	// and the next input offset, and a restore (after a crash, on a new
	// disk, on another instance) resumes from it. Were it acknowledged
	// before the outputs, a crash in between would restore a state that has
	// seen the batch and skip it, and its triggers and timers would be lost.
	if err := kafka.ProduceSync(ctx, e.cons.Client(), outputs...); err != nil {
		return err
	}
	res := e.clog.ProduceSync(ctx, changelog...)
	if err := res.FirstErr(); err != nil {
		return err
	}
	ckpt := map[int32]int64{}
	for _, r := range res {
		ckpt[r.Record.Partition] = max(ckpt[r.Record.Partition], r.Record.Offset+1)
	}
	for p, off := range ckpt {
		if err := b.pb.Set(checkpointKey(p), binary.BigEndian.AppendUint64(nil, uint64(off)), nil); err != nil {
			return err
		}
	}
	return b.pb.Commit(pebble.Sync)
}

// evaluate applies recs to the state in a new Pebble batch (not committed)
// and returns it with the changelog records of every change, the consumed
// offsets included. The caller must close the batch.
func (e *Evaluator) evaluate(ctx context.Context, recs []*kgo.Record) (*batch, []*kgo.Record, error) {
	b := &batch{e: e, pb: e.db.NewIndexedBatch(), users: make(map[string]*user, len(recs))}
	var changelog []*kgo.Record
	next := map[int32]int64{}
	fail := func(err error) (*batch, []*kgo.Record, error) {
		b.pb.Close()
		return nil, nil, err
	}
	for _, r := range recs {
		next[r.Partition] = r.Offset + 1
		var ev hookstreamv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			e.eng.skip("undecodable", "")
			e.log.ErrorContext(r.Context, "skipping undecodable event", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		e.eng.m.records.Add(ctx, 1, kindAttrs(ev.Kind))
		if ev.Kind == hookstreamv1.Event_KIND_SCHEDULED_RUN {
			pctx, span := kafka.ProcessSpan(r, e.eng.tracer, "evaluator scheduled run", attribute.String("campaign", ev.GetRun().GetCampaign()))
			b.out.ctx = pctx
			recs, err := e.scheduledRun(b, r.Partition, ev.GetRun())
			span.End()
			if err != nil {
				return fail(err)
			}
			changelog = append(changelog, recs...)
			continue
		}
		if ev.Identity == "" {
			e.eng.skip("no_identity", "")
			continue
		}
		u, err := b.user(r.Partition, ev.Identity)
		if err != nil {
			return fail(err)
		}
		// Decisions continue the record's trace (children of its publish
		// span); a span is made only for what emits something
		// (evaluator.trigger, .schedule_timer): they are the process spans.
		b.out.ctx = r.Context
		err = e.eng.apply(u, &ev, &b.out)
		if err == nil && u.err != nil {
			err = fmt.Errorf("state of %q: %w", u.identity, u.err)
		}
		if err != nil {
			return fail(fmt.Errorf("evaluate offset %d of partition %d: %w", r.Offset, r.Partition, err))
		}
	}
	recs2, err := b.flush(e.topics.EvaluatorChangelog)
	if err != nil {
		return fail(err)
	}
	changelog = append(changelog, recs2...)
	for p, off := range next {
		v := binary.BigEndian.AppendUint64(nil, uint64(off))
		if err := b.pb.Set(offsetKey(p), v, nil); err != nil {
			return fail(err)
		}
		changelog = append(changelog, &kgo.Record{Topic: e.topics.EvaluatorChangelog, Partition: p, Key: offsetKey(p), Value: v})
	}
	return b, changelog, nil
}

func (e *Evaluator) outputs(o *output) ([]*kgo.Record, error) {
	recs := make([]*kgo.Record, 0, len(o.triggers)+len(o.timers)+len(o.conversions))
	recs = append(recs, o.triggers...)
	recs = append(recs, o.timers...)
	for _, c := range o.conversions {
		v, err := proto.Marshal(c)
		if err != nil {
			return nil, err
		}
		recs = append(recs, &kgo.Record{Topic: e.topics.Conversions, Key: []byte(c.Campaign), Value: v})
	}
	return recs, nil
}

// scheduledRun evaluates every user of partition p for one run of a
// scheduled campaign.
func (e *Evaluator) scheduledRun(b *batch, p int32, run *hookstreamv1.ScheduledRun) ([]*kgo.Record, error) {
	c, ok := e.eng.cat.Campaign(run.GetCampaign())
	if !ok || c.Spec.Delivery.Type != manifest.DeliveryScheduled {
		e.eng.skip("unknown_scheduled_campaign", run.GetCampaign())
		return nil, nil
	}
	// Users changed earlier in this batch must be seen as changed.
	recs, err := b.flush(e.topics.EvaluatorChangelog)
	if err != nil {
		return nil, err
	}
	prefix := userKey(p, "")
	upper := userKey(p+1, "")
	it, err := b.pb.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	var users int
	for ok := it.First(); ok; ok = it.Next() {
		identity := string(it.Key()[len(prefix):])
		u, err := b.user(p, identity)
		if err != nil {
			it.Close()
			return nil, err
		}
		e.eng.scheduledRun(u, c, run.GetRunMs(), &b.out)
		if u.err != nil {
			it.Close()
			return nil, fmt.Errorf("state of %q: %w", identity, u.err)
		}
		users++
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	e.log.Info("scheduled run evaluated", "campaign", c.Metadata.Name, "run_ms", run.GetRunMs(), "partition", p, "users", users)
	return recs, nil
}

var kindAttr = func() map[hookstreamv1.Event_Kind]metric.AddOption {
	m := map[hookstreamv1.Event_Kind]metric.AddOption{}
	for k := range hookstreamv1.Event_Kind_name {
		kind := hookstreamv1.Event_Kind(k)
		m[kind] = metric.WithAttributeSet(attribute.NewSet(attribute.String("kind", kind.String())))
	}
	return m
}()

func kindAttrs(k hookstreamv1.Event_Kind) metric.AddOption {
	if o, ok := kindAttr[k]; ok {
		return o
	}
	return metric.WithAttributes(attribute.String("kind", k.String()))
}
