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
// for the dedupe TTL: a repeated trigger is a duplicate).
const (
	leaseValue = "inflight"
	doneValue  = "done"
	keyPrefix  = "hookstream:dedupe:"
)

type claim int

const (
	claimed claim = iota
	duplicate
	leased // another worker holds the lease
)

type deduper struct {
	rdb   *redis.Client
	ttl   time.Duration
	lease time.Duration
}

// claim tries to take the lease on every id in one round trip.
func (d *deduper) claim(ctx context.Context, ids []string) ([]claim, error) {
	pipe := d.rdb.Pipeline()
	sets := make([]*redis.BoolCmd, len(ids))
	gets := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		sets[i] = pipe.SetNX(ctx, keyPrefix+id, leaseValue, d.lease)
		gets[i] = pipe.Get(ctx, keyPrefix+id)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("dedupe claim: %w", err)
	}
	out := make([]claim, len(ids))
	for i := range ids {
		switch {
		case sets[i].Val():
			out[i] = claimed
		case gets[i].Val() == doneValue:
			out[i] = duplicate
		default:
			out[i] = leased
		}
	}
	return out, nil
}

// done marks ids as handled for the dedupe TTL, in one round trip.
func (d *deduper) done(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := d.rdb.Pipeline()
	for _, id := range ids {
		pipe.Set(ctx, keyPrefix+id, doneValue, d.ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("dedupe done: %w", err)
	}
	return nil
}
