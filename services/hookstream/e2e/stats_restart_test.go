package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// A campaign's counts survive a kill -9 of every service: four `serve`
// processes on one broker and a real redis-server; a round of events is
// sent, the round's service is killed while they are in flight and started
// again on its data, and the stats then count every user exactly once
// (triggered, sent, delivered), with nothing counted twice by a process
// that handled a record again after its restart (a killed dispatcher's
// in-flight deliveries are sent again when their leases expire, and some
// of them had already reached the receiver).
func TestStatsSurviveServiceRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("four processes killed and restarted in turn (make e2e runs it)")
	}
	kc := kafkatest.New(t)
	redis := redistest.StartReal(t)
	recv := newReceiver(t, 100*time.Millisecond) // deliveries in flight when the dispatcher is killed
	// A killed dispatcher's in-flight deliveries are sent again once their
	// leases expire (at least once): the shortest lease the configuration
	// allows (max_queue_wait 5s + max_timeout + 1m) keeps the test short.
	extra := []string{"-redis.addr=" + redis, "-dispatcher.allow-private-networks=true", "-log.level=info",
		"-dispatcher.max-timeout=5s", "-dispatcher.lease-ttl=75s"}
	dirs := map[string]string{}
	procs := map[string]*serveProcess{}
	start := func(target string) {
		if dirs[target] == "" {
			dirs[target] = t.TempDir() + "/" + target
		}
		procs[target] = startServeWith(t, target, kc.Addr(), dirs[target], "", extra...)
	}
	for _, target := range []string{"ingest", "evaluator", "timer", "dispatcher"} {
		start(target)
	}
	api := "http://" + procs["ingest"].http
	replicaApply(t, procs["ingest"].http, fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: recv}
spec: {url: %s/hook}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: race}
spec:
  webhook: recv
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Charged}}
  what: {payload: {profileVariables: [Identity]}}
`, recv.URL))

	cl, err := kafka.NewClient(kc.Config(), slog.New(slog.NewTextHandler(io.Discard, nil)), "stats-restart-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const perRound = 200
	total := 0
	for round, victim := range []string{"", "ingest", "evaluator", "timer", "dispatcher"} {
		recs := make([]*kgo.Record, perRound)
		for i := range recs {
			u := fmt.Sprintf("u-%d-%d", round, i)
			recs[i] = &kgo.Record{Topic: "hookstream.events.raw", Key: []byte(u),
				Value: []byte(fmt.Sprintf(`{"type":"event","identity":%q,"name":"Charged","id":"e-%d-%d"}`, u, round, i))}
		}
		if err := kafka.ProduceSync(context.Background(), cl, recs...); err != nil {
			t.Fatal(err)
		}
		if victim != "" {
			time.Sleep(time.Duration(round%3*25) * time.Millisecond) // somewhere in the round's processing
			procs[victim].kill()
			start(victim)
			if victim == "ingest" {
				api = "http://" + procs["ingest"].http
			}
		}
		total += perRound
		recv.waitFor(t, 150*time.Second, fmt.Sprintf("round %d (%s killed): %d users", round, victim, total), func() bool { return len(recv.ids()) >= total })
		want := int64(total)
		waitCounts(t, api, "race", func(s statsCounts) bool {
			return s.Triggered == want && s.Sent == want && s.Delivered == want && s.Failed == 0
		})
	}
	// Nothing arrives late to count a user twice.
	time.Sleep(3 * time.Second)
	s := readCounts(t, api, "race")
	if s.Triggered != int64(total) || s.Sent != int64(total) || s.Delivered != int64(total) {
		t.Fatalf("after every restart: triggered %d, sent %d, delivered %d; want %d each", s.Triggered, s.Sent, s.Delivered, total)
	}
}

type statsCounts struct {
	Triggered, Sent, Delivered, Failed int64
}

func readCounts(t *testing.T, api, campaign string) statsCounts {
	t.Helper()
	resp, err := http.Get(api + "/v1/campaigns/" + campaign + "/stats")
	if err != nil {
		return statsCounts{Triggered: -1}
	}
	defer resp.Body.Close()
	var s statsCounts
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return statsCounts{Triggered: -1}
	}
	return s
}

func waitCounts(t *testing.T, api, campaign string, ok func(statsCounts) bool) {
	t.Helper()
	var last statsCounts
	for deadline := time.Now().Add(150 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if last = readCounts(t, api, campaign); ok(last) {
			return
		}
	}
	t.Fatalf("stats of %s never matched: %+v", campaign, last)
}
