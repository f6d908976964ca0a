package dispatcher

import (
	"container/heap"
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/hookstream/hookstream/pkg/webhook"
)

// endpoint isolates one webhook: its own queue (ordered by the time each
// request may go, so a throttled request never holds back a ready one),
// its own in-flight limit (maxInFlight), its own circuit breaker, and its
// own latency estimate. A request that would wait in the queue longer than
// MaxQueueWait is handed to the timer service instead, so a slow endpoint
// cannot hold records (and their commits) for long; nothing in the
// dispatcher ever waits on another webhook's endpoint.
type endpoint struct {
	d    *Dispatcher
	name string
	wake chan struct{}

	mu       sync.Mutex
	q        jobQueue
	seq      uint64
	inFlight map[*job]time.Time // wall-clock start of each request in flight
	br       breaker
	ewma     time.Duration // recent latency
	lastDone time.Time     // wall-clock end of the last request
	// slowSince is when the endpoint's pace went above the fast limit
	// (zero: it is within it).
	slowSince time.Time
	// heldUntil is when the last request handed to the timer as busy
	// comes back: the next one is due after it, at the endpoint's pace.
	heldUntil time.Time
}

func newEndpoint(d *Dispatcher, name string) *endpoint {
	return &endpoint{d: d, name: name, wake: make(chan struct{}, 1), inFlight: map[*job]time.Time{},
		br: breaker{threshold: d.cfg.CircuitFailures, base: d.cfg.CircuitCooldown.Std()}}
}

func (e *endpoint) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// limit is the webhook's maxInFlight (default 10).
func (e *endpoint) limit() int {
	if wh, ok := e.d.cat.Webhook(e.name); ok && wh.Spec.MaxInFlight > 0 {
		return wh.Spec.MaxInFlight
	}
	return 10
}

// wait estimates how long a request queued now would wait: the queue ahead
// of it times the endpoint's pace. Called with e.mu held.
func (e *endpoint) wait(limit int) time.Duration {
	if len(e.inFlight) < limit && len(e.q) == 0 {
		return 0
	}
	return time.Duration(len(e.q)+1) * e.pace(limit)
}

// pace is the time the endpoint takes per request at its in-flight limit:
// its recent latency over maxInFlight, or, when that is longer, the time
// for which requests have been in flight without any of them finishing
// over maxInFlight (a hanging endpoint shows so before any request has come
// back; one slow request among many that finish does not). Latencies are
// wall-clock time, whatever the dispatcher's clock. Called with e.mu held.
func (e *endpoint) pace(limit int) time.Duration {
	lat := e.ewma
	if len(e.inFlight) > 0 {
		var oldest time.Time
		for _, s := range e.inFlight {
			if oldest.IsZero() || s.Before(oldest) {
				oldest = s
			}
		}
		if e.lastDone.After(oldest) {
			oldest = e.lastDone
		}
		lat = max(lat, time.Since(oldest))
	}
	return lat / time.Duration(limit)
}

// fast reports whether the endpoint sends a poll's worth of requests
// (fetch_max_records) within half of MaxQueueWait at its pace, or has been
// slower than that for less than slowGrace (a starved CPU or a GC pause
// makes every endpoint look slow for a moment). Polling waits for a fast
// endpoint to make room (see Dispatcher.waitForRoom), so its requests are
// never handed to the timer as busy: that would cost more than the wait.
// Called with e.mu held.
func (e *endpoint) fast(limit int) bool {
	if time.Duration(e.d.kcfg.FetchMaxRecords)*e.pace(limit) <= e.d.cfg.MaxQueueWait.Std()/2 {
		e.slowSince = time.Time{}
		return true
	}
	if e.slowSince.IsZero() {
		e.slowSince = time.Now()
	}
	return time.Since(e.slowSince) < slowGrace
}

// slowGrace is how long an endpoint must stay slower than fast's limit to
// be treated as slow.
const slowGrace = time.Second

// room reports how long a fast endpoint needs before a poll's worth of
// requests could join its queue with none of them waiting longer than half
// of MaxQueueWait (0: now, or the endpoint is not fast, or its circuit is
// not closed, when its requests are held whatever the queue).
func (e *endpoint) room() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	limit := e.limit()
	if len(e.q) == 0 || e.br.state != breakerClosed || !e.fast(limit) {
		return 0
	}
	return max(time.Duration(len(e.q)+e.d.kcfg.FetchMaxRecords)*e.pace(limit)-e.d.cfg.MaxQueueWait.Std()/2, 0)
}

// maxBusyHold bounds how far ahead a busy request is scheduled, so that
// requests held behind a long backlog are looked at again within that time
// if the endpoint speeds up.
const maxBusyHold = 10 * time.Minute

// enqueue queues j, or hands it to the timer service when the endpoint is
// slow and too far behind (busy) or the dispatcher is stopping.
func (e *endpoint) enqueue(j *job) {
	now := e.d.now()
	e.mu.Lock()
	limit := e.limit()
	wait := e.wait(limit)
	if e.d.stopping.Load() {
		e.mu.Unlock()
		e.d.finisher.submit(e.d.hold(j, now, min(max(wait, time.Second), time.Minute), "stopping"))
		return
	}
	busy := wait > e.d.cfg.MaxQueueWait.Std()
	if j.returned {
		// Its return was scheduled for when the endpoint should have room:
		// held again only if the endpoint has fallen far behind that.
		busy = wait > 2*e.d.cfg.MaxQueueWait.Std()
	}
	if busy && !e.fast(limit) {
		// Busy: the request comes back when the endpoint should have room
		// for it: after those handed over before it, one pace apart, so
		// that they do not all come back at once to be handed over again.
		due := now.Add(max(wait, time.Second))
		if e.heldUntil.After(due) {
			due = e.heldUntil
		}
		if latest := now.Add(maxBusyHold); due.After(latest) {
			due = latest
		}
		e.heldUntil = due.Add(e.pace(limit))
		e.mu.Unlock()
		e.d.finisher.submit(e.d.hold(j, now, due.Sub(now), "busy"))
		return
	}
	e.seq++
	heap.Push(&e.q, queued{j, e.seq})
	e.mu.Unlock()
	e.signal()
}

// take pops the requests that may start now, as the in-flight limit,
// their not-before times and the circuit allow (at most max of them), and
// those the open circuit holds back. It reports how long until the next
// queued request may go (0: none waiting on time). Called with e.mu held.
func (e *endpoint) take(now time.Time, max int) (start, held []*job, heldWait []time.Duration, wait time.Duration) {
	limit := e.limit()
	for len(e.inFlight) < limit && len(e.q) > 0 && len(start) < max {
		head := e.q[0].j
		if head.notBefore.After(now) {
			return start, held, heldWait, head.notBefore.Sub(now)
		}
		heap.Pop(&e.q)
		if ok, cw := e.br.allow(now); !ok {
			held = append(held, head)
			heldWait = append(heldWait, cw)
			continue
		}
		e.inFlight[head] = time.Now()
		start = append(start, head)
	}
	return start, held, heldWait, 0
}

func (e *endpoint) holdAll(now time.Time, held []*job, wait []time.Duration, reason string) {
	for i, j := range held {
		e.d.finisher.submit(e.d.hold(j, now, wait[i], reason))
	}
}

// run starts a worker for each request that may go while workers are
// free, waits for not-before times, and at a stop hands what has not
// started to the timer and returns once nothing is in flight. A worker
// takes the next request itself when it finishes one, so a busy endpoint
// does not go through run for every request.
func (e *endpoint) run() {
	d := e.d
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := d.now()
		stopping := d.stopping.Load()
		var held, start []*job
		var heldWait []time.Duration
		var wait time.Duration
		e.mu.Lock()
		if stopping {
			for len(e.q) > 0 {
				held = append(held, heap.Pop(&e.q).(queued).j)
				heldWait = append(heldWait, time.Second)
			}
		} else {
			start, held, heldWait, wait = e.take(now, math.MaxInt)
		}
		idle := stopping && len(e.inFlight) == 0
		e.mu.Unlock()

		reason := "circuit_open"
		if stopping {
			reason = "stopping"
		}
		e.holdAll(now, held, heldWait, reason)
		for _, j := range start {
			d.work.Add(1)
			go func() {
				defer d.work.Done()
				e.worker(j)
			}()
		}
		if idle {
			return
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-e.wake:
				timer.Stop()
			case <-timer.C:
			}
		} else {
			<-e.wake
		}
	}
}

// worker sends j, then whatever else may go now, until nothing does.
func (e *endpoint) worker(j *job) {
	d := e.d
	for j != nil {
		o, res, attempted := d.deliverLimited(j)
		d.finisher.submit(o)
		if attempted {
			d.m.latency.Record(context.Background(), res.Latency.Seconds(), d.m.opts("webhook", e.name))
		}
		now := d.now()
		var held []*job
		var heldWait []time.Duration
		var wait time.Duration
		e.mu.Lock()
		e.finished(j, res, attempted, now)
		j = nil
		if !d.stopping.Load() {
			var next []*job
			next, held, heldWait, wait = e.take(now, 1)
			if len(next) == 1 {
				j = next[0]
			}
		}
		e.mu.Unlock()
		e.holdAll(now, held, heldWait, "circuit_open")
		if j == nil && (wait > 0 || d.stopping.Load()) {
			e.signal() // run waits for the time, or finishes the stop
		}
	}
	e.signal()
}

// deliverLimited is deliver within the dispatcher-wide Concurrency.
func (d *Dispatcher) deliverLimited(j *job) (*outcome, webhook.Result, bool) {
	d.global <- struct{}{}
	defer func() { <-d.global }()
	return d.deliver(j)
}

// finished accounts for a request that ended. Called with e.mu held.
func (e *endpoint) finished(j *job, res webhook.Result, attempted bool, now time.Time) {
	delete(e.inFlight, j)
	e.lastDone = time.Now()
	if !attempted {
		e.br.release()
		return
	}
	if e.ewma == 0 {
		e.ewma = res.Latency
	} else {
		e.ewma = (e.ewma*4 + res.Latency) / 5
	}
	failure := (res.Err != nil && res.Retryable()) || res.Status == 408 || res.Status >= 500
	neutral := res.Err != nil && !res.Retryable()
	if !neutral {
		if opened := e.br.record(!failure, now); opened {
			e.d.log.Warn("circuit opened: deliveries to this webhook are delayed", "webhook", e.name, "cooldown", e.br.cooldown)
		}
	}
}

// hold hands j to the timer service for wait (circuit open, busy,
// stopping). It comes back to the rate limit and the queue; the delivery
// fails (DLQ) once it is older than the webhook's maxAge, counted from its
// first attempt or hold.
func (d *Dispatcher) hold(j *job, now time.Time, wait time.Duration, reason string) *outcome {
	if j.req.FirstAttemptMs == 0 {
		j.req.FirstAttemptMs = now.UnixMilli()
	} else if age := now.Sub(time.UnixMilli(j.req.FirstAttemptMs)); age > d.maxAge(j.req.Campaign) {
		return d.failed(j, "held ("+reason+") past the webhook's maxAge", nil)
	}
	wait += time.Duration(float64(wait) * 0.2 * (d.jitter() + 1) / 2) // spread the returns
	due := now.Add(wait)
	id := "hold:" + j.req.WebhookId + ":" + strconv.Itoa(int(j.req.Attempt)) + ":" + strconv.FormatInt(due.UnixMilli(), 10)
	return d.held(j, id, due, reason)
}

func (d *Dispatcher) maxAge(campaign string) time.Duration {
	if c, ok := d.cat.Campaign(campaign); ok {
		if wh, ok := d.cat.Webhook(c.Spec.Webhook); ok && wh.Spec.Retry != nil && wh.Spec.Retry.MaxAge > 0 {
			return wh.Spec.Retry.MaxAge.Std()
		}
	}
	return defaultMaxAge
}

func (e *endpoint) stats() (inFlight, queued int, state breakerState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.inFlight), len(e.q), e.br.state
}

// queued is a job in an endpoint's queue; seq keeps equal times in
// arrival order.
type queued struct {
	j   *job
	seq uint64
}

type jobQueue []queued

func (q jobQueue) Len() int { return len(q) }
func (q jobQueue) Less(a, b int) bool {
	if !q[a].j.notBefore.Equal(q[b].j.notBefore) {
		return q[a].j.notBefore.Before(q[b].j.notBefore)
	}
	return q[a].seq < q[b].seq
}
func (q jobQueue) Swap(a, b int) { q[a], q[b] = q[b], q[a] }
func (q *jobQueue) Push(x any)   { *q = append(*q, x.(queued)) }
func (q *jobQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	old[len(old)-1] = queued{}
	*q = old[:len(old)-1]
	return x
}

type breakerState int

const (
	breakerClosed breakerState = iota
	breakerHalfOpen
	breakerOpen
)

func (s breakerState) String() string {
	return [...]string{"closed", "half_open", "open"}[s]
}

// breaker is a webhook's circuit breaker: closed until threshold
// consecutive failures, then open for the cool-down; then half-open, when
// one probe goes: its success closes the circuit, its failure opens it
// again with the cool-down doubled (up to 10m). Not safe for concurrent
// use: the endpoint's mutex guards it.
type breaker struct {
	threshold int
	base      time.Duration

	state    breakerState
	failures int
	until    time.Time
	cooldown time.Duration
	probing  bool
}

// allow reports whether a request may go now; if not, how long to wait.
func (b *breaker) allow(now time.Time) (bool, time.Duration) {
	switch b.state {
	case breakerOpen:
		if now.Before(b.until) {
			return false, b.until.Sub(now)
		}
		b.state = breakerHalfOpen
		b.probing = false
		fallthrough
	case breakerHalfOpen:
		if b.probing {
			return false, min(b.cooldown, 5*time.Second)
		}
		b.probing = true
		return true, 0
	}
	return true, 0
}

// release returns a probe slot that made no attempt.
func (b *breaker) release() {
	if b.state == breakerHalfOpen {
		b.probing = false
	}
}

// record counts an attempt's outcome and reports whether it opened the
// circuit.
func (b *breaker) record(ok bool, now time.Time) bool {
	if ok {
		b.state, b.failures, b.probing, b.cooldown = breakerClosed, 0, false, 0
		return false
	}
	b.failures++
	switch {
	case b.state == breakerHalfOpen:
		b.cooldown = min(2*b.cooldown, 10*time.Minute)
	case b.state == breakerClosed && b.failures >= b.threshold:
		b.cooldown = b.base
	default:
		return false
	}
	b.state, b.until, b.probing = breakerOpen, now.Add(b.cooldown), false
	return true
}
