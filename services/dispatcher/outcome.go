package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/webhook"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// outcome is what one job (or one skipped record) leaves behind: records to
// produce (deliveries, timers, DLQ), dedupe keys to mark done once they are
// acknowledged, and the consumed records to complete after that.
type outcome struct {
	recs []*kgo.Record
	done []string
	acks []ack
}

// finisher makes outcomes durable without ever waiting on one group of
// them before taking the next: its records are produced asynchronously
// (the client batches them); once every record of an outcome is
// acknowledged, the outcome joins the next group whose dedupe keys are
// marked done in one Redis round trip, after which its consumed records
// are completed (and may be committed). submit is safe for concurrent use.
type finisher struct {
	d  *Dispatcher
	ch chan *outcome

	mu      sync.Mutex
	cond    *sync.Cond
	acked   []*outcome // records acknowledged, not yet marked done
	pending int        // outcomes submitted and not yet through acked
	closing bool

	quit sync.WaitGroup
}

func newFinisher(d *Dispatcher) *finisher {
	f := &finisher{d: d, ch: make(chan *outcome, 4096)}
	f.cond = sync.NewCond(&f.mu)
	f.quit.Add(2)
	return f
}

func (f *finisher) submit(o *outcome) {
	f.mu.Lock()
	f.pending++
	f.mu.Unlock()
	f.ch <- o
}

// wait returns once run has recorded everything submitted before its
// context ended.
func (f *finisher) wait() { f.quit.Wait() }

// run produces outcomes' records until ctx ends (when nothing can submit
// any more), then drains; markDone runs beside it.
func (f *finisher) run(ctx context.Context) {
	go func() { defer f.quit.Done(); f.markDone() }()
	defer f.quit.Done()
	for {
		select {
		case o := <-f.ch:
			f.produce(o)
		case <-ctx.Done():
			for {
				select {
				case o := <-f.ch:
					f.produce(o)
				default:
					f.mu.Lock()
					f.closing = true
					f.cond.Broadcast()
					f.mu.Unlock()
					return
				}
			}
		}
	}
}

func (f *finisher) produce(o *outcome) {
	if len(o.recs) == 0 {
		f.ackedOne(o)
		return
	}
	var left atomic.Int32
	left.Store(int32(len(o.recs)))
	for _, r := range o.recs {
		// The client retries retriable errors forever (RecordDeliveryTimeout(0) in start);
		// an error here is final (a record too large, say): it is logged
		// and the outcome proceeds, so one bad record cannot stop the
		// dispatcher.
		f.d.out.Produce(context.Background(), r, func(r *kgo.Record, err error) {
			if err != nil {
				f.d.log.Error("dropping an outcome record that cannot be produced", "topic", r.Topic, "key", string(r.Key), "err", err)
			}
			if left.Add(-1) == 0 {
				f.ackedOne(o)
			}
		})
	}
}

func (f *finisher) ackedOne(o *outcome) {
	f.mu.Lock()
	f.acked = append(f.acked, o)
	f.cond.Broadcast()
	f.mu.Unlock()
}

// markDone marks the dedupe keys of acknowledged outcomes done, a group at
// a time, then completes their records; it returns once the finisher is
// closing and every submitted outcome has been through.
func (f *finisher) markDone() {
	d := f.d
	for {
		f.mu.Lock()
		for len(f.acked) == 0 && !(f.closing && f.pending == 0) {
			f.cond.Wait()
		}
		group := f.acked
		f.acked = nil
		f.pending -= len(group)
		last := f.closing && f.pending == 0
		f.mu.Unlock()

		nd, na := 0, 0
		for _, o := range group {
			nd += len(o.done)
			na += len(o.acks)
		}
		done := make([]string, 0, nd)
		acks := make([]ack, 0, na)
		for _, o := range group {
			done = append(done, o.done...)
			acks = append(acks, o.acks...)
		}
		if err := d.dedupe.done(context.Background(), done); err != nil {
			// The outcomes are recorded and will be committed; only a
			// redelivery after a crash could repeat them.
			d.log.Warn("marking deliveries done failed", "err", err)
		}
		d.tracker.complete(acks...)
		if last {
			return
		}
	}
}

// timerRecord schedules req to come back on {prefix}dispatch.retry at due,
// through the timer service. The command carries j's trace, so that the
// timer's firing and the attempt it brings back stay in it.
func (d *Dispatcher) timerRecord(j *job, id string, due time.Time, req *hookstreamv1.DeliveryRequest) *kgo.Record {
	payload, err := proto.Marshal(req)
	if err != nil {
		panic(err) // a DeliveryRequest always marshals
	}
	v, err := proto.Marshal(&hookstreamv1.TimerCommand{
		Id: id, DueMs: due.UnixMilli(), DestinationTopic: d.topics.DispatchRetry, DestinationKey: []byte(req.WebhookId),
		Payload: payload, Owner: "dispatcher", CreatedMs: d.now().UnixMilli(), TraceContext: timerTrace(j),
	})
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: d.topics.Timers, Key: []byte(id), Value: v}
}

func (d *Dispatcher) deliveryRecord(del *hookstreamv1.Delivery) *kgo.Record {
	v, err := proto.Marshal(del)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: d.topics.Deliveries, Key: []byte(del.Campaign), Value: v}
}

func (d *Dispatcher) dlqRecord(del *hookstreamv1.Delivery, req *hookstreamv1.DeliveryRequest) *kgo.Record {
	dl := proto.Clone(del).(*hookstreamv1.Delivery)
	dl.Request = req
	v, err := proto.Marshal(dl)
	if err != nil {
		panic(err)
	}
	return &kgo.Record{Topic: d.topics.DispatchDLQ, Key: []byte(del.Campaign), Value: v}
}

func (d *Dispatcher) delivery(j *job, status hookstreamv1.Delivery_Status) *hookstreamv1.Delivery {
	isTest := false
	for _, t := range j.req.Triggers {
		isTest = isTest || t.IsTest
	}
	// Replay and FirstAttemptMs are copied because the deliveries topic
	// never carries the request: stats tell a replay's outcomes from the
	// original's by them.
	return &hookstreamv1.Delivery{
		WebhookId: j.req.WebhookId, Campaign: j.req.Campaign, Identities: j.identities(), Attempt: j.req.Attempt,
		Status: status, TsMs: d.now().UnixMilli(), IsTest: isTest, Replay: j.req.Replay, FirstAttemptMs: j.req.FirstAttemptMs,
	}
}

// suppressed records that j is not sent, for reason (counted per profile).
func (d *Dispatcher) suppressed(j *job, reason, detail string) *outcome {
	del := d.delivery(j, hookstreamv1.Delivery_STATUS_SUPPRESSED)
	del.SuppressionReason = reason
	del.Error = detail
	d.m.suppressed.Add(context.Background(), int64(len(j.req.Triggers)), d.m.opts("campaign", j.req.Campaign, "reason", reason))
	d.log.DebugContext(jobCtx(j), "suppressed", "campaign", j.req.Campaign, "webhook_id", j.req.WebhookId, "reason", reason)
	o := &outcome{recs: []*kgo.Record{d.deliveryRecord(del)}, done: j.done, acks: j.acks}
	if reason == reasonWebhookDisabled {
		o.recs = append(o.recs, d.dlqRecord(del, j.req)) // held for replay, never dropped
	}
	return o
}

// held hands j to the timer service: it comes back at due under timer id
// id, which names the stage it resumes at.
func (d *Dispatcher) held(j *job, id string, due time.Time, reason string) *outcome {
	d.m.delayed.Add(context.Background(), int64(len(j.req.Triggers)), d.m.opts("campaign", j.req.Campaign, "reason", reason))
	d.log.DebugContext(jobCtx(j), "delayed", "campaign", j.req.Campaign, "webhook_id", j.req.WebhookId, "reason", reason, "until", due)
	return &outcome{recs: []*kgo.Record{d.timerRecord(j, id, due, j.req)}, done: j.done, acks: j.acks}
}

// failed records that j failed for good without (another) attempt: a
// Delivery FAILED and the request on the dispatch DLQ for replay.
func (d *Dispatcher) failed(j *job, why string, res *webhook.Result) *outcome {
	del := d.delivery(j, hookstreamv1.Delivery_STATUS_FAILED)
	del.Error = why
	if res != nil {
		del.HttpStatus = int32(res.Status)
		del.LatencyUs = res.Latency.Microseconds()
		del.ResponseExcerpt = res.Excerpt
	}
	d.m.profiles.Add(context.Background(), int64(len(j.req.Triggers)), d.m.opts("campaign", j.req.Campaign, "outcome", "failed"))
	d.log.WarnContext(jobCtx(j), "delivery failed", "campaign", j.req.Campaign, "webhook_id", j.req.WebhookId, "attempt", j.req.Attempt, "err", why)
	return &outcome{recs: []*kgo.Record{d.deliveryRecord(del), d.dlqRecord(del, j.req)}, done: j.done, acks: j.acks}
}

// Suppression reasons beyond the contract's (control, frequency_cap,
// duplicate, max_users, throttled).
const (
	reasonWebhookDisabled = "webhook_disabled"
	reasonLinkedContent   = "linked_content"
)

// attempted records the outcome of an attempt: delivered; retrying (a
// retry scheduled through the timer service, after Retry-After or the
// webhook's schedule ±20 %); or failed (a final status, the last attempt,
// or past maxAge) with the request on the DLQ. A 410 disables the webhook.
func (d *Dispatcher) attempted(j *job, wh *manifest.Webhook, res webhook.Result, now time.Time) *outcome {
	ctx := context.Background()
	del := d.delivery(j, hookstreamv1.Delivery_STATUS_DELIVERED)
	del.HttpStatus = int32(res.Status)
	del.LatencyUs = res.Latency.Microseconds()
	del.ResponseExcerpt = res.Excerpt
	n := int64(len(j.req.Triggers))
	count := func(outcome string) {
		d.m.attempts.Add(ctx, 1, d.m.opts("campaign", j.req.Campaign, "webhook", wh.Metadata.Name, "outcome", outcome))
		d.m.profiles.Add(ctx, n, d.m.opts("campaign", j.req.Campaign, "outcome", outcome))
	}
	if res.OK() {
		count("delivered")
		if d.log.Enabled(ctx, slog.LevelDebug) {
			d.log.DebugContext(jobCtx(j), "delivered", "campaign", j.req.Campaign, "webhook_id", j.req.WebhookId, "attempt", j.req.Attempt, "status", res.Status, "latency", res.Latency)
		}
		o := &outcome{recs: []*kgo.Record{d.deliveryRecord(del)}, done: j.done, acks: j.acks}
		if j.req.Replay {
			// Marks the DLQ's requests of this webhook-id resolved, so
			// that the next hookstream replay does not send it again.
			o.recs = append(o.recs, d.dlqRecord(del, nil))
		}
		return o
	}
	del.Error = describe(res)
	final := func(why string) *outcome {
		count("failed")
		del.Status = hookstreamv1.Delivery_STATUS_FAILED
		if why != "" {
			del.Error += "; " + why
		}
		d.log.WarnContext(jobCtx(j), "delivery failed", "campaign", j.req.Campaign, "webhook", wh.Metadata.Name, "webhook_id", j.req.WebhookId, "attempt", j.req.Attempt, "err", del.Error)
		return &outcome{recs: []*kgo.Record{d.deliveryRecord(del), d.dlqRecord(del, j.req)}, done: j.done, acks: j.acks}
	}
	if res.Gone() {
		d.disable(ctx, wh.Metadata.Name, wh.Metadata.Generation)
		return final("webhook disabled until its manifest changes; replay with hookstream replay")
	}
	if !res.Retryable() {
		return final("")
	}
	schedule := manifest.DefaultRetrySchedule
	maxAge := defaultMaxAge
	if r := wh.Spec.Retry; r != nil {
		if len(r.Schedule) > 0 {
			schedule = make([]time.Duration, len(r.Schedule))
			for i, s := range r.Schedule {
				schedule[i] = s.Std()
			}
		}
		if r.MaxAge > 0 {
			maxAge = r.MaxAge.Std()
		}
	}
	if int(j.req.Attempt) > len(schedule) {
		return final(fmt.Sprintf("gave up after %d attempts", j.req.Attempt))
	}
	delay := d.jittered(schedule[j.req.Attempt-1])
	if res.RetryAfter > 0 {
		delay = res.RetryAfter
	}
	first := time.UnixMilli(j.req.FirstAttemptMs)
	due := now.Add(delay)
	if due.Sub(first) > maxAge {
		return final(fmt.Sprintf("the next attempt would be past maxAge %s", maxAge))
	}
	count("retrying")
	del.Status = hookstreamv1.Delivery_STATUS_RETRYING
	next := proto.Clone(j.req).(*hookstreamv1.DeliveryRequest)
	next.Attempt++
	id := "retry:" + j.req.WebhookId + ":" + strconv.FormatInt(j.req.FirstAttemptMs, 10) + ":" + strconv.Itoa(int(next.Attempt))
	d.log.DebugContext(jobCtx(j), "delivery will be retried", "campaign", j.req.Campaign, "webhook", wh.Metadata.Name, "webhook_id", j.req.WebhookId,
		"attempt", j.req.Attempt, "err", del.Error, "retry_in", delay)
	return &outcome{recs: []*kgo.Record{d.deliveryRecord(del), d.timerRecord(j, id, due, next)}, done: j.done, acks: j.acks}
}

const defaultMaxAge = 6 * time.Hour

// describe is the error text of an attempt that did not succeed.
func describe(res webhook.Result) string {
	switch {
	case res.Err != nil:
		if errors.Is(res.Err, context.DeadlineExceeded) {
			return "timeout: " + res.Err.Error()
		}
		return res.Err.Error()
	case res.Status >= 300 && res.Status < 400:
		return fmt.Sprintf("endpoint answered %d (redirect to %q not followed)", res.Status, res.Location)
	default:
		return fmt.Sprintf("endpoint answered %d", res.Status)
	}
}

// jobCtx carries the trace of j's trigger, so that its log lines have the
// trace_id of the trace they belong to.
func jobCtx(j *job) context.Context {
	if j.trace == "" {
		return context.Background()
	}
	return traceContext(context.Background(), j.trace)
}

// timerTrace is the trace context of a timer command that hands j to the
// timer service: its last attempt's span (a retry follows the attempt that
// failed), else the context its trigger came with (a request held before
// its attempt); nil when j has no trace.
func timerTrace(j *job) map[string]string {
	sc := j.attempt
	if !sc.IsValid() {
		sc = j.span
	}
	if sc.IsValid() {
		m := propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(trace.ContextWithSpanContext(context.Background(), sc), m)
		if len(m) > 0 {
			return m
		}
	}
	if j.trace != "" {
		return map[string]string{"traceparent": j.trace}
	}
	return nil
}

// traceContext is ctx within the trace of traceparent tp (none if empty).
func traceContext(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, traceparentCarrier(tp))
}

// traceparentCarrier is a carrier of one traceparent header, for reading.
type traceparentCarrier string

func (c traceparentCarrier) Get(key string) string {
	if key == "traceparent" {
		return string(c)
	}
	return ""
}
func (traceparentCarrier) Set(string, string) {}
func (traceparentCarrier) Keys() []string     { return []string{"traceparent"} }
