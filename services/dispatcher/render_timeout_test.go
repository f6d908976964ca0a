package dispatcher

import (
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// A render past its time limit is retried on the webhook's schedule, not
// failed at once: the limit is on the wall clock, which a starved CPU
// spends too (TestChaos lost a webhook to the DLQ that way). The last
// attempt still fails to the DLQ, and nothing is sent meanwhile.
func TestRenderTimeoutIsRetried(t *testing.T) {
	r := newReceiver(t, 200)
	e := newEnv(t, redistest.Miniredis, envOptions{
		cfg:      func(c *Config) { c.RenderTimeout.Set("1ns") }, //nolint:errcheck // constant
		manifest: webhookYAML("w", r.URL, "") + campaignYAML("slow", "w", `what: {payload: {body: '{"user": {{ profile.Email | json }}}'}}`),
	})
	e.send(trig("rt-1", "slow", "u-1"))
	first := e.waitRecords("slow", 1)[0]
	if first.Status != hookstreamv1.Delivery_STATUS_RETRYING || !strings.Contains(first.Error, "rendering took longer") {
		t.Fatalf("first attempt: %s %q, want RETRYING with the render timeout\n%s", first.Status, first.Error, e.dump())
	}
	e.clock.Advance(11 * time.Second) // the schedule is [10s, 20s]
	e.waitRecords("slow", 2)
	e.clock.Advance(21 * time.Second)
	ds := e.waitRecords("slow", 3)
	if last := ds[2]; last.Status != hookstreamv1.Delivery_STATUS_FAILED || last.Attempt != 3 {
		t.Fatalf("last attempt: %s attempt %d, want FAILED attempt 3\n%s", last.Status, last.Attempt, e.dump())
	}
	e.eventually("the request on the DLQ", func() bool { return len(e.dlqOf("slow")) == 1 })
	if n := len(r.requests()); n != 0 {
		t.Fatalf("%d requests sent, want none", n)
	}
}
