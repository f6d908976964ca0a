// Package stats keeps live campaign statistics (CONTRACT.md section 5) from
// the deliveries and conversions topics, in Redis, and serves them.
//
// Each consumed batch's counters, per-day series, recent attempts and the
// consumed offsets are written by Lua scripts, each atomically (a large
// batch in parts, each with the offsets it reached); at assignment
// the consumer resumes from the offsets stored in Redis, or from the start
// of the topics when Redis has none. Counts survive restarts of every
// service, and a Redis that lost its data is rebuilt from the topics (as far
// as their retention reaches).
//
// Counting is exactly once also when a producer emits a record twice (the
// dispatcher after a crash re-sends an attempt and writes its outcome
// again; the evaluator re-emits a conversion): the script counts a record
// only if its key, SET NX for dedupeTTL, is new. A delivery's key is its
// webhook-id and attempt (a suppression's also its reason, a replay's also
// its first attempt's time); a conversion's is its deterministic id. The
// first copy read is the one counted, also when a re-sent attempt ended
// otherwise.
//
// A replay (hookstream replay) is the same trigger sent again, so it adds
// no trigger and no send; its failed attempts add to retries. When it ends
// delivered, its users move from failed to delivered (failed -n,
// delivered +n), and a delivery held because its webhook was disabled
// moves from suppressed.webhook_disabled to sent and delivered (or to sent
// and failed, when the replay fails). A replay that fails again, or of a
// delivery already delivered, changes no count. These moves are made on
// the day of the original outcome, so that no day goes negative; they need
// the original's outcome, kept for dedupeTTL, so that a replay of an older
// delivery changes no count.
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
	// dedupeTTL is how long a record's dedupe key and a delivery's final
	// outcome are kept: longer than the topics' default retention of 7
	// days, so that no record the aggregator can read again outlives its
	// key.
	dedupeTTL = 8 * 24 * time.Hour
)

func totalsKey(campaign string) string { return keyPrefix + "{" + campaign + "}" }

// dayKey must stay totalsKey + ":day:" + day: the script builds it so.
func dayKey(campaign, day string) string {
	return keyPrefix + "{" + campaign + "}:day:" + day
}
func recentKey(campaign string) string { return keyPrefix + "{" + campaign + "}:recent" }
func seenKey(campaign, id string) string {
	return keyPrefix + "{" + campaign + "}:seen:" + id
}
func outcomeKey(campaign, webhookID string) string {
	return keyPrefix + "{" + campaign + "}:outcome:" + webhookID
}

// Counter fields of a campaign's hash. The script spells the ones a
// replay moves (failed, delivered, sent, suppressed:webhook_disabled).
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

// The final outcomes a replay can change, kept under outcomeKey.
const (
	outcomeFailed = "failed" // failed for good, on the DLQ
	outcomeHeld   = "held"   // suppressed because the webhook is disabled, on the DLQ
)

// reasonWebhookDisabled is the suppression of a delivery kept on the DLQ
// (the dispatcher's reason for a webhook disabled by 410 Gone).
const reasonWebhookDisabled = "webhook_disabled"

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
	// Replay is set on the attempts of a delivery sent again by
	// hookstream replay.
	Replay bool   `json:"replay,omitempty"`
	At     string `json:"at"`
}

// countScript applies one batch: each record whose dedupe key is new adds
// its counters (to the totals and its day), records its final outcome,
// makes its replay's move and joins the recent attempts; then the offsets
// are stored. A final outcome is kept as "OUTCOME DATE USERS", so that a
// replay moves as many users as were counted, on the day they were. Being one script, the batch is applied whole or not at all.
//
// KEYS[1] is the offsets hash, then five keys per record: its dedupe key,
// the campaign's totals, its day, its recent list and its outcome key.
// ARGV: the dedupe TTL (ms), the day TTL (s), the recent limit, the number
// of records; then per record its date, its recent entry ("" for none), its
// final outcome ("failed", "held" or ""), its replay's status
// ("delivered", "failed" or "" when it is not a replay's final outcome),
// its number of users, its number of counter pairs and the pairs; then the
// offsets as field/value pairs.
var countScript = redis.NewScript(`
local ttl, dayTTL, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- Increments and recent entries are summed up and written once per key at
-- the end: a batch's records mostly share a few keys.
local inc, incKeys, days, recent, recentKeys = {}, {}, {}, {}, {}
local function add(key, f, n)
  local h = inc[key]
  if not h then
    h = {}
    inc[key] = h
    incKeys[#incKeys + 1] = key
  end
  h[f] = (h[f] or 0) + n
end
local function move(totals, date, moves)
  local day = totals .. ':day:' .. date
  local live = inc[day] ~= nil or redis.call('EXISTS', day) == 1
  for f, n in pairs(moves) do
    add(totals, f, n)
    if live then add(day, f, n) end
  end
end
local a = 5
for r = 0, tonumber(ARGV[4]) - 1 do
  local k = 1 + r * 5
  local seen, totals, day, list, outcome = KEYS[k+1], KEYS[k+2], KEYS[k+3], KEYS[k+4], KEYS[k+5]
  local date, entry, final, replay = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3]
  local n, nf = tonumber(ARGV[a+4]), tonumber(ARGV[a+5])
  local p = a + 6
  a = p + 2 * nf
  if redis.call('SET', seen, '1', 'NX', 'PX', ttl) then
    for i = p, a - 1, 2 do
      add(totals, ARGV[i], tonumber(ARGV[i+1]))
      add(day, ARGV[i], tonumber(ARGV[i+1]))
      days[day] = true
    end
    if final ~= '' then redis.call('SET', outcome, final .. ' ' .. date .. ' ' .. n, 'PX', ttl) end
    if replay ~= '' then
      local was = redis.call('GET', outcome)
      if was then
        local state, odate, on = string.match(was, '^(%S+) (%S+) (%d+)$')
        n = tonumber(on)
        local now = nil
        if state == 'failed' and replay == 'delivered' then
          move(totals, odate, {failed = -n, delivered = n})
          now = 'delivered'
        elseif state == 'held' and replay == 'delivered' then
          move(totals, odate, {['suppressed:webhook_disabled'] = -n, sent = n, delivered = n})
          now = 'delivered'
        elseif state == 'held' and replay == 'failed' then
          move(totals, odate, {['suppressed:webhook_disabled'] = -n, sent = n, failed = n})
          now = 'failed'
        end
        if now then redis.call('SET', outcome, now .. ' ' .. odate .. ' ' .. on, 'PX', ttl) end
      end
    end
    if entry ~= '' then
      if not recent[list] then
        recent[list] = {}
        recentKeys[#recentKeys + 1] = list
      end
      table.insert(recent[list], entry)
    end
  end
end
for _, key in ipairs(incKeys) do
  for f, n in pairs(inc[key]) do
    if n ~= 0 then redis.call('HINCRBY', key, f, n) end
  end
end
for day in pairs(days) do redis.call('EXPIRE', day, dayTTL) end
for _, list in ipairs(recentKeys) do
  redis.call('LPUSH', list, unpack(recent[list]))
  redis.call('LTRIM', list, 0, limit - 1)
end
if a <= #ARGV then redis.call('HSET', KEYS[1], unpack(ARGV, a, #ARGV)) end
return 0
`)

// batch collects the script's keys and arguments.
type batch struct {
	keys []string
	recs []any
	n    int
}

func (b *batch) add(campaign, seen, webhookID, date, entry, final, replay string, users int64, counts map[string]int64) {
	b.keys = append(b.keys, seenKey(campaign, seen), totalsKey(campaign), dayKey(campaign, date), recentKey(campaign), outcomeKey(campaign, webhookID))
	b.recs = append(b.recs, date, entry, final, replay, users, len(counts))
	for f, n := range counts {
		b.recs = append(b.recs, f, n)
	}
	b.n++
}

// scriptRecords bounds the records of one script call, so that a large
// poll does not hold Redis (which the dispatcher shares) for long; each
// call stores the offsets it has reached.
const scriptRecords = 256

func (a *Aggregator) handle(ctx context.Context, recs []*kgo.Record) error {
	var b batch
	offsets := map[string]string{}
	for _, r := range recs {
		offsets[r.Topic+"/"+strconv.Itoa(int(r.Partition))] = strconv.FormatInt(r.Offset+1, 10)
		switch r.Topic {
		case a.topics.Deliveries:
			var d hookstreamv1.Delivery
			if err := proto.Unmarshal(r.Value, &d); err != nil || d.IsTest {
				continue
			}
			c := countDelivery(&d)
			entry, _ := json.Marshal(attempt(&d))
			b.add(d.Campaign, c.seen, d.WebhookId, day(d.TsMs), string(entry), c.final, c.replay, c.users, c.counts)
		case a.topics.Conversions:
			var c hookstreamv1.Conversion
			if err := proto.Unmarshal(r.Value, &c); err != nil {
				continue
			}
			field := fConvTest
			if c.Control {
				field = fConvCtrl
			}
			// A conversion without an id (none is written so) cannot be
			// told from a re-emit; its offset keeps it from being lost.
			seen := "conversion:" + c.Id
			if c.Id == "" {
				seen = "conversion-at:" + r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
			}
			b.add(c.Campaign, seen, "", day(c.TsMs), "", "", "", 1, map[string]int64{field: 1})
		}
		if b.n >= scriptRecords {
			if err := a.apply(ctx, &b, offsets); err != nil {
				return err
			}
		}
	}
	return a.apply(ctx, &b, offsets)
}

// apply runs the script on b's records with offsets, and empties b.
func (a *Aggregator) apply(ctx context.Context, b *batch, offsets map[string]string) error {
	keys := append([]string{offsetsKey}, b.keys...)
	args := append([]any{dedupeTTL.Milliseconds(), int64((seriesDays + 2) * 24 * time.Hour / time.Second), recentLimit, b.n}, b.recs...)
	for k, v := range offsets {
		args = append(args, k, v)
	}
	*b = batch{}
	if err := countScript.Run(ctx, a.rdb, keys, args...).Err(); err != nil && err != redis.Nil {
		return fmt.Errorf("stats: %w", err)
	}
	return nil
}

func day(tsMs int64) string { return time.UnixMilli(tsMs).UTC().Format("2006-01-02") }

// deliveryCount is what one Delivery record does to the stats.
type deliveryCount struct {
	seen   string           // its dedupe key's id
	users  int64            // the profiles it counts
	counts map[string]int64 // counters it adds
	final  string           // the outcome a replay may change, or ""
	replay string           // a replay's final status, or ""
}

// countDelivery says what one Delivery record adds. A trigger is counted
// once: by its suppression (other than a duplicate, which repeats a counted
// trigger) or by its first attempt. Counts are of profiles (users), so a
// batched request counts each of its profiles. A replay adds only its
// retries; its final status is the move the script makes (see the package
// comment).
func countDelivery(d *hookstreamv1.Delivery) deliveryCount {
	n := int64(len(d.Identities))
	if n == 0 {
		n = 1
	}
	att := strconv.Itoa(int(d.Attempt))
	c := deliveryCount{seen: "delivery:" + d.WebhookId + ":" + att, users: n, counts: map[string]int64{}}
	if d.Replay {
		// A replay's attempts restart at 1; its first attempt's time tells
		// one replay from the next.
		c.seen = "replay:" + d.WebhookId + ":" + strconv.FormatInt(d.FirstAttemptMs, 10) + ":" + att
		switch d.Status {
		case hookstreamv1.Delivery_STATUS_RETRYING:
			c.counts[fRetries] = n
		case hookstreamv1.Delivery_STATUS_DELIVERED:
			c.replay = "delivered"
		case hookstreamv1.Delivery_STATUS_FAILED:
			c.replay = "failed"
		}
		if d.Status == hookstreamv1.Delivery_STATUS_SUPPRESSED {
			c.seen += ":" + d.SuppressionReason
		}
		return c
	}
	switch d.Status {
	case hookstreamv1.Delivery_STATUS_SUPPRESSED:
		reason := d.SuppressionReason
		if reason == "" {
			reason = "unknown"
		}
		// A trigger's suppression and its attempts share the attempt
		// number, and a duplicate shares the original's webhook-id.
		c.seen += ":suppressed:" + reason
		c.counts[suppressed+reason] = n
		if reason != "duplicate" {
			c.counts[fTriggered] = n
		}
		if reason == reasonWebhookDisabled {
			c.final = outcomeHeld
		}
		return c
	case hookstreamv1.Delivery_STATUS_DELIVERED:
		c.counts[fDelivered] = n
	case hookstreamv1.Delivery_STATUS_RETRYING:
		c.counts[fRetries] = n
	case hookstreamv1.Delivery_STATUS_FAILED:
		c.counts[fFailed] = n
		c.final = outcomeFailed
	default:
		return c
	}
	if d.Attempt <= 1 {
		c.counts[fTriggered] += n
		c.counts[fSent] += n
	}
	return c
}

func attempt(d *hookstreamv1.Delivery) Attempt {
	return Attempt{
		WebhookID: d.WebhookId, Identities: d.Identities, Attempt: d.Attempt, Status: statusName(d.Status),
		HTTPStatus: d.HttpStatus, LatencyMs: float64(d.LatencyUs) / 1000, Error: d.Error, Reason: d.SuppressionReason,
		Replay: d.Replay, At: time.UnixMilli(d.TsMs).UTC().Format(time.RFC3339Nano),
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
