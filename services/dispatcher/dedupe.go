package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A trigger id moves through two states in Redis: leased (a lease held
// while the delivery is attempted, so that a crash mid-attempt does not lose
// it: the lease expires and a redelivered trigger is sent) and "done" (kept
// for the dedupe TTL: a repeated trigger is a duplicate). Records fired by
// the timer service (retries and delayed deliveries) are deduplicated the
// same way by their timer id, under timerKeyPrefix.
//
// The lease is taken by the admission and claim scripts (limits.go), in the
// same round trip as the caps and rate limits, or by a plain SET NX GET;
// done is set in one pipelined round trip per group of finished
// deliveries, after their outcome records are acknowledged by Kafka.
//
// A lease's value is a token unique to one polled record in one process
// ("inflight:<process>.<n>"; the scripts add the answer they gave). The
// token is chosen before the command is sent, so that a command that Redis
// ran but whose reply was lost, and that go-redis (or the poll loop) sends
// again, finds its own token and is admitted, as the first time, instead
// of finding the trigger leased and delaying it for the lease's TTL. A
// second record of the same trigger id (redelivered by Kafka, or twice in
// one poll) has another token: leased, then a duplicate.
const (
	doneValue      = "done"
	keyPrefix      = "hookstream:dedupe:"
	timerKeyPrefix = "hookstream:dedupe:timer:"
)

type deduper struct {
	rdb *redis.Client
	ttl time.Duration
}

// done marks keys (full Redis keys) as handled for the dedupe TTL, in one
// round trip.
func (d *deduper) done(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	pipe := d.rdb.Pipeline()
	// SET key done PX ttl, the arguments of all the commands in one slab
	// and each key as a *string (boxed without an allocation).
	ttl := any(d.ttl.Milliseconds())
	args := make([]any, 5*len(keys))
	for i := range keys {
		a := args[5*i : 5*i+5 : 5*i+5]
		a[0], a[1], a[2], a[3], a[4] = "set", &keys[i], doneValue, "px", ttl
		_ = pipe.Process(ctx, redis.NewStatusCmd(ctx, a...)) // queued: Exec reports errors
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("dedupe done: %w", err)
	}
	return nil
}

// newLeasePrefix is the start of this process's lease tokens: random, so
// that no two dispatchers (or two runs of one) share a token.
func newLeasePrefix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "inflight:" + hex.EncodeToString(b[:]) + "."
}

// leaseTokens returns one lease token for each of n polled records, unique
// in this process (a counter), built in one allocation.
func (d *Dispatcher) leaseTokens(n int) []string {
	first := d.leaseSeq.Add(uint64(n)) - uint64(n)
	buf := make([]byte, 0, n*(len(d.leasePrefix)+6))
	ends := make([]int, n)
	for i := range n {
		buf = append(buf, d.leasePrefix...)
		buf = strconv.AppendUint(buf, first+uint64(i), 36)
		ends[i] = len(buf)
	}
	all := string(buf)
	out := make([]string, n)
	start := 0
	for i, end := range ends {
		out[i] = all[start:end]
		start = end
	}
	return out
}
