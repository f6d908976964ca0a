package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/webhook"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// timerIDHeader is the header the timer service puts on every record it
// fires (timer.HeaderTimerID; a test checks that they agree).
const timerIDHeader = "hookstream-timer-id"

// A job is one webhook request on its way: one trigger, or a batch of
// them. Its outcome is recorded by the finisher, which then marks its
// dedupe keys done and completes the records it came from.
type job struct {
	req       *hookstreamv1.DeliveryRequest
	notBefore time.Time
	trace     string
	// span is the receive span of the record the job came from, whose
	// child the attempt's span is (invalid: none, the attempt continues
	// trace).
	span oteltrace.SpanContext
	acks []ack
	// done are the Redis dedupe keys this job holds the lease of.
	done []string
	// returned is set on a request fired back by a hold (circuit, busy,
	// stopping): it has waited its turn once.
	returned bool
}

func (j *job) identities() []string {
	out := make([]string, len(j.req.Triggers))
	for i, t := range j.req.Triggers {
		out[i] = t.GetIdentity()
	}
	return out
}

// stage is where a record enters the checks. Triggers go through all of
// them; a record fired by the timer service resumes after the check that
// delayed it, which its timer id names (kind:...):
//
//	lease:    a trigger leased elsewhere when it arrived: every check again
//	quiet:    delayed to the end of quiet hours: throttle and rate limit
//	throttle: throttle (and for unbatched campaigns the rate limit) reserved: batching or the queue
//	rate:     rate limit reserved: the queue
//	retry:, hold: and replays (no timer): the rate limit, then the queue
type stage int

const (
	stageAdmit stage = iota
	stageThrottle
	stageQueue
	stageRate
	stageSend
)

func stageOf(timerID string) stage {
	kind, _, _ := strings.Cut(timerID, ":")
	switch kind {
	case "lease":
		return stageAdmit
	case "quiet":
		return stageThrottle
	case "throttle":
		return stageQueue
	case "rate":
		return stageSend
	}
	return stageRate
}

// item is one polled record being checked.
type item struct {
	ack          ack
	stage        stage
	fromTriggers bool
	timerID      string
	dedupe       string // the fired record's own dedupe key, "" for none
	req          *hookstreamv1.DeliveryRequest
	trace        string
	span         oteltrace.SpanContext
	c            *manifest.Campaign
	wh           *manifest.Webhook
	batchable    bool
	quiet        quiet
	cmd          *redis.Cmd
	lease        *redis.BoolCmd   // SET NX, with prev (GET)
	prev         *redis.StringCmd //
	setGet       *redis.StatusCmd // SET NX GET (Redis 7), instead of both
	missing      string
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (d *Dispatcher) decode(r *kgo.Record) (*item, error) {
	it := &item{trace: headerValue(r, "traceparent")}
	if r.Context != nil {
		it.span = oteltrace.SpanContextFromContext(r.Context)
	}
	if r.Topic == d.topics.Triggers {
		var t hookstreamv1.Trigger
		if err := proto.Unmarshal(r.Value, &t); err != nil {
			return nil, err
		}
		if t.Id == "" || t.Campaign == "" {
			return nil, fmt.Errorf("trigger without id or campaign")
		}
		it.fromTriggers = true
		it.stage = stageAdmit
		it.req = &hookstreamv1.DeliveryRequest{WebhookId: t.Id, Campaign: t.Campaign, Triggers: []*hookstreamv1.Trigger{&t}, Attempt: 1}
		return it, nil
	}
	var req hookstreamv1.DeliveryRequest
	if err := proto.Unmarshal(r.Value, &req); err != nil {
		return nil, err
	}
	if req.WebhookId == "" || req.Campaign == "" || len(req.Triggers) == 0 {
		return nil, fmt.Errorf("delivery request without id, campaign or triggers")
	}
	if req.Attempt < 1 {
		req.Attempt = 1
	}
	it.req = &req
	it.timerID = headerValue(r, timerIDHeader)
	it.stage = stageOf(it.timerID)
	if it.timerID != "" && it.stage != stageAdmit {
		logical, _, _ := strings.Cut(it.timerID, "~")
		it.dedupe = timerKeyPrefix + logical
	}
	return it, nil
}

// process runs the checks of one polled batch in a single Redis round trip
// and hands each record on: a suppression or delay is recorded by the
// finisher, a request goes to its campaign's batch or its webhook's queue.
// An error (Redis unreachable) means nothing was handed on; the caller
// retries.
func (d *Dispatcher) process(ctx context.Context, recs []*kgo.Record, acks []ack) error {
	now := d.now()
	items := make([]*item, 0, len(recs))
	var skip []ack
	for i, r := range recs {
		it, err := d.decode(r)
		if err != nil {
			d.log.Error("skipping undecodable record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			skip = append(skip, acks[i])
			continue
		}
		it.ack = acks[i]
		d.lookup(it)
		items = append(items, it)
	}
	args := d.checkArgs(now)
	_, err := runPipeline(ctx, d.rdb, func(p redis.Pipeliner) {
		for _, it := range items {
			it.cmd, it.lease, it.prev, it.setGet = nil, nil, nil, nil
			if it.missing == "" {
				d.queueChecks(ctx, p, it, now, args)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("redis checks: %w", err)
	}
	d.tracker.complete(skip...)
	for _, it := range items {
		d.decide(it, now)
	}
	return nil
}

func (d *Dispatcher) lookup(it *item) {
	c, ok := d.cat.Campaign(it.req.Campaign)
	if !ok {
		it.missing = fmt.Sprintf("campaign %q no longer exists", it.req.Campaign)
		return
	}
	it.c = c
	wh, ok := d.cat.Webhook(c.Spec.Webhook)
	if !ok {
		it.missing = fmt.Sprintf("webhook %q does not exist", c.Spec.Webhook)
		return
	}
	it.wh = wh
	it.batchable = batchable(c)
}

// batchable reports whether a campaign's profiles are batched: a batch is
// configured and nothing in the request is personal.
func batchable(c *manifest.Campaign) bool {
	b := c.Spec.What.Batch
	return b != nil && b.MaxProfiles > 1 && !webhook.Personal(c)
}

// scriptArgs are the arguments every script call of a polled batch shares,
// formatted (and boxed) once per batch.
type scriptArgs struct {
	nowUs, leaseMs, maxDelay any
}

func (d *Dispatcher) checkArgs(now time.Time) scriptArgs {
	return scriptArgs{
		nowUs:    strconv.FormatInt(now.UnixMicro(), 10),
		leaseMs:  strconv.FormatInt(d.cfg.LeaseTTL.Std().Milliseconds(), 10),
		maxDelay: strconv.FormatInt(d.cfg.ThrottleMaxDelay.Std().Microseconds(), 10),
	}
}

func (d *Dispatcher) queueChecks(ctx context.Context, p redis.Pipeliner, it *item, now time.Time, a scriptArgs) {
	nowUs, leaseMs, maxDelay := a.nowUs, a.leaseMs, a.maxDelay
	thr := throttleInterval(it.c)
	rate := rateInterval(it.wh)
	if it.batchable {
		rate = 0 // reserved per batch when it is flushed
	}
	switch it.stage {
	case stageAdmit:
		t := it.req.Triggers[0]
		if !t.IsTest {
			it.quiet = quietHoursOf(it.c, t.ProfileJson, now)
		}
		var maxUsers, maxPerDay, freqCount int
		var window time.Duration
		if w := it.c.Spec.Who; w != nil {
			maxUsers = w.MaxUsers
		}
		if l := it.c.Spec.Limits; l != nil {
			maxPerDay = l.MaxPerDay
			if f := l.FrequencyCap; f != nil && f.Count > 0 && f.Per > 0 {
				freqCount, window = f.Count, f.Per.Std()
			}
		}
		if maxUsers == 0 && maxPerDay == 0 && freqCount == 0 && it.quiet.action == quietNone && thr == 0 && rate == 0 {
			// Nothing to count: the lease alone, a plain SET NX that also
			// returns the value it found (GET), to tell a duplicate from a
			// lease held elsewhere; before Redis 7, which cannot combine NX
			// and GET, a SET NX and a GET.
			key := keyPrefix + t.Id
			if d.setNXGet.Load() {
				it.setGet = p.SetArgs(ctx, key, "inflight", redis.SetArgs{Mode: "NX", Get: true, TTL: d.cfg.LeaseTTL.Std()})
				return
			}
			it.lease = p.SetNX(ctx, key, "inflight", d.cfg.LeaseTTL.Std())
			it.prev = p.Get(ctx, key)
			return
		}
		control := "0"
		if t.Control {
			control = "1"
		}
		it.cmd = admitScript.EvalSha(ctx, p,
			[]string{keyPrefix + t.Id, usersKey(t.Campaign), dayKey(t.Campaign, now), freqKey(t.Campaign, t.Identity), throttleKey(t.Campaign), rateKey(it.wh.Metadata.Name)},
			leaseMs, control, t.Identity, maxUsers, maxPerDay, (48 * time.Hour).Milliseconds(),
			freqCount, window.Microseconds(), nowUs, t.Id, int(it.quiet.action), thr, rate, maxDelay)
	default:
		var tk, rk string
		switch it.stage {
		case stageThrottle:
			tk = throttleKey(it.req.Campaign)
			rk = rateKey(it.wh.Metadata.Name)
		case stageRate:
			rk = rateKey(it.wh.Metadata.Name)
			thr = 0
		default:
			thr, rate = 0, 0
		}
		if it.dedupe == "" && (thr == 0 || tk == "") && (rate == 0 || rk == "") {
			return // nothing to check
		}
		it.cmd = claimScript.EvalSha(ctx, p, []string{it.dedupe, tk, rk}, leaseMs, nowUs, thr, rate, maxDelay, nowUs)
	}
}

// leaseResult reads the plain lease: whether it was taken, and otherwise
// the value found (done, or inflight when leased elsewhere).
func (it *item) leaseResult() (took bool, prev string, err error) {
	if it.setGet != nil {
		prev, err = it.setGet.Result()
		if errors.Is(err, redis.Nil) {
			return true, "", nil
		}
		return false, prev, err
	}
	if took, err = it.lease.Result(); err != nil || took {
		return took, "", err
	}
	return false, it.prev.Val(), nil
}

func (d *Dispatcher) decide(it *item, now time.Time) {
	j := &job{req: it.req, trace: it.trace, span: it.span, acks: []ack{it.ack}, notBefore: now, returned: strings.HasPrefix(it.timerID, "hold:")}
	if it.missing != "" {
		d.finisher.submit(d.failed(j, it.missing, nil))
		return
	}
	v := verdict{outcome: "ok", at: now}
	if it.lease != nil || it.setGet != nil {
		took, prev, err := it.leaseResult()
		switch {
		case err != nil:
			d.finisher.submit(d.failed(j, "redis checks: "+err.Error(), nil))
			return
		case took && it.req.Triggers[0].Control:
			v.outcome = "control"
		case took:
		case prev == doneValue:
			v.outcome = "duplicate"
		default:
			v = verdict{outcome: "leased", wait: 2 * time.Second}
		}
	}
	if it.cmd != nil {
		var err error
		if v, err = parseVerdict(it.cmd); err != nil {
			// A script failure is a bug, not an outage: record it rather
			// than retrying forever.
			d.finisher.submit(d.failed(j, "redis checks: "+err.Error(), nil))
			return
		}
	}
	if it.dedupe != "" && v.outcome != "leased" && v.outcome != "duplicate" {
		j.done = append(j.done, it.dedupe)
	}
	tid := ""
	if it.stage == stageAdmit {
		tid = it.req.Triggers[0].Id
	}
	switch v.outcome {
	case "duplicate":
		if it.stage == stageAdmit {
			// A trigger seen before (its lease hold included).
			d.finisher.submit(d.suppressed(j, "duplicate", ""))
		} else {
			d.finisher.submit(&outcome{acks: j.acks}) // fired twice: already handled
		}
		return
	case "leased":
		// Someone else holds the lease: look again soon (if it finished,
		// this is then a duplicate; if it crashed, ours to send once the
		// lease expires). Usually the holder is just recording its outcome.
		wait := min(max(v.wait, time.Second), 5*time.Second)
		id := "lease:" + tid + ":" + strconv.FormatInt(now.Add(wait).UnixMilli(), 10)
		if it.stage != stageAdmit {
			logical, _, _ := strings.Cut(it.timerID, "~")
			id = logical + "~" + strconv.FormatInt(now.Add(wait).UnixMilli(), 10)
		}
		d.finisher.submit(d.held(j, id, now.Add(wait), "leased"))
		return
	}
	if tid != "" {
		j.done = append(j.done, keyPrefix+tid)
	}
	switch v.outcome {
	case "ok":
	case "quiet":
		d.finisher.submit(d.held(j, "quiet:"+j.req.WebhookId+":"+strconv.FormatInt(it.quiet.until.UnixMilli(), 10), it.quiet.until, "quiet_hours"))
		return
	case "control", "max_users", "max_per_day", "frequency_cap", "quiet_hours", "throttled":
		d.finisher.submit(d.suppressed(j, v.outcome, ""))
		return
	default:
		d.finisher.submit(d.failed(j, "redis checks: unexpected answer "+v.outcome, nil))
		return
	}
	j.notBefore = v.at
	if wait := v.at.Sub(now); wait > d.cfg.LocalDelay.Std() {
		kind, resume := "rate", "rate_limited"
		if (it.stage == stageAdmit || it.stage == stageThrottle) && throttleInterval(it.c) > 0 {
			kind, resume = "throttle", "throttled"
		}
		d.finisher.submit(d.held(j, kind+":"+j.req.WebhookId+":"+strconv.FormatInt(v.at.UnixMilli(), 10), v.at, resume))
		return
	}
	if it.batchable && len(j.req.Triggers) == 1 && j.req.Attempt == 1 && j.req.FirstAttemptMs == 0 && !j.req.Replay &&
		(it.stage == stageAdmit || it.stage == stageThrottle || it.stage == stageQueue) {
		d.batcher.add(j, it.c)
		return
	}
	d.endpoint(it.wh.Metadata.Name).enqueue(j)
}
