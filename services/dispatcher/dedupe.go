package dispatcher

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A trigger id moves through two states in Redis: "inflight" (a lease held
// while the delivery is attempted, so that a crash mid-attempt does not lose
// it: the lease expires and a redelivered trigger is sent) and "done" (kept
// for the dedupe TTL: a repeated trigger is a duplicate). Records fired by
// the timer service (retries and delayed deliveries) are deduplicated the
// same way by their timer id, under timerKeyPrefix.
//
// The lease is taken by the admission and claim scripts (limits.go), in the
// same round trip as the caps and rate limits; done is set in one pipelined
// round trip per group of finished deliveries, after their outcome records
// are acknowledged by Kafka.
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
	for _, k := range keys {
		pipe.Set(ctx, k, doneValue, d.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("dedupe done: %w", err)
	}
	return nil
}
