package catalog

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/service"
)

// NewFollower returns the service that keeps cat in step with the campaigns
// topic: starting reads the topic from its beginning up to its end at that
// moment (so a service that depends on it starts with every applied
// manifest), running follows new records.
func NewFollower(cfg kafka.Config, log *slog.Logger, cat *Catalog) *service.Service {
	topic := cfg.Topics().Campaigns
	var cl *kgo.Client
	// poll applies one fetch and reports whether it came back empty with
	// the high watermark at or past end: nothing readable is left below
	// end (compaction can leave end past the last record).
	poll := func(ctx context.Context, end int64) (drained bool, err error) {
		fs := cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return false, context.Canceled
		}
		fs.EachError(func(t string, p int32, err error) {
			if ctx.Err() == nil {
				log.Warn("campaigns fetch error", "topic", t, "err", err)
			}
		})
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				cat.apply(r.Key, r.Value, r.Offset)
			}
			if len(p.Records) == 0 && p.Err == nil && p.HighWatermark >= end {
				drained = true
			}
		})
		return drained, ctx.Err()
	}
	return service.New("catalog",
		func(ctx context.Context) error {
			var err error
			cl, err = kafka.NewUntracedClient(cfg, log, "catalog",
				kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
			if err != nil {
				return err
			}
			ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
			if err != nil {
				return fmt.Errorf("campaigns topic end offset: %w", err)
			}
			end, ok := ends.Lookup(topic, 0)
			if !ok || end.Err != nil {
				return fmt.Errorf("campaigns topic %s: partition 0 missing: %v", topic, end.Err)
			}
			for cat.Version() < end.Offset {
				drained, err := poll(ctx, end.Offset)
				if err != nil {
					return err
				}
				if drained {
					break
				}
			}
			cat.markCaughtUp(end.Offset)
			log.Info("catalog loaded", "component", "catalog", "campaigns", len(cat.Campaigns()), "version", cat.Version())
			return nil
		},
		func(ctx context.Context) error {
			for {
				if _, err := poll(ctx, 0); err != nil {
					return nil
				}
			}
		},
		func(error) error {
			if cl != nil {
				cl.Close()
			}
			return nil
		})
}
