package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	"github.com/hookstream/hookstream/pkg/stats"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// What the dispatcher writes for a delivery that fails, is replayed and
// fails again, then is replayed and delivered, read by the stats
// aggregator as a campaign owner reads it: one trigger, one send, every
// failed attempt a retry, and in the end delivered, not failed.
func TestReplayStats(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			rcv := newReceiver(t, 500)
			e := newEnv(t, b, envOptions{manifest: webhookYAML("w", rcv.URL, "") + campaignYAML("fails", "w")}) // schedule [10s, 20s]
			startService(t, stats.NewAggregator(e.kcfg, e.rdb, testLogger()).Service())
			r := &stats.Reader{RDB: e.rdb}
			type counts struct{ triggered, sent, delivered, failed, retries int64 }
			waitCounts := func(what string, want counts) {
				t.Helper()
				var got counts
				deadline := time.Now().Add(30 * time.Second)
				for {
					s, err := r.Get(context.Background(), "fails")
					if err != nil {
						t.Fatal(err)
					}
					if got = (counts{s.Triggered, s.Sent, s.Delivered, s.Failed, s.Retries}); got == want {
						return
					}
					if time.Now().After(deadline) {
						b, _ := json.Marshal(s)
						t.Fatalf("%s: stats %+v, want %+v (%s)", what, got, want, b)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			// failAll lets the attempts from the n-th record on run out
			// the schedule: RETRYING, RETRYING, FAILED.
			failAll := func(n int) {
				t.Helper()
				e.waitRecords("fails", n+1)
				e.clock.Advance(12 * time.Second)
				e.waitRecords("fails", n+2)
				e.clock.Advance(25 * time.Second)
				e.waitRecords("fails", n+3)
			}
			replay := func() {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if res, err := Replay(ctx, e.kcfg, testLogger(), ReplayOptions{Campaign: "fails"}); err != nil || res.Replayed != 1 {
					t.Fatalf("replay: %+v %v", res, err)
				}
			}

			e.send(trig("x1", "fails", "u-1"))
			failAll(0)
			waitCounts("failed", counts{triggered: 1, sent: 1, failed: 1, retries: 2})

			replay()
			failAll(3)
			waitCounts("replayed and failed again", counts{triggered: 1, sent: 1, failed: 1, retries: 4})

			rcv.set(200, nil)
			e.eventually("the second failure on the DLQ", func() bool { return len(e.dlqOf("fails")) == 2 })
			replay()
			// Six failures in a row opened the webhook's circuit: the
			// replay is held until its cooldown has passed.
			for i := 0; len(e.of("fails")) < 7 && i < 100; i++ {
				e.clock.Advance(30 * time.Second)
				time.Sleep(100 * time.Millisecond)
			}
			recs := e.waitRecords("fails", 7)
			waitCounts("replayed and delivered", counts{triggered: 1, sent: 1, delivered: 1, retries: 4})

			// The records say which attempts are a replay's, and which
			// replay: each has its own first attempt time.
			var got []string
			for _, d := range recs {
				got = append(got, fmt.Sprintf("%d%s%v", d.Attempt, status(d)[:1], d.Replay))
			}
			if want := "[1Rfalse 2Rfalse 3Ffalse 1Rtrue 2Rtrue 3Ftrue 1Dtrue]"; fmt.Sprint(got) != want {
				t.Errorf("deliveries (attempt, status, replay) %v, want %s", got, want)
			}
			runs := map[int64]bool{}
			for _, i := range []int{0, 3, 6} {
				if recs[i].FirstAttemptMs == 0 || runs[recs[i].FirstAttemptMs] {
					t.Errorf("record %d: first attempt %d, want one of its own", i, recs[i].FirstAttemptMs)
				}
				runs[recs[i].FirstAttemptMs] = true
				for j := i + 1; j < i+3 && j < len(recs); j++ {
					if recs[j].FirstAttemptMs != recs[i].FirstAttemptMs {
						t.Errorf("record %d: first attempt %d, want its run's %d", j, recs[j].FirstAttemptMs, recs[i].FirstAttemptMs)
					}
				}
			}
			if recs[6].Status != hookstreamv1.Delivery_STATUS_DELIVERED {
				t.Errorf("last: %s", status(recs[6]))
			}
		})
	}
}
