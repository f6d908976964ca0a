package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Handler processes one polled batch of records, in partition order. When it
// returns nil, everything the batch caused must be durable (produced records
// acknowledged by the broker, state written): the consumer then commits the
// batch's offsets. A returned error means the batch could not be processed
// (for example the broker is unreachable) and the same batch is handed over
// again after a backoff; bad records are the handler's to dead-letter, not to
// return as errors.
//
// The context is not cancelled by a shutdown request: in-flight work finishes.
type Handler func(ctx context.Context, recs []*kgo.Record) error

// PartitionsFunc is told which partitions of which topics were assigned or
// revoked.
type PartitionsFunc func(ctx context.Context, cl *kgo.Client, partitions map[string][]int32)

// ConsumerConfig says what a Consumer reads.
type ConsumerConfig struct {
	// Group is the consumer group's id: Config.Group(component), which is
	// "hookstream-<component>" with the default kafka.group_prefix.
	Group  string
	Topics []string
	// Untraced consumes without trace spans (internal bookkeeping).
	Untraced bool
	// InstanceID enables static membership so that a restarted pod with the
	// same id does not cause a rebalance. Empty: dynamic membership.
	//
	// A dynamic member leaves the group when it is closed, so the others
	// take its partitions over at once; one that dies is noticed after
	// Config.SessionTimeout. A static member does not leave when closed:
	// its partitions wait for it (or for Config.StaticSessionTimeout, its
	// session timeout, to pass).
	InstanceID string
	// OnAssigned, if set, runs after partitions are assigned and before any
	// of their records are handled.
	OnAssigned PartitionsFunc
	// OnRevoked, if set, runs when partitions are revoked or lost. Nothing
	// is committed then: Run commits each batch as soon as its handler
	// succeeds, and a rebalance waits for the batch in hand, so the
	// partitions' handled records are already committed (unless that
	// commit failed; their next owner then handles them again).
	OnRevoked PartitionsFunc
}

// Consumer is a consumer-group member that commits offsets only after its
// Handler has processed the records: at-least-once, with nothing skipped.
type Consumer struct {
	cl      *kgo.Client
	handler Handler
	log     *slog.Logger
	max     int
	group   string

	mu   sync.Mutex
	lag  map[string]map[int32]int64 // topic → partition → records behind
	next map[string]map[int32]int64 // topic → partition → next offset to consume

	records, errors metric.Int64Counter
	reg             metric.Registration
}

// NewConsumer returns a consumer. The returned client can also be used to
// produce the handler's outputs.
func NewConsumer(cfg Config, log *slog.Logger, component string, cc ConsumerConfig, h Handler, extra ...kgo.Opt) (*Consumer, error) {
	if cc.Group == "" || len(cc.Topics) == 0 {
		return nil, errors.New("kafka consumer: group and topics are required")
	}
	c := &Consumer{handler: h, log: log.With("component", component), max: cfg.FetchMaxRecords, group: cc.Group, lag: map[string]map[int32]int64{}, next: map[string]map[int32]int64{}}
	if err := c.instrument(); err != nil {
		return nil, err
	}
	opts := []kgo.Opt{
		kgo.ConsumerGroup(cc.Group),
		kgo.ConsumeTopics(cc.Topics...),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Setting OnPartitionsRevoked replaces franz-go's commit-on-revoke,
		// which would commit what was polled, handled or not. Each batch is
		// committed by Run right after its handler succeeded, and a
		// rebalance only runs between batches (BlockRebalanceOnPoll), so
		// there is nothing left to commit here: a batch given up at a stop
		// stays uncommitted and is consumed again.
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			c.forget(revoked)
			if cc.OnRevoked != nil {
				cc.OnRevoked(ctx, cl, revoked)
			}
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, lost map[string][]int32) {
			// franz-go also calls this, with nothing lost, after each
			// failed join.
			if len(lost) > 0 {
				c.log.Warn("partitions lost", "partitions", lost)
			}
			c.forget(lost)
			if cc.OnRevoked != nil {
				cc.OnRevoked(ctx, cl, lost)
			}
		}),
	}
	if cc.OnAssigned != nil {
		opts = append(opts, kgo.OnPartitionsAssigned(cc.OnAssigned))
	}
	if cc.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cc.InstanceID))
		if t := cfg.StaticSessionTimeout; t > 0 { // overrides newClient's SessionTimeout
			opts = append(opts, kgo.SessionTimeout(t.Std()))
		}
	}
	cl, err := newClient(cfg, log, component, !cc.Untraced, append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	c.cl = cl
	return c, nil
}

// Client is the consumer's client; produce through it.
func (c *Consumer) Client() *kgo.Client { return c.cl }

// Run polls and handles records until ctx is cancelled, then finishes the
// batch in hand, commits it, and returns nil. Close the consumer afterwards.
func (c *Consumer) Run(ctx context.Context) error {
	backoff := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		fetches := c.cl.PollRecords(ctx, c.max)
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				c.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		c.observe(fetches)
		if recs := fetches.Records(); len(recs) > 0 {
			c.records.Add(ctx, int64(len(recs)), metric.WithAttributes(attribute.String("group", c.group)))
			if !c.handle(ctx, recs, backoff) {
				c.cl.AllowRebalance()
				return nil
			}
			commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := c.cl.CommitRecords(commitCtx, recs...); err != nil {
				c.log.Warn("commit failed; records will be handled again", "err", err)
			}
			cancel()
		}
		c.cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// handle runs the handler until it succeeds. It gives up only when a stop was
// requested, reporting false: the batch is then not committed and will be
// handled again by whoever owns the partitions next.
func (c *Consumer) handle(ctx context.Context, recs []*kgo.Record, b *backoff) bool {
	hctx := context.WithoutCancel(ctx)
	for {
		err := c.handler(hctx, recs)
		if err == nil {
			b.reset()
			return true
		}
		c.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("group", c.group)))
		c.log.Error("handling batch failed; retrying", "records", len(recs), "err", err)
		if !b.wait(ctx) {
			c.log.Warn("stopping with an unprocessed batch; it will be consumed again", "records", len(recs))
			return false
		}
	}
}

// Close closes the client. A dynamic member leaves the group (a
// LeaveGroup request), so that the group rebalances at once instead of
// after the session timeout; a static member does not (see
// ConsumerConfig.InstanceID). Handled batches are already committed.
func (c *Consumer) Close() {
	c.cl.Close()
	if c.reg != nil {
		_ = c.reg.Unregister()
	}
}

// instrument registers the consumer's metrics on the global meter provider:
// hookstream_consumer_lag (records behind the high watermark, per topic and
// partition, as of the last fetch), records consumed and failed batches.
func (c *Consumer) instrument() error {
	m := otel.GetMeterProvider().Meter("github.com/hookstream/hookstream/kafka")
	var err error
	if c.records, err = m.Int64Counter("hookstream_consumer_records_total", metric.WithDescription("Records consumed, by consumer group.")); err != nil {
		return err
	}
	if c.errors, err = m.Int64Counter("hookstream_consumer_batch_errors_total", metric.WithDescription("Batches whose handling failed and was retried, by consumer group.")); err != nil {
		return err
	}
	lag, err := m.Int64ObservableGauge("hookstream_consumer_lag", metric.WithDescription("Records between the last consumed offset and the high watermark, by group, topic and partition."))
	if err != nil {
		return err
	}
	c.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		for t, ps := range c.lag {
			for p, n := range ps {
				o.ObserveInt64(lag, n, metric.WithAttributes(attribute.String("group", c.group), attribute.String("topic", t), attribute.Int("partition", int(p))))
			}
		}
		return nil
	}, lag)
	return err
}

// observe updates the lag of each fetched partition: the high watermark
// minus the next offset to consume.
func (c *Consumer) observe(fs kgo.Fetches) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if p.Err != nil {
			return
		}
		if c.next[p.Topic] == nil {
			c.next[p.Topic] = map[int32]int64{}
			c.lag[p.Topic] = map[int32]int64{}
		}
		if n := len(p.Records); n > 0 {
			c.next[p.Topic][p.Partition] = p.Records[n-1].Offset + 1
		}
		if next, ok := c.next[p.Topic][p.Partition]; ok {
			c.lag[p.Topic][p.Partition] = max(p.HighWatermark-next, 0)
		}
	})
}

// forget drops revoked partitions from the lag.
func (c *Consumer) forget(revoked map[string][]int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t, ps := range revoked {
		for _, p := range ps {
			delete(c.lag[t], p)
			delete(c.next[t], p)
		}
	}
}

// ProduceSync produces recs and waits until the broker has acknowledged all
// of them.
func ProduceSync(ctx context.Context, cl *kgo.Client, recs ...*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	return nil
}

type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max, cur: min} }

func (b *backoff) reset() { b.cur = b.min }

func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.cur)
	defer t.Stop()
	b.cur = min(b.cur*2, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
