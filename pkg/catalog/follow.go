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
	poll := func(ctx context.Context) error {
		fs := cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return context.Canceled
		}
		fs.EachError(func(t string, p int32, err error) {
			if ctx.Err() == nil {
				log.Warn("campaigns fetch error", "topic", t, "err", err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { cat.apply(r.Key, r.Value, r.Offset) })
		return ctx.Err()
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
				// Compaction may have removed the last records: the end
				// offset can be past the last record we can read.
				if err := poll(ctx); err != nil {
					return err
				}
				if lso, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic); err == nil {
					if o, ok := lso.Lookup(topic, 0); ok && o.Err == nil && cat.Version() >= o.Offset {
						break
					}
				}
			}
			cat.markCaughtUp(end.Offset)
			log.Info("catalog loaded", "component", "catalog", "campaigns", len(cat.Campaigns()), "version", cat.Version())
			return nil
		},
		func(ctx context.Context) error {
			for {
				if err := poll(ctx); err != nil {
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
