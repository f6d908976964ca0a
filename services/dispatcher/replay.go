package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// ReplayOptions choose what Replay sends again.
type ReplayOptions struct {
	// Campaign is required.
	Campaign string
	// Since skips DLQ records older than this (zero: all).
	Since time.Time
	// DryRun reports what would be replayed without producing.
	DryRun bool
}

// ReplayResult says what Replay found and did.
type ReplayResult struct {
	// Scanned is every DLQ record read; Matched those of the campaign and
	// window; Resolved the webhook-ids skipped because an earlier replay
	// delivered them; Replayed the deliveries produced (each webhook-id
	// once).
	Scanned, Matched, Resolved, Replayed int
	WebhookIDs                           []string
}

// Replay reads {prefix}dispatch.dlq from its start to its current end and
// produces each matching delivery's request back to {prefix}dispatch.retry
// with replay set, attempt 1 and a fresh retry schedule. The dispatcher
// sends it with its original webhook-id (receivers can deduplicate) through
// the webhook's rate limit, circuit breaker and retries, skipping the caps
// and quiet hours that already passed. A webhook-id found several times is
// replayed once. A replay that was delivered writes a record without a
// request (status delivered, replay set) to the DLQ, which resolves the
// webhook-id's requests before it: the next Replay skips them, unless the
// webhook-id failed again since. A webhook disabled by 410 must be
// re-applied (a new generation) first, or its deliveries return to the DLQ.
func Replay(ctx context.Context, kcfg kafka.Config, log *slog.Logger, o ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if o.Campaign == "" {
		return res, errors.New("replay: a campaign is required")
	}
	topics := kcfg.Topics()
	cl, err := kafka.NewClient(kcfg, log, "replay", kgo.ConsumeTopics(topics.DispatchDLQ), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return res, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topics.DispatchDLQ)
	if err != nil {
		return res, fmt.Errorf("replay: end offsets of %s: %w", topics.DispatchDLQ, err)
	}
	if err := ends.Error(); err != nil {
		return res, fmt.Errorf("replay: end offsets of %s: %w", topics.DispatchDLQ, err)
	}
	endOf := map[int32]int64{}    // partition → end offset when we started
	remaining := map[int32]bool{} // partitions not yet read to that end
	ends.Each(func(l kadm.ListedOffset) {
		endOf[l.Partition] = l.Offset
		if l.Offset > 0 {
			remaining[l.Partition] = true
		}
	})
	latest := map[string]*hookstreamv1.DeliveryRequest{}
	var order []string
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("replay: reading %s: %w", topics.DispatchDLQ, err)
		}
		for _, e := range fs.Errors() {
			return res, fmt.Errorf("replay: reading %s: %w", topics.DispatchDLQ, e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= endOf[r.Partition] {
				return // written after we started
			}
			if r.Offset == endOf[r.Partition]-1 {
				delete(remaining, r.Partition)
			}
			res.Scanned++
			var del hookstreamv1.Delivery
			if err := proto.Unmarshal(r.Value, &del); err != nil {
				log.Warn("skipping undecodable DLQ record", "partition", r.Partition, "offset", r.Offset, "err", err)
				return
			}
			if del.Campaign != o.Campaign {
				return
			}
			if del.Request == nil {
				if del.Replay && del.Status == hookstreamv1.Delivery_STATUS_DELIVERED && latest[del.WebhookId] != nil {
					latest[del.WebhookId] = nil // delivered by an earlier replay
				}
				return
			}
			if !o.Since.IsZero() && del.TsMs < o.Since.UnixMilli() {
				return
			}
			res.Matched++
			if _, seen := latest[del.Request.WebhookId]; !seen {
				order = append(order, del.Request.WebhookId)
			}
			latest[del.Request.WebhookId] = del.Request // also when it failed again after a replay
		})
	}
	var out []*kgo.Record
	for _, id := range order {
		if latest[id] == nil {
			res.Resolved++
			continue
		}
		req := proto.Clone(latest[id]).(*hookstreamv1.DeliveryRequest)
		req.Replay, req.Attempt, req.FirstAttemptMs = true, 1, 0
		v, err := proto.Marshal(req)
		if err != nil {
			return res, err
		}
		out = append(out, &kgo.Record{Topic: topics.DispatchRetry, Key: []byte(req.WebhookId), Value: v})
		res.WebhookIDs = append(res.WebhookIDs, id)
	}
	if o.DryRun {
		return res, nil
	}
	if err := kafka.ProduceSync(ctx, cl, out...); err != nil {
		return res, fmt.Errorf("replay: %w", err)
	}
	res.Replayed = len(out)
	return res, nil
}
