package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// defaultLinger is how long a batch waits for more profiles when the
// campaign sets maxProfiles but no linger; maxLinger caps any linger (a
// batch holds its records uncommitted while it waits).
const (
	defaultLinger = time.Second
	maxLinger     = time.Minute
)

// batcher groups the ready profiles of batchable campaigns (a batch
// configured, nothing personal in the request) into one request each, up
// to batch.maxProfiles or until batch.linger has passed since the first.
// A flushed batch takes its webhook's rate limit as one request and joins
// the webhook's queue. A single goroutine; add is safe for concurrent use.
type batcher struct {
	d    *Dispatcher
	wake chan struct{}
	quit sync.WaitGroup

	mu   sync.Mutex
	open map[string]*openBatch // by campaign
}

type openBatch struct {
	campaign string
	webhook  string
	jobs     []*job
	max      int
	deadline time.Time // wall clock
}

func newBatcher(d *Dispatcher) *batcher {
	b := &batcher{d: d, wake: make(chan struct{}, 1), open: map[string]*openBatch{}}
	b.quit.Add(1)
	return b
}

func (b *batcher) add(j *job, c *manifest.Campaign) {
	b.mu.Lock()
	ob := b.open[c.Metadata.Name]
	opened := ob == nil
	if opened {
		linger := c.Spec.What.Batch.Linger.Std()
		if linger <= 0 {
			linger = defaultLinger
		}
		ob = &openBatch{campaign: c.Metadata.Name, webhook: c.Spec.Webhook, max: c.Spec.What.Batch.MaxProfiles, deadline: time.Now().Add(min(linger, maxLinger))}
		b.open[c.Metadata.Name] = ob
	}
	ob.jobs = append(ob.jobs, j)
	full := len(ob.jobs) >= ob.max
	b.mu.Unlock()
	if full || opened { // a full batch goes now; a new one sets a deadline
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

func (b *batcher) wait() { b.quit.Wait() }

// run flushes batches as they fill or their linger ends; when ctx ends it
// flushes every open batch and returns.
func (b *batcher) run(ctx context.Context) {
	defer b.quit.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		stopping := ctx.Err() != nil
		now := time.Now()
		var due []*openBatch
		next := time.Time{}
		b.mu.Lock()
		for name, ob := range b.open {
			switch {
			case stopping || !now.Before(ob.deadline):
				due = append(due, ob)
				delete(b.open, name)
				continue
			case len(ob.jobs) >= ob.max:
				// Full batches go now; the rest keeps waiting for its linger.
				full := len(ob.jobs) / ob.max * ob.max
				due = append(due, &openBatch{campaign: ob.campaign, webhook: ob.webhook, max: ob.max, jobs: ob.jobs[:full]})
				ob.jobs = append([]*job(nil), ob.jobs[full:]...)
				if len(ob.jobs) == 0 {
					delete(b.open, name)
					continue
				}
			}
			if next.IsZero() || ob.deadline.Before(next) {
				next = ob.deadline
			}
		}
		b.mu.Unlock()
		if len(due) > 0 {
			b.flush(context.WithoutCancel(ctx), due)
		}
		if stopping {
			return
		}
		if !next.IsZero() {
			timer.Reset(next.Sub(now))
		}
		select {
		case <-ctx.Done():
		case <-b.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// batchID is a batch's webhook-id: a digest of its trigger ids, so that the
// same batch always gets the same id (the receiver can deduplicate).
func batchID(triggers []*hookstreamv1.Trigger) string {
	ids := make([]string, len(triggers))
	for i, t := range triggers {
		ids[i] = t.Id
	}
	sort.Strings(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return "msg_" + hex.EncodeToString(sum[:16])
}

func (b *batcher) flush(ctx context.Context, batches []*openBatch) {
	d := b.d
	var jobs []*job
	for _, ob := range batches {
		for start := 0; start < len(ob.jobs); start += ob.max {
			members := ob.jobs[start:min(start+ob.max, len(ob.jobs))]
			j := &job{req: &hookstreamv1.DeliveryRequest{Campaign: ob.campaign, Attempt: 1}, trace: members[0].trace, span: members[0].span}
			j.req.Triggers = make([]*hookstreamv1.Trigger, 0, len(members))
			j.acks = make([]ack, 0, len(members))
			j.done = make([]string, 0, len(members))
			for _, m := range members {
				j.req.Triggers = append(j.req.Triggers, m.req.Triggers...)
				j.acks = append(j.acks, m.acks...)
				j.done = append(j.done, m.done...)
				if m.notBefore.After(j.notBefore) {
					j.notBefore = m.notBefore
				}
			}
			j.req.WebhookId = batchID(j.req.Triggers)
			jobs = append(jobs, j)
		}
	}
	// The webhook rate limit, one slot per request, in one round trip.
	now := d.now()
	cmds := make([]*redis.Cmd, len(jobs))
	webhooks := make([]string, len(jobs))
	// Redis down: a few tries, then the batches go unmetered rather than
	// holding their records (and a stop) hostage.
	for try, backoff := 0, 100*time.Millisecond; ; try, backoff = try+1, 2*backoff {
		_, err := runPipeline(ctx, d.rdb, func(p redis.Pipeliner) {
			for i, j := range jobs {
				cmds[i] = nil
				c, ok := d.cat.Campaign(j.req.Campaign)
				if !ok {
					continue
				}
				webhooks[i] = c.Spec.Webhook
				wh, ok := d.cat.Webhook(c.Spec.Webhook)
				if !ok || rateInterval(wh) == 0 {
					continue
				}
				cmds[i] = claimScript.EvalSha(ctx, p, []string{"", "", rateKey(wh.Metadata.Name)},
					0, now.UnixMicro(), 0, rateInterval(wh), 0, j.notBefore.UnixMicro(), "")
			}
		})
		if err == nil {
			break
		}
		if try == 4 {
			d.log.Error("reserving the rate limit of batches failed; sending them unmetered", "err", err)
			clear(cmds)
			break
		}
		d.log.Warn("reserving the rate limit of batches failed; retrying", "err", err, "backoff", backoff)
		time.Sleep(backoff)
	}
	for i, j := range jobs {
		if cmds[i] != nil {
			if v, err := parseVerdict(cmds[i]); err == nil {
				j.notBefore = v.at
			}
		}
		if webhooks[i] == "" {
			d.finisher.submit(d.failed(j, "campaign "+strconv.Quote(j.req.Campaign)+" no longer exists", nil))
			continue
		}
		if wait := j.notBefore.Sub(now); wait > d.cfg.LocalDelay.Std() {
			d.finisher.submit(d.held(j, "rate:"+j.req.WebhookId+":"+strconv.FormatInt(j.notBefore.UnixMilli(), 10), j.notBefore, "rate_limited"))
			continue
		}
		d.endpoint(webhooks[i]).enqueue(j)
	}
}
