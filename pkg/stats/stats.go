// Package stats keeps live campaign statistics (CONTRACT.md section 5) from
// the deliveries and conversions topics, in Redis, and serves them.
//
// Each consumed batch's counters, per-day series, recent attempts and the
// consumed offsets are written in one Redis transaction; at assignment the
// consumer resumes from the offsets stored in Redis, or from the start of the
// topics when Redis has none. Counting is therefore exactly once, counts
// survive restarts of every service, and a Redis that lost its data is
// rebuilt from the topics (as far as their retention reaches).
package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Redis keys.
const (
	keyPrefix   = "hookstream:stats:"
	offsetsKey  = keyPrefix + "offsets"
	recentLimit = 1000
	seriesDays  = 30
)

func totalsKey(campaign string) string { return keyPrefix + "{" + campaign + "}" }
func dayKey(campaign, day string) string {
	return keyPrefix + "{" + campaign + "}:day:" + day
}
func recentKey(campaign string) string { return keyPrefix + "{" + campaign + "}:recent" }

// Counter fields of a campaign's hash.
const (
	fTriggered = "triggered"
	fSent      = "sent"
	fDelivered = "delivered"
	fFailed    = "failed"
	fRetries   = "retries"
	fConvTest  = "conversions:test"
	fConvCtrl  = "conversions:control"
	suppressed = "suppressed:"
)

// Aggregator consumes deliveries and conversions into Redis.
type Aggregator struct {
	kcfg   kafka.Config
	topics kafka.Topics
	rdb    *redis.Client
	log    *slog.Logger
	cons   *kafka.Consumer
}

// NewAggregator returns the stats aggregator.
func NewAggregator(kcfg kafka.Config, rdb *redis.Client, log *slog.Logger) *Aggregator {
	return &Aggregator{kcfg: kcfg, topics: kcfg.Topics(), rdb: rdb, log: log.With("component", "stats")}
}

// Service returns the aggregator's lifecycle.
func (a *Aggregator) Service() *service.Service {
	return service.New("stats",
		func(ctx context.Context) error {
			if err := a.rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			var err error
			a.cons, err = kafka.NewConsumer(a.kcfg, a.log, "stats", kafka.ConsumerConfig{
				Group: a.kcfg.Group("stats"), Topics: []string{a.topics.Deliveries, a.topics.Conversions}, Untraced: true,
			}, a.handle, kgo.AdjustFetchOffsetsFn(a.storedOffsets))
			return err
		},
		func(ctx context.Context) error { return a.cons.Run(ctx) },
		func(error) error {
			if a.cons != nil {
				a.cons.Close()
			}
			return nil
		})
}

// storedOffsets resumes each partition where the counters in Redis end.
func (a *Aggregator) storedOffsets(ctx context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := a.rdb.HGetAll(ctx, offsetsKey).Result()
	if err != nil {
		return nil, fmt.Errorf("stats offsets: %w", err)
	}
	for topic, parts := range m {
		for p := range parts {
			off := int64(0)
			if v, ok := stored[topic+"/"+strconv.Itoa(int(p))]; ok {
				off, _ = strconv.ParseInt(v, 10, 64)
			}
			m[topic][p] = kgo.NewOffset().At(off)
		}
	}
	return m, nil
}

// Attempt is one entry of a campaign's recent attempts.
type Attempt struct {
	WebhookID  string   `json:"webhookId"`
	Identities []string `json:"identities"`
	Attempt    int32    `json:"attempt"`
	Status     string   `json:"status"`
	HTTPStatus int32    `json:"httpStatus,omitempty"`
	LatencyMs  float64  `json:"latencyMs,omitempty"`
	Error      string   `json:"error,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	At         string   `json:"at"`
}

type counts map[string]map[string]int64 // key → field → increment

func (c counts) add(key, field string, n int64) {
	if c[key] == nil {
		c[key] = map[string]int64{}
	}
	c[key][field] += n
}

func (a *Aggregator) handle(ctx context.Context, recs []*kgo.Record) error {
	inc := counts{}
	recent := map[string][]string{}
	offsets := map[string]any{}
	days := map[string]bool{}
	for _, r := range recs {
		offsets[r.Topic+"/"+strconv.Itoa(int(r.Partition))] = strconv.FormatInt(r.Offset+1, 10)
		switch r.Topic {
		case a.topics.Deliveries:
			var d hookstreamv1.Delivery
			if err := proto.Unmarshal(r.Value, &d); err != nil || d.IsTest {
				continue
			}
			day := time.UnixMilli(d.TsMs).UTC().Format("2006-01-02")
			for field, n := range deliveryCounts(&d) {
				inc.add(totalsKey(d.Campaign), field, n)
				inc.add(dayKey(d.Campaign, day), field, n)
			}
			days[dayKey(d.Campaign, day)] = true
			b, _ := json.Marshal(attempt(&d))
			recent[d.Campaign] = append(recent[d.Campaign], string(b))
		case a.topics.Conversions:
			var c hookstreamv1.Conversion
			if err := proto.Unmarshal(r.Value, &c); err != nil {
				continue
			}
			field := fConvTest
			if c.Control {
				field = fConvCtrl
			}
			day := time.UnixMilli(c.TsMs).UTC().Format("2006-01-02")
			inc.add(totalsKey(c.Campaign), field, 1)
			inc.add(dayKey(c.Campaign, day), field, 1)
			days[dayKey(c.Campaign, day)] = true
		}
	}
	_, err := a.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for key, fields := range inc {
			for f, n := range fields {
				p.HIncrBy(ctx, key, f, n)
			}
		}
		for key := range days {
			p.Expire(ctx, key, (seriesDays+2)*24*time.Hour)
		}
		for c, entries := range recent {
			vals := make([]any, len(entries))
			for i, e := range entries {
				vals[i] = e
			}
			p.LPush(ctx, recentKey(c), vals...)
			p.LTrim(ctx, recentKey(c), 0, recentLimit-1)
		}
		p.HSet(ctx, offsetsKey, offsets)
		return nil
	})
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

// deliveryCounts says what one Delivery record adds. A trigger is counted
// once: by its suppression (other than a duplicate, which repeats a counted
// trigger) or by its first attempt. Counts are of profiles (users), so a
// batched request counts each of its profiles.
func deliveryCounts(d *hookstreamv1.Delivery) map[string]int64 {
	n := int64(len(d.Identities))
	if n == 0 {
		n = 1
	}
	out := map[string]int64{}
	first := d.Attempt <= 1 && !d.GetRequest().GetReplay()
	switch d.Status {
	case hookstreamv1.Delivery_STATUS_SUPPRESSED:
		reason := d.SuppressionReason
		if reason == "" {
			reason = "unknown"
		}
		out[suppressed+reason] = n
		if reason != "duplicate" {
			out[fTriggered] = n
		}
		return out
	case hookstreamv1.Delivery_STATUS_DELIVERED:
		out[fDelivered] = n
	case hookstreamv1.Delivery_STATUS_RETRYING:
		out[fRetries] = n
	case hookstreamv1.Delivery_STATUS_FAILED:
		out[fFailed] = n
	default:
		return out
	}
	if first {
		out[fTriggered] += n
		out[fSent] += n
	}
	return out
}

func attempt(d *hookstreamv1.Delivery) Attempt {
	return Attempt{
		WebhookID: d.WebhookId, Identities: d.Identities, Attempt: d.Attempt, Status: statusName(d.Status),
		HTTPStatus: d.HttpStatus, LatencyMs: float64(d.LatencyUs) / 1000, Error: d.Error, Reason: d.SuppressionReason,
		At: time.UnixMilli(d.TsMs).UTC().Format(time.RFC3339Nano),
	}
}

func statusName(s hookstreamv1.Delivery_Status) string {
	switch s {
	case hookstreamv1.Delivery_STATUS_DELIVERED:
		return "delivered"
	case hookstreamv1.Delivery_STATUS_RETRYING:
		return "retrying"
	case hookstreamv1.Delivery_STATUS_FAILED:
		return "failed"
	case hookstreamv1.Delivery_STATUS_SUPPRESSED:
		return "suppressed"
	}
	return "unknown"
}
