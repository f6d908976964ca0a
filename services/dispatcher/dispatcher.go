package dispatcher

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/service"
	"github.com/hookstream/hookstream/pkg/webhook"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Dispatcher consumes {prefix}triggers and sends webhooks.
type Dispatcher struct {
	cfg      Config
	kcfg     kafka.Config
	topics   kafka.Topics
	log      *slog.Logger
	cat      *catalog.Catalog
	rdb      *redis.Client
	dedupe   *deduper
	renderer *webhook.Renderer
	sender   *webhook.Sender
	cons     *kafka.Consumer
	now      func() time.Time

	attempts   metric.Int64Counter
	suppressed metric.Int64Counter
	latency    metric.Float64Histogram
}

// New returns a dispatcher. cat must be kept current by a catalog follower;
// rdb is the Redis holding dedupe keys.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, cat *catalog.Catalog, rdb *redis.Client, meter metric.Meter) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Dispatcher{
		cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "dispatcher"), cat: cat, rdb: rdb,
		dedupe:   &deduper{rdb: rdb, ttl: cfg.DedupeTTL.Std(), lease: 2 * time.Minute},
		renderer: webhook.NewRenderer(),
		sender:   webhook.NewSender(cfg.AllowPrivateNetworks),
		now:      time.Now,
	}
	var err error
	if d.attempts, err = meter.Int64Counter("hookstream_delivery_attempts_total", metric.WithDescription("Webhook attempts, by campaign, webhook and outcome.")); err != nil {
		return nil, err
	}
	if d.suppressed, err = meter.Int64Counter("hookstream_suppressed_total", metric.WithDescription("Triggers not sent, by campaign and reason.")); err != nil {
		return nil, err
	}
	if d.latency, err = meter.Float64Histogram("hookstream_delivery_latency_seconds", metric.WithDescription("Webhook attempt latency, by webhook."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	return d, nil
}

// Service returns the dispatcher's lifecycle.
func (d *Dispatcher) Service() *service.Service {
	return service.New("dispatcher",
		func(ctx context.Context) error {
			if err := d.rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			var err error
			d.cons, err = kafka.NewConsumer(d.kcfg, d.log, "dispatcher", kafka.ConsumerConfig{
				Group: "hookstream-dispatcher", Topics: []string{d.topics.Triggers},
			}, d.handle)
			return err
		},
		func(ctx context.Context) error { return d.cons.Run(ctx) },
		func(error) error {
			if d.cons != nil {
				d.cons.Close()
			}
			return nil
		})
}

// handle delivers a batch of triggers concurrently and records every
// outcome on {prefix}deliveries before the batch's offsets are committed.
func (d *Dispatcher) handle(ctx context.Context, recs []*kgo.Record) error {
	trs := make([]*hookstreamv1.Trigger, 0, len(recs))
	for _, r := range recs {
		var t hookstreamv1.Trigger
		if err := proto.Unmarshal(r.Value, &t); err != nil {
			d.log.Error("skipping undecodable trigger", "partition", r.Partition, "offset", r.Offset, "err", err)
			continue
		}
		trs = append(trs, &t)
	}
	ids := make([]string, len(trs))
	for i, t := range trs {
		ids[i] = t.Id
	}
	claims, err := d.dedupe.claim(ctx, ids)
	if err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		outcomes []*hookstreamv1.Delivery
		finished []string
		wg       sync.WaitGroup
		sem      = make(chan struct{}, d.cfg.Concurrency)
	)
	record := func(del *hookstreamv1.Delivery, final bool) {
		mu.Lock()
		outcomes = append(outcomes, del)
		if final {
			finished = append(finished, del.WebhookId)
		}
		mu.Unlock()
	}
	for i, t := range trs {
		switch claims[i] {
		case duplicate:
			record(d.suppress(ctx, t, "duplicate"), false)
			continue
		case leased:
			// Another attempt holds the lease (or crashed holding it): the
			// batch is retried until the lease is released or expires.
			return fmt.Errorf("trigger %s is being delivered elsewhere; retrying", t.Id)
		}
		if t.Control {
			record(d.suppress(ctx, t, "control"), true)
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			record(d.deliver(ctx, t), true)
		}()
	}
	wg.Wait()
	out := make([]*kgo.Record, 0, len(outcomes))
	for _, del := range outcomes {
		v, err := proto.Marshal(del)
		if err != nil {
			return err
		}
		out = append(out, &kgo.Record{Topic: d.topics.Deliveries, Key: []byte(del.Campaign), Value: v})
	}
	if err := kafka.ProduceSync(ctx, d.cons.Client(), out...); err != nil {
		return err
	}
	return d.dedupe.done(ctx, finished)
}

func (d *Dispatcher) suppress(ctx context.Context, t *hookstreamv1.Trigger, reason string) *hookstreamv1.Delivery {
	d.suppressed.Add(ctx, 1, metric.WithAttributes(attribute.String("campaign", t.Campaign), attribute.String("reason", reason)))
	return &hookstreamv1.Delivery{
		WebhookId: t.Id, Campaign: t.Campaign, Identities: []string{t.Identity},
		Status: hookstreamv1.Delivery_STATUS_SUPPRESSED, SuppressionReason: reason, TsMs: d.now().UnixMilli(),
	}
}

// deliver renders and sends one trigger's webhook and returns the outcome.
func (d *Dispatcher) deliver(ctx context.Context, t *hookstreamv1.Trigger) *hookstreamv1.Delivery {
	del := &hookstreamv1.Delivery{WebhookId: t.Id, Campaign: t.Campaign, Identities: []string{t.Identity}, Attempt: 1, IsTest: t.IsTest}
	fail := func(reason string) *hookstreamv1.Delivery {
		del.Status, del.Error, del.TsMs = hookstreamv1.Delivery_STATUS_FAILED, reason, d.now().UnixMilli()
		d.attempts.Add(ctx, 1, metric.WithAttributes(attribute.String("campaign", t.Campaign), attribute.String("outcome", "failed")))
		d.log.Warn("delivery failed", "campaign", t.Campaign, "webhook_id", t.Id, "err", reason)
		return del
	}
	c, ok := d.cat.Campaign(t.Campaign)
	if !ok {
		return fail("campaign no longer exists")
	}
	wh, ok := d.cat.Webhook(c.Spec.Webhook)
	if !ok {
		return fail(fmt.Sprintf("webhook %q does not exist", c.Spec.Webhook))
	}
	req, err := d.renderer.Render(c, []*hookstreamv1.Trigger{t}, nil, d.now())
	if err != nil {
		return fail("render: " + err.Error())
	}
	res := d.sender.Send(ctx, wh, webhook.Attempt{ID: t.Id, Timestamp: d.now(), Request: req})
	del.HttpStatus = int32(res.Status)
	del.LatencyUs = res.Latency.Microseconds()
	del.ResponseExcerpt = res.Excerpt
	del.TsMs = d.now().UnixMilli()
	d.latency.Record(ctx, res.Latency.Seconds(), metric.WithAttributes(attribute.String("webhook", wh.Metadata.Name)))
	if res.OK() {
		del.Status = hookstreamv1.Delivery_STATUS_DELIVERED
		d.attempts.Add(ctx, 1, metric.WithAttributes(attribute.String("campaign", t.Campaign), attribute.String("webhook", wh.Metadata.Name), attribute.String("outcome", "delivered")))
		d.log.Debug("delivered", "campaign", t.Campaign, "webhook_id", t.Id, "status", res.Status, "latency", res.Latency)
		return del
	}
	if res.Err != nil {
		return fail(res.Err.Error())
	}
	return fail(fmt.Sprintf("endpoint answered %d", res.Status))
}
