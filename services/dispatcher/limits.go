package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// Redis keys of the limits. Per campaign: the users it has reached
// (who.maxUsers), a counter per UTC day (limits.maxPerDay), a sorted set
// per user of the send times in the frequency window (limits.frequencyCap)
// and the throttle's GCRA state (limits.throttle); per webhook: the rate
// limit's GCRA state (rateLimit.perSecond) and the disabled flag.
func usersKey(campaign string) string { return "hookstream:campaign:" + campaign + ":users" }
func dayKey(campaign string, now time.Time) string {
	return "hookstream:campaign:" + campaign + ":day:" + now.UTC().Format("20060102")
}
func freqKey(campaign, identity string) string {
	return "hookstream:campaign:" + campaign + ":freq:" + identity
}
func throttleKey(campaign string) string { return "hookstream:campaign:" + campaign + ":throttle" }
func rateKey(webhook string) string      { return "hookstream:webhook:" + webhook + ":rate" }

// disabledKey is a hash: webhook name → the generation that answered 410.
const disabledKey = "hookstream:webhooks:disabled"

// gcra is the Generic Cell Rate Algorithm with a burst of one: a key holds
// the theoretical arrival time (TAT, Unix microseconds) of the next request.
// A request arriving at t may go at max(t, TAT); the TAT then moves one
// emission interval on. Reserving a future slot instead of refusing lets a
// throttled delivery be scheduled for exactly its turn; several dispatchers
// share the key, so the limit holds across them.
const gcraLua = `
local function gcra_at(key, t)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < t then return t end
  return tat
end
local function gcra_set(key, tat, now)
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 60000)
end
`

// leaseLua leases a dedupe key for one call of a script, identified by its
// token (leaseTokens: unique per polled record and process). The key holds
// the token and the answer the call gave, so that when Redis ran the call
// but its reply was lost and go-redis resent it, the resent call gives the
// same answer and charges nothing again, instead of finding the lease
// taken ("leased") and stalling the trigger for the lease's TTL.
//
// lease returns nil when the key is free (or holds the token alone: the
// plain SET NX GET lease of the same call); otherwise the answer to give:
// duplicate (done), the answer recorded by this call, or leased (another
// call holds it; the value is its remaining ms). answer takes the lease
// for ms, recording the answer, and returns it.
const leaseLua = `
local function lease(key, tok)
  local cur = redis.call('GET', key)
  if not cur or cur == tok then return nil end
  if cur == 'done' then return {'duplicate', 0} end
  if string.sub(cur, 1, #tok + 1) == tok .. ' ' then
    local out, v = string.match(string.sub(cur, #tok + 2), '^(%S+) (%-?%d+)$')
    if out then return {out, tonumber(v)} end
  end
  return {'leased', redis.call('PTTL', key)}
end
local function answer(key, tok, ms, out, v)
  redis.call('SET', key, tok .. ' ' .. out .. ' ' .. string.format('%.0f', v), 'PX', ms)
  return {out, v}
end
`

// admitLua runs the per-trigger checks in the contract's order, in one
// round trip: lease the trigger id (duplicate or leased elsewhere ends
// here), control, who.maxUsers, limits.maxPerDay, the frequency cap (an
// exact sliding window: a sorted set of send times), quiet hours (decided
// by the caller, who knows the user's time zone), then the campaign
// throttle and the webhook rate limit. Nothing is charged unless the
// trigger passes every check, so a suppressed trigger never uses up a cap.
//
// KEYS: dedupe, users, day, freq, throttle, rate
// ARGV: leaseMs, control, identity, maxUsers, maxPerDay, dayTtlMs,
// freqCount, freqWindowUs, nowUs, member, quiet (0 no, 1 delay, 2 discard),
// throttleIntervalUs, rateIntervalUs, throttleMaxDelayUs, token
//
// Returns {outcome, value}: ok (value: the time the request may go, Unix
// µs), quiet (charged; the caller delays it), duplicate, leased (value: the
// lease's remaining ms), control, max_users, max_per_day, frequency_cap,
// quiet_hours, throttled.
var admitScript = redis.NewScript(gcraLua + leaseLua + `
local now = tonumber(ARGV[9])
local tok, ms = ARGV[15], ARGV[1]
local held = lease(KEYS[1], tok)
if held then return held end
if ARGV[2] == '1' then return answer(KEYS[1], tok, ms, 'control', 0) end
local maxUsers = tonumber(ARGV[4])
local newUser = false
if maxUsers > 0 and redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 0 then
  if redis.call('SCARD', KEYS[2]) >= maxUsers then return answer(KEYS[1], tok, ms, 'max_users', 0) end
  newUser = true
end
local maxPerDay = tonumber(ARGV[5])
if maxPerDay > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= maxPerDay then return answer(KEYS[1], tok, ms, 'max_per_day', 0) end
local freqCount = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
if freqCount > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - window)
  if redis.call('ZCARD', KEYS[4]) >= freqCount then return answer(KEYS[1], tok, ms, 'frequency_cap', 0) end
end
if ARGV[11] == '2' then return answer(KEYS[1], tok, ms, 'quiet_hours', 0) end
local at = now
local thr, rate
if ARGV[11] == '0' then
  local ti = tonumber(ARGV[12])
  if ti > 0 then
    at = gcra_at(KEYS[5], now)
    if at - now > tonumber(ARGV[14]) then return answer(KEYS[1], tok, ms, 'throttled', at) end
    thr = at + ti
  end
  local ri = tonumber(ARGV[13])
  if ri > 0 then
    at = gcra_at(KEYS[6], at)
    rate = at + ri
  end
end
if newUser then redis.call('SADD', KEYS[2], ARGV[3]) end
if maxPerDay > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
end
if freqCount > 0 then
  redis.call('ZADD', KEYS[4], now, ARGV[10])
  redis.call('PEXPIRE', KEYS[4], math.floor(window / 1000) + 60000)
end
if thr then gcra_set(KEYS[5], thr, now) end
if rate then gcra_set(KEYS[6], rate, now) end
if ARGV[11] == '1' then return answer(KEYS[1], tok, ms, 'quiet', 0) end
return answer(KEYS[1], tok, ms, 'ok', at)
`)

// claimLua is the check of a request fired by the timer service (a retry
// or a delayed delivery) or of a batch: lease its dedupe key (empty: none),
// then reserve the campaign throttle and the webhook rate limit (empty
// keys: none) from notBefore on.
//
// KEYS: dedupe, throttle, rate
// ARGV: leaseMs, nowUs, throttleIntervalUs, rateIntervalUs,
// throttleMaxDelayUs, notBeforeUs, token
var claimScript = redis.NewScript(gcraLua + leaseLua + `
local now = tonumber(ARGV[2])
local key, tok, ms = KEYS[1], ARGV[7], ARGV[1]
if key ~= '' then
  local held = lease(key, tok)
  if held then return held end
end
local function give(out, v)
  if key == '' then return {out, v} end
  return answer(key, tok, ms, out, v)
end
local at = math.max(now, tonumber(ARGV[6]))
local thr, rate
local ti = tonumber(ARGV[3])
if KEYS[2] ~= '' and ti > 0 then
  at = gcra_at(KEYS[2], at)
  if at - now > tonumber(ARGV[5]) then return give('throttled', at) end
  thr = at + ti
end
local ri = tonumber(ARGV[4])
if KEYS[3] ~= '' and ri > 0 then
  at = gcra_at(KEYS[3], at)
  rate = at + ri
end
if thr then gcra_set(KEYS[2], thr, now) end
if rate then gcra_set(KEYS[3], rate, now) end
return give('ok', at)
`)

// verdict is a script's answer.
type verdict struct {
	outcome string
	// at is when the request may go (ok, throttled).
	at time.Time
	// wait is the remaining lease (leased).
	wait time.Duration
}

func parseVerdict(cmd *redis.Cmd) (verdict, error) {
	vals, err := cmd.Slice()
	if err != nil {
		return verdict{}, err
	}
	if len(vals) != 2 {
		return verdict{}, fmt.Errorf("unexpected script answer %v", vals)
	}
	out, _ := vals[0].(string)
	n, _ := vals[1].(int64)
	v := verdict{outcome: out}
	switch out {
	case "ok", "throttled":
		v.at = time.UnixMicro(n)
	case "leased":
		v.wait = time.Duration(n) * time.Millisecond
	}
	return v, nil
}

// intervalUs is the GCRA emission interval for n per period, in µs,
// rounded up so that the limit is never exceeded; 0 means no limit.
func intervalUs(n float64, period time.Duration) int64 {
	if n <= 0 {
		return 0
	}
	return int64(math.Ceil(float64(period.Microseconds()) / n))
}

func throttleInterval(c *manifest.Campaign) int64 {
	if l := c.Spec.Limits; l != nil && l.Throttle != nil {
		return intervalUs(float64(l.Throttle.PerMinute), time.Minute)
	}
	return 0
}

func rateInterval(wh *manifest.Webhook) int64 {
	if wh != nil && wh.Spec.RateLimit != nil {
		return intervalUs(wh.Spec.RateLimit.PerSecond, time.Second)
	}
	return 0
}

// loadScripts loads the scripts so that pipelines can use EVALSHA.
func loadScripts(ctx context.Context, rdb *redis.Client) error {
	for _, s := range []*redis.Script{admitScript, claimScript} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("load redis script: %w", err)
		}
	}
	return nil
}

// isNoScript reports a script cache miss (Redis restarted or flushed).
func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}

// runPipeline builds and executes a pipeline. When Redis has lost the
// scripts (restarted or flushed), it loads them and runs it again (the
// commands are safe to repeat: leases carry their call's token). A
// connection error, or scripts still missing after the reload, is returned
// (the caller retries); an error reply to one command (a script error) is
// left on that command for the caller.
//
// Every command's error is looked at for NOSCRIPT, not only the first
// error Exec reports: a nil reply earlier in the pipeline (a SET NX GET
// that took a free key) would hide the NOSCRIPT of the scripts behind it,
// and those deliveries would fail.
func runPipeline(ctx context.Context, rdb *redis.Client, build func(redis.Pipeliner)) ([]redis.Cmder, error) {
	for attempt := 0; ; attempt++ {
		pipe := rdb.Pipeline()
		build(pipe)
		cmds, err := pipe.Exec(ctx)
		var noScript error
		for _, c := range cmds {
			if isNoScript(c.Err()) {
				noScript = c.Err()
				break
			}
		}
		if noScript != nil {
			if attempt == 0 {
				if lerr := loadScripts(ctx, rdb); lerr != nil {
					return nil, lerr
				}
				continue
			}
			return cmds, fmt.Errorf("scripts missing after loading them: %w", noScript)
		}
		if err == nil || errors.Is(err, redis.Nil) {
			return cmds, nil
		}
		var reply redis.Error
		if errors.As(err, &reply) {
			return cmds, nil
		}
		return cmds, err
	}
}
