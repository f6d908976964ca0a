package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"go.opentelemetry.io/otel/trace"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/service"
)

// Dispatcher consumes {prefix}triggers and {prefix}dispatch.retry and sends
// webhooks. See docs/dispatcher.md for the order of checks, the retry
// schedule and how webhooks are isolated from one another.
type Dispatcher struct {
	tracer trace.Tracer
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	cat    *catalog.Catalog
	rdb    *redis.Client
	dedupe *deduper
	sp     *sendPath
	now    func() time.Time
	jitter func() float64 // in [-1, 1)
	m      *metrics

	cl *kgo.Client
	// out produces outcome records (deliveries, retry timers, DLQ): not
	// traced, so that they do not each start a trace of their own.
	out      *kgo.Client
	tracker  *tracker
	finisher *finisher
	batcher  *batcher
	global   chan struct{} // the Concurrency semaphore

	mu        sync.Mutex
	endpoints map[string]*endpoint
	work      sync.WaitGroup // endpoint runners and their sends
	stopping  atomic.Bool
	// setNXGet is whether Redis takes SET with both NX and GET (7.0 on).
	setNXGet atomic.Bool
	// leasePrefix and leaseSeq make the lease tokens (leaseTokens).
	leasePrefix string
	leaseSeq    atomic.Uint64

	disabledMu sync.Mutex
	disabled   map[string]int64 // webhook → generation that answered 410
}

// Option changes a Dispatcher built by New.
type Option func(*Dispatcher)

// WithClock makes the dispatcher read the time from now (default
// time.Now): caps, quiet hours, retry schedules and record timestamps
// follow it. It must advance with real time (tests add an offset).
func WithClock(now func() time.Time) Option { return func(d *Dispatcher) { d.now = now } }

// WithJitter replaces the random jitter of retry delays: f returns a value
// in [-1, 1) that scales the ±20 %.
func WithJitter(f func() float64) Option { return func(d *Dispatcher) { d.jitter = f } }

// New returns a dispatcher. cat must be kept current by a catalog follower;
// rdb is the Redis holding dedupe keys, caps and rate limits; meter receives
// the dispatcher's metrics.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, cat *catalog.Catalog, rdb *redis.Client, meter metric.Meter, opts ...Option) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With("component", "dispatcher")
	d := &Dispatcher{
		tracer: kafka.Tracer("dispatcher"),
		cfg:    cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log, cat: cat, rdb: rdb,
		dedupe:    &deduper{rdb: rdb, ttl: cfg.DedupeTTL.Std()},
		sp:        newSendPath(cfg, log, rdb),
		now:       time.Now,
		jitter:    func() float64 { return rand.Float64()*2 - 1 },
		endpoints: map[string]*endpoint{},
		disabled:  map[string]int64{},
		global:    make(chan struct{}, cfg.Concurrency),
	}
	d.leasePrefix = newLeasePrefix()
	for _, o := range opts {
		o(d)
	}
	var err error
	if d.m, err = newMetrics(meter, d); err != nil {
		return nil, err
	}
	return d, nil
}

// Service returns the dispatcher's lifecycle. Running consumes until
// stopped, then finishes the deliveries in flight (queued ones are handed
// to the timer service), records every outcome and commits.
func (d *Dispatcher) Service() *service.Service {
	return service.New("dispatcher", d.starting, d.running, d.stop)
}

func (d *Dispatcher) starting(ctx context.Context) error {
	if err := d.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := loadScripts(ctx, d.rdb); err != nil {
		return err
	}
	d.probeSetNXGet(ctx)
	if err := d.refreshDisabled(ctx); err != nil {
		return err
	}
	d.tracker = newTracker()
	var err error
	d.cl, err = kafka.NewClient(d.kcfg, d.log, "dispatcher",
		kgo.ConsumerGroup(d.kcfg.Group("dispatcher")),
		kgo.ConsumeTopics(d.topics.Triggers, d.topics.DispatchRetry),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.OnPartitionsRevoked(d.revoked),
		kgo.OnPartitionsLost(d.lost),
	)
	if err != nil {
		return err
	}
	// Outcome records are produced asynchronously and must never be given
	// up on: retry without limit, overriding kafka.NewClient's delivery
	// timeout.
	if d.out, err = kafka.NewUntracedClient(d.kcfg, d.log, "dispatcher-outcomes", kgo.RecordDeliveryTimeout(0)); err != nil {
		return err
	}
	d.finisher = newFinisher(d)
	d.batcher = newBatcher(d)
	return nil
}

func (d *Dispatcher) stop(error) error {
	if d.out != nil {
		// Let the last outcomes be acknowledged so that they are committed
		// below; whatever is not is consumed again after the restart.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = d.out.Flush(ctx)
		cancel()
	}
	if d.cl != nil {
		d.cl.Close() // leaves the group; the revoke callback commits what is done
	}
	if d.out != nil {
		d.out.Close()
	}
	d.sp.sender.CloseIdleConnections()
	return nil
}

// running polls until ctx ends. Each polled batch goes through the checks
// in one Redis round trip and is handed to the webhooks' queues; nothing
// here waits for an endpoint. Offsets are committed by commitLoop as the
// records' outcomes become durable, in order per partition.
func (d *Dispatcher) running(ctx context.Context) error {
	bg := context.WithoutCancel(ctx)
	var loops sync.WaitGroup
	finCtx, stopFinisher := context.WithCancel(bg)
	commitCtx, stopCommits := context.WithCancel(bg)
	batchCtx, stopBatcher := context.WithCancel(bg)
	loops.Add(4)
	go func() { defer loops.Done(); d.finisher.run(finCtx) }()
	go func() { defer loops.Done(); d.commitLoop(commitCtx) }()
	go func() { defer loops.Done(); d.batcher.run(batchCtx) }()
	go func() { defer loops.Done(); d.refreshLoop(commitCtx) }()

	err := d.pollLoop(ctx)

	// Stop in order: batches are flushed into the queues, the queues hand
	// what has not started to the timer and wait for what is in flight,
	// the finisher records every outcome, and the last commit goes out.
	stopBatcher()
	d.batcher.wait()
	d.stopping.Store(true)
	d.mu.Lock()
	for _, e := range d.endpoints {
		e.signal()
	}
	d.mu.Unlock()
	d.work.Wait()
	stopFinisher()
	d.finisher.wait()
	stopCommits()
	loops.Wait()
	d.commit(bg)
	return err
}

// pollLoop polls and prepares the records' checks; checkLoop runs each
// polled batch's checks in one Redis round trip while the next batch is
// polled and prepared, and while the one before is decided (settled): the
// three stages overlap, and each handles the batches in poll order, one at
// a time, so that Redis runs the checks in the order of the records.
func (d *Dispatcher) pollLoop(ctx context.Context) error {
	// Unbuffered: at most one batch in each stage, so that the poll loop
	// runs at most two batches ahead of the queues it waits for (room).
	prepared := make(chan *checkBatch)
	checked := make(chan *checkBatch)
	settled := make(chan struct{})
	go func() { defer close(checked); d.checkLoop(ctx, prepared, checked) }()
	go func() {
		defer close(settled)
		for b := range checked {
			d.settle(b)
		}
	}()
	defer func() { close(prepared); <-settled }()
	for {
		if !d.tracker.waitCapacity(ctx, d.cfg.MaxPending) {
			return nil
		}
		d.waitForRoom(ctx)
		fetches := d.cl.PollRecords(ctx, d.kcfg.FetchMaxRecords)
		if fetches.IsClientClosed() {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				d.log.Warn("fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		recs := fetches.Records()
		if len(recs) > 0 {
			acks := d.tracker.add(recs)
			// The tokens are kept when the check is retried: Redis may
			// have taken the leases before the connection failed.
			// Waits while the batch before is still being checked (Redis
			// slow or down): the records wait in Kafka.
			prepared <- d.prepare(recs, acks, d.leaseTokens(len(recs)))
		}
		// A rebalance waits (revoked) for the records of revoked
		// partitions still being checked or sent.
		d.cl.AllowRebalance()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// checkLoop checks prepared batches in order, and hands them on to be
// settled. A batch whose check fails (Redis unreachable) is checked again,
// with backoff, before any later one; when ctx ends first, its records and
// those of the batches after it are left incomplete (not committed:
// handled again by the next owner of the partitions).
func (d *Dispatcher) checkLoop(ctx context.Context, prepared <-chan *checkBatch, checked chan<- *checkBatch) {
	backoff := time.Duration(0)
	for b := range prepared {
		err := d.check(ctx, b)
		for err != nil && ctx.Err() == nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			d.log.Error("checking polled records failed; retrying", "records", len(b.items), "err", err, "backoff", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
				err = d.check(ctx, b)
			}
		}
		if err != nil {
			continue
		}
		backoff = 0
		checked <- b
	}
}

// waitForRoom puts off the next poll while a fast webhook (one that sends
// a poll's worth within half of MaxQueueWait) has a queue too long to take
// another poll's records: the records wait in Kafka, which costs nothing,
// rather than in memory, past MaxQueueWait. Polling resumes once every
// such queue, with a whole poll added, would be sent within half of
// MaxQueueWait (the other half absorbs a slower endpoint), or after
// MaxQueueWait at most. Slow webhooks are not waited for: their excess
// goes to the timer service (busy), so that they never hold back the
// others.
func (d *Dispatcher) waitForRoom(ctx context.Context) {
	deadline := time.Now().Add(d.cfg.MaxQueueWait.Std())
	var timer *time.Timer
	for {
		d.mu.Lock()
		eps := make([]*endpoint, 0, len(d.endpoints))
		for _, e := range d.endpoints {
			eps = append(eps, e)
		}
		d.mu.Unlock()
		var need time.Duration
		for _, e := range eps {
			need = max(need, e.room())
		}
		left := time.Until(deadline)
		if need <= 0 || left <= 0 {
			return
		}
		// Look again soon: the estimate follows the endpoint's latency.
		sleep := min(need, left, 50*time.Millisecond)
		if timer == nil {
			timer = time.NewTimer(sleep)
			defer timer.Stop()
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// revoked finishes (for up to 20s) the records of the revoked partitions
// and commits them before the partitions move; whatever is still in flight
// after that is handled again by the next owner (its lease delays it).
func (d *Dispatcher) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if d.tracker == nil {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if !d.tracker.waitDone(wctx, revoked) {
		d.log.Warn("partitions revoked with deliveries still in flight; they will be handled again", "partitions", revoked)
	}
	d.commit(ctx)
	d.tracker.drop(revoked)
}

func (d *Dispatcher) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	d.log.Warn("partitions lost", "partitions", lost)
	if d.tracker != nil {
		d.tracker.drop(lost)
	}
}

func (d *Dispatcher) commitLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.CommitInterval.Std())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.commit(ctx)
		}
	}
}

// commit commits, per partition, the offset after the longest prefix of
// records whose outcomes are durable.
func (d *Dispatcher) commit(ctx context.Context) {
	offsets := d.tracker.committable()
	if len(offsets) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var cerr error
	d.cl.CommitOffsetsSync(cctx, offsets, func(_ *kgo.Client, _ *kmsgCommitReq, resp *kmsgCommitResp, err error) {
		cerr = commitErr(resp, err)
	})
	if cerr != nil {
		d.log.Warn("commit failed; records will be handled again", "err", cerr)
		return
	}
	d.tracker.committed(offsets)
}

func (d *Dispatcher) refreshLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.refreshDisabled(ctx); err != nil {
				d.log.Warn("reading disabled webhooks failed", "err", err)
			}
			d.probeSetNXGet(ctx) // Redis may have been replaced by another version
		}
	}
}

// probeSetNXGet finds out whether Redis takes SET with NX and GET
// together (Redis 7.0 on; older ones answer a syntax error), which leases
// a trigger and reads what was there in one command.
func (d *Dispatcher) probeSetNXGet(ctx context.Context) {
	err := d.rdb.SetArgs(ctx, "hookstream:probe:set-nx-get", "1", redis.SetArgs{Mode: "NX", Get: true, TTL: time.Second}).Err()
	var reply redis.Error
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		d.setNXGet.Store(true)
	case errors.As(err, &reply):
		d.setNXGet.Store(false)
	} // a connection error says nothing: keep what we knew
}

// refreshDisabled reads the webhooks disabled by a 410 (by any dispatcher).
func (d *Dispatcher) refreshDisabled(ctx context.Context) error {
	m, err := d.rdb.HGetAll(ctx, disabledKey).Result()
	if err != nil {
		return fmt.Errorf("redis: read disabled webhooks: %w", err)
	}
	dis := make(map[string]int64, len(m))
	for k, v := range m {
		var g int64
		_, _ = fmt.Sscan(v, &g)
		dis[k] = g
	}
	d.disabledMu.Lock()
	d.disabled = dis
	d.disabledMu.Unlock()
	return nil
}

// isDisabled reports whether webhook name at generation gen answered 410.
// A new generation of the manifest (the endpoint was fixed) enables it.
func (d *Dispatcher) isDisabled(name string, gen int64) bool {
	d.disabledMu.Lock()
	defer d.disabledMu.Unlock()
	g, ok := d.disabled[name]
	return ok && gen <= g
}

func (d *Dispatcher) disable(ctx context.Context, name string, gen int64) {
	d.disabledMu.Lock()
	d.disabled[name] = gen
	d.disabledMu.Unlock()
	if err := d.rdb.HSet(ctx, disabledKey, name, gen).Err(); err != nil {
		d.log.Error("recording the disabled webhook failed", "webhook", name, "err", err)
	}
	d.log.Warn("webhook answered 410 Gone: disabled until its manifest changes; its deliveries go to the dispatch DLQ for replay", "webhook", name, "generation", gen)
}

// endpoint returns the queue of webhook name, starting its runner.
func (d *Dispatcher) endpoint(name string) *endpoint {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.endpoints[name]
	if !ok {
		e = newEndpoint(d, name)
		d.endpoints[name] = e
		d.work.Add(1)
		go func() { defer d.work.Done(); e.run() }()
	}
	return e
}

// jittered returns d ± 20 %.
func (d *Dispatcher) jittered(v time.Duration) time.Duration {
	return v + time.Duration(float64(v)*0.2*d.jitter())
}
