package timer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
)

// appliedIndex follows the campaigns topic and remembers, for each
// campaign, the generation of its last record and that record's timestamp:
// when the campaign (or the edit that made this generation) was applied.
// The catalog holds the specs but not this time, and a schedule must never
// run for a moment before it. A campaign's last record survives compaction,
// so the index is the same in every process and after every restart.
type appliedIndex struct {
	cl  *kgo.Client
	log *slog.Logger

	mu sync.Mutex
	at map[string]appliedGen
}

type appliedGen struct {
	gen int64
	at  time.Time
}

func newAppliedIndex(cfg kafka.Config, log *slog.Logger) (*appliedIndex, error) {
	topic := cfg.Topics().Campaigns
	cl, err := kafka.NewUntracedClient(cfg, log, "timer-campaigns",
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		return nil, err
	}
	return &appliedIndex{cl: cl, log: log, at: map[string]appliedGen{}}, nil
}

// run follows the topic until ctx ends or the client is closed.
func (a *appliedIndex) run(ctx context.Context) {
	for {
		fs := a.cl.PollFetches(ctx)
		if fs.IsClientClosed() || ctx.Err() != nil {
			return
		}
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				a.log.Warn("campaigns fetch error", "topic", t, "partition", p, "err", err)
			}
		})
		fs.EachRecord(a.add)
	}
}

func (a *appliedIndex) add(r *kgo.Record) {
	name, ok := strings.CutPrefix(string(r.Key), manifest.KindCampaign+"/")
	if !ok {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Value == nil {
		delete(a.at, name)
		return
	}
	var head struct {
		Metadata struct {
			Generation int64 `json:"generation"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(r.Value, &head); err != nil {
		return // the catalog logs undecodable records
	}
	if cur, ok := a.at[name]; ok && cur.gen == head.Metadata.Generation {
		return
	}
	a.at[name] = appliedGen{gen: head.Metadata.Generation, at: r.Timestamp}
}

// lookup reports when generation gen of campaign was applied.
func (a *appliedIndex) lookup(campaign string, gen int64) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, ok := a.at[campaign]
	if !ok || g.gen != gen {
		return time.Time{}, false
	}
	return g.at, true
}

func (a *appliedIndex) close() { a.cl.Close() }
