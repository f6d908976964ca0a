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
	// span is the context of the record the job came from (its publish
	// span's), whose child the attempt's span is (invalid: none, the
	// attempt continues trace).
	span oteltrace.SpanContext
	// attempt is the span of the job's last attempt, once made: a retry
	// handed to the timer continues from it.
	attempt oteltrace.SpanContext
	acks    []ack
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
	key          string // the trigger's dedupe key (stage admit)
	token        string // the lease's value (leaseTokens)
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

// decode reads record r into it (zero).
func (d *Dispatcher) decode(it *item, r *kgo.Record) error {
	it.trace = headerValue(r, "traceparent")
	if r.Context != nil {
		it.span = oteltrace.SpanContextFromContext(r.Context)
	}
	if r.Topic == d.topics.Triggers {
		// The request, its trigger and its one-element list in one
		// allocation: they live and die together.
		a := new(struct {
			req  hookstreamv1.DeliveryRequest
			t    hookstreamv1.Trigger
			list [1]*hookstreamv1.Trigger
		})
		t := &a.t
		if err := proto.Unmarshal(r.Value, t); err != nil {
			return err
		}
		if t.Id == "" || t.Campaign == "" {
			return fmt.Errorf("trigger without id or campaign")
		}
		it.fromTriggers = true
		it.stage = stageAdmit
		it.key = keyPrefix + t.Id
		a.list[0] = t
		a.req.WebhookId, a.req.Campaign, a.req.Triggers, a.req.Attempt = t.Id, t.Campaign, a.list[:], 1
		it.req = &a.req
		return nil
	}
	req := new(hookstreamv1.DeliveryRequest)
	if err := proto.Unmarshal(r.Value, req); err != nil {
		return err
	}
	if req.WebhookId == "" || req.Campaign == "" || len(req.Triggers) == 0 {
		return fmt.Errorf("delivery request without id, campaign or triggers")
	}
	if req.Attempt < 1 {
		req.Attempt = 1
	}
	it.req = req
	it.timerID = headerValue(r, timerIDHeader)
	it.stage = stageOf(it.timerID)
	if it.stage == stageAdmit {
		it.key = keyPrefix + req.Triggers[0].Id
	}
	if it.timerID != "" && it.stage != stageAdmit {
		logical, _, _ := strings.Cut(it.timerID, "~")
		it.dedupe = timerKeyPrefix + logical
	}
	return nil
}

// checkBatch is one polled batch on its way through the checks: decoded
// and looked up by the poll loop (prepare), checked in a single Redis round
// trip (check), then settled: each record is handed on, a suppression or
// delay to the finisher, a request to its campaign's batch or its webhook's
// queue. See Dispatcher.pollLoop.
type checkBatch struct {
	now   time.Time
	items []item
	skip  []ack // undecodable records
	args  scriptArgs
}

// prepare decodes and looks up polled records. tokens are their lease
// tokens (leaseTokens), the same when the check is retried.
func (d *Dispatcher) prepare(recs []*kgo.Record, acks []ack, tokens []string) *checkBatch {
	b := &checkBatch{now: d.now()}
	// Items do not outlive the batch (jobs keep what they need): one
	// allocation for all of them.
	b.items = make([]item, len(recs))
	n := 0
	looked := make(map[string]*campaignLookup, 2)
	for i, r := range recs {
		it := &b.items[n]
		if err := d.decode(it, r); err != nil {
			*it = item{}
			d.log.Error("skipping undecodable record", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
			b.skip = append(b.skip, acks[i])
			continue
		}
		it.ack = acks[i]
		it.token = tokens[i]
		d.lookup(it, looked)
		n++
	}
	b.items = b.items[:n]
	b.args = d.checkArgs(b.now)
	return b
}

// check runs the batch's checks in one Redis round trip. An error (Redis
// unreachable) means that the batch must be checked again.
func (d *Dispatcher) check(ctx context.Context, b *checkBatch) error {
	_, err := runPipeline(ctx, d.rdb, func(p redis.Pipeliner) {
		b.args.reset(len(b.items))
		for i := range b.items {
			it := &b.items[i]
			it.cmd, it.lease, it.prev, it.setGet = nil, nil, nil, nil
			if it.missing == "" {
				d.queueChecks(ctx, p, it, b.now, &b.args)
			}
		}
	})
	if err != nil {
		return fmt.Errorf("redis checks: %w", err)
	}
	return nil
}

// settle hands on the records of a checked batch.
func (d *Dispatcher) settle(b *checkBatch) {
	d.tracker.complete(b.skip...)
	for i := range b.items {
		d.decide(&b.items[i], b.now)
	}
}

// campaignLookup is what the checks need of a campaign, looked up once per
// polled batch.
type campaignLookup struct {
	c         *manifest.Campaign
	wh        *manifest.Webhook
	batchable bool
	missing   string
}

func (d *Dispatcher) lookup(it *item, looked map[string]*campaignLookup) {
	l := looked[it.req.Campaign]
	if l == nil {
		l = &campaignLookup{}
		looked[it.req.Campaign] = l
		if c, ok := d.cat.Campaign(it.req.Campaign); !ok {
			l.missing = fmt.Sprintf("campaign %q no longer exists", it.req.Campaign)
		} else if wh, ok := d.cat.Webhook(c.Spec.Webhook); !ok {
			l.c, l.missing = c, fmt.Sprintf("webhook %q does not exist", c.Spec.Webhook)
		} else {
			l.c, l.wh, l.batchable = c, wh, batchable(c)
		}
	}
	it.c, it.wh, it.batchable, it.missing = l.c, l.wh, l.batchable, l.missing
}

// batchable reports whether a campaign's profiles are batched: a batch is
// configured and nothing in the request is personal.
func batchable(c *manifest.Campaign) bool {
	b := c.Spec.What.Batch
	return b != nil && b.MaxProfiles > 1 && !webhook.Personal(c)
}

// scriptArgs are the arguments every script call of a polled batch shares,
// formatted (and boxed) once per batch, and the room for the arguments of
// its plain leases, allocated once per batch rather than per command.
type scriptArgs struct {
	nowUs, leaseMs, maxDelay any
	slab                     []any
}

func (d *Dispatcher) checkArgs(now time.Time) scriptArgs {
	return scriptArgs{
		nowUs:    strconv.FormatInt(now.UnixMicro(), 10),
		leaseMs:  strconv.FormatInt(d.cfg.LeaseTTL.Std().Milliseconds(), 10),
		maxDelay: strconv.FormatInt(d.cfg.ThrottleMaxDelay.Std().Microseconds(), 10),
	}
}

// reset makes room for the arguments of n plain leases (a new slab: the
// commands of an earlier pipeline may still hold the old one).
func (a *scriptArgs) reset(n int) { a.slab = make([]any, 0, n*len(setNXGetArgs)) }

// setNXGetArgs is SET key token PX leaseMs NX GET, without key, token and
// leaseMs.
var setNXGetArgs = [...]any{"set", nil, nil, "px", nil, "nx", "get"}

// setNXGet is the plain lease of key for token, its arguments cut from the
// batch's slab; key and token are passed as *string, which go-redis writes
// like a string and which is boxed without an allocation (they must not
// change until the pipeline has run).
func (a *scriptArgs) setNXGet(ctx context.Context, p redis.Pipeliner, key, token *string) *redis.StatusCmd {
	if cap(a.slab)-len(a.slab) < len(setNXGetArgs) {
		a.reset(16)
	}
	start := len(a.slab)
	a.slab = append(a.slab, setNXGetArgs[:]...)
	args := a.slab[start:len(a.slab):len(a.slab)]
	args[1], args[2], args[4] = key, token, a.leaseMs
	cmd := redis.NewStatusCmd(ctx, args...)
	_ = p.Process(ctx, cmd) // queued: the pipeline's Exec reports errors
	return cmd
}

func (d *Dispatcher) queueChecks(ctx context.Context, p redis.Pipeliner, it *item, now time.Time, a *scriptArgs) {
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
			if d.setNXGet.Load() {
				it.setGet = a.setNXGet(ctx, p, &it.key, &it.token)
				return
			}
			it.lease = p.SetNX(ctx, it.key, it.token, d.cfg.LeaseTTL.Std())
			it.prev = p.Get(ctx, it.key)
			return
		}
		control := "0"
		if t.Control {
			control = "1"
		}
		it.cmd = admitScript.EvalSha(ctx, p,
			[]string{it.key, usersKey(t.Campaign), dayKey(t.Campaign, now), freqKey(t.Campaign, t.Identity), throttleKey(t.Campaign), rateKey(it.wh.Metadata.Name)},
			leaseMs, control, t.Identity, maxUsers, maxPerDay, (48 * time.Hour).Milliseconds(),
			freqCount, window.Microseconds(), nowUs, t.Id, int(it.quiet.action), thr, rate, maxDelay, it.token)
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
		it.cmd = claimScript.EvalSha(ctx, p, []string{it.dedupe, tk, rk}, leaseMs, nowUs, thr, rate, maxDelay, nowUs, it.token)
	}
}

// leaseResult reads the plain lease: whether it was taken, and otherwise
// the value found (done, or another record's token when leased
// elsewhere). Finding its own token is taking it: Redis ran the command
// before and its reply was lost (see dedupe.go).
func (it *item) leaseResult() (took bool, prev string, err error) {
	if it.setGet != nil {
		prev, err = it.setGet.Result()
		if errors.Is(err, redis.Nil) {
			return true, "", nil
		}
		if err == nil && it.token != "" && prev == it.token {
			return true, "", nil
		}
		return false, prev, err
	}
	if took, err = it.lease.Result(); err != nil || took {
		return took, "", err
	}
	if prev := it.prev.Val(); it.token == "" || prev != it.token {
		return false, prev, nil
	}
	return true, "", nil
}

func (d *Dispatcher) decide(it *item, now time.Time) {
	// The job, its record's ack and its dedupe key (at most one: the
	// trigger's, or the fired record's own) in one allocation.
	a := new(struct {
		j    job
		acks [1]ack
		done [1]string
	})
	a.acks[0] = it.ack
	j := &a.j
	*j = job{req: it.req, trace: it.trace, span: it.span, acks: a.acks[:], done: a.done[:0], notBefore: now, returned: strings.HasPrefix(it.timerID, "hold:")}
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
		j.done = append(j.done, it.key)
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
