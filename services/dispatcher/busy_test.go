package dispatcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// burst sends n triggers of campaign c, one user each (spread over the
// partitions).
func burst(e *env, c string, n int) {
	e.t.Helper()
	trs := make([]*hookstreamv1.Trigger, n)
	for i := range trs {
		trs[i] = trig(fmt.Sprintf("%s-%d", c, i), c, fmt.Sprintf("u-%d", i))
	}
	e.send(trs...)
}

// deliveredAll waits (up to two minutes) until every trigger of campaign c
// has a DELIVERED record.
func deliveredAll(e *env, c string, n int) {
	e.t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		delivered := map[string]bool{}
		for _, d := range e.of(c) {
			if d.Status == hookstreamv1.Delivery_STATUS_DELIVERED {
				delivered[d.WebhookId] = true
			}
		}
		if len(delivered) == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d triggers delivered", len(delivered), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A burst to a healthy endpoint that is longer than max_queue_wait is
// sent without any request handed to the timer as busy: polling waits for
// the endpoint instead (the records wait in Kafka). Handing them over
// costs more than sending them and made a loaded dispatcher slower still.
func TestBurstToFastEndpointIsNotHeld(t *testing.T) {
	r := newReceiver(t, 200)
	r.delay = 2 * time.Millisecond
	e := newEnv(t, redistest.Miniredis, envOptions{
		kafka:    func(k *kafka.Config) { k.FetchMaxRecords = 50 },
		manifest: webhookYAML("w", r.URL, "maxInFlight: 16") + campaignYAML("c", "w"),
	})
	// max_queue_wait (5s) is about 1500 requests at this receiver's pace
	// under the race detector, a poll 50.
	const n = 4000
	burst(e, "c", n)
	deliveredAll(e, "c", n)
	if held := e.timersFor("hold:"); len(held) != 0 {
		t.Fatalf("%d of %d requests to a fast endpoint handed to the timer, want none", len(held), n)
	}
}

// The excess of a slow endpoint goes to the timer (busy), scheduled one
// pace apart behind the requests handed over before it, so that it comes
// back when the endpoint has room rather than all at once, to be handed
// over again and again.
func TestSlowEndpointExcessIsHeldOnce(t *testing.T) {
	r := newReceiver(t, 200)
	r.delay = 50 * time.Millisecond
	e := newEnv(t, redistest.Miniredis, envOptions{
		cfg:      func(c *Config) { c.MaxQueueWait.Set("200ms") }, //nolint:errcheck // constant
		kafka:    func(k *kafka.Config) { k.FetchMaxRecords = 10 },
		manifest: webhookYAML("w", r.URL, "maxInFlight: 2") + campaignYAML("c", "w") + campaignYAML("warm", "w"),
	})
	// One request answered first, so that the endpoint's pace is known
	// when the burst comes: otherwise a fast poll loop can queue the whole
	// burst before the in-flight requests' age shows the endpoint slow,
	// and nothing is left to hand over.
	e.send(trig("warm", "warm", "u-warm"))
	e.waitRecords("warm", 1)
	const n = 200
	burst(e, "c", n)
	deliveredAll(e, "c", n)
	held := e.timersFor("hold:")
	t.Logf("%d busy holds for %d triggers", len(held), n)
	if len(held) == 0 {
		t.Fatalf("nothing handed to the timer: the endpoint was not slow enough for the test")
	}
	if len(held) > n {
		t.Fatalf("%d busy holds for %d triggers: requests went back to the timer again and again", len(held), n)
	}
	if got := len(r.requests()) - 1; got != n {
		t.Fatalf("the endpoint got %d requests for the burst, want %d", got, n)
	}
}
