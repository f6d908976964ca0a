package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// Every metric family of docs/operations.md is on /metrics once the
// pipeline has done some work.
func TestDevMetricsFamilies(t *testing.T) {
	recv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer recv.Close()
	m := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: r}
spec: {url: %s/hook}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: inaction_within_time, action: {event: Added To Cart}, inaction: {event: Charged}, within: 1s}
  controlGroup: {percent: 0}
  goal: {event: Charged, within: 1h}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: capped}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Ping}}
  limits: {frequencyCap: {count: 1, per: 1h}}
  what: {payload: {profileVariables: [Identity]}}
`, recv.URL)
	d := startInProcessDev(t, m, process.Options{})
	ctx := context.Background()
	p, kafkaAddr := d.p, d.kafkaAddr
	cl, err := kafka.NewClient(kafkatest.Config(kafkaAddr), nilLogger(), "test-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i, v := range []string{
		`{"type":"event","identity":"u-1","name":"Added To Cart","id":"e-1"}`,
		`{"type":"event","identity":"u-1","name":"Ping","id":"e-2"}`,
		`{"type":"event","identity":"u-1","name":"Ping","id":"e-3"}`,
		`not json`,
	} {
		recs = append(recs, &kgo.Record{Topic: "hookstream.events.raw", Key: []byte("u-1"), Value: []byte(v), Offset: int64(i)})
	}
	if err := kafka.ProduceSync(ctx, cl, recs...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // the 1s timer fires and is delivered
	if err := kafka.ProduceSync(ctx, cl, &kgo.Record{Topic: "hookstream.events.raw", Key: []byte("u-1"), Value: []byte(`{"type":"event","identity":"u-1","name":"Charged","id":"e-4"}`)}); err != nil {
		t.Fatal(err)
	}
	families := []string{
		"hookstream_consumer_lag", "hookstream_consumer_records_total",
		"hookstream_ingest_accepted_total", "hookstream_ingest_rejected_total",
		"hookstream_evaluator_records_total", "hookstream_evaluator_restored_records_total",
		"hookstream_triggers_total", "hookstream_conversions_total",
		"hookstream_timers_pending", "hookstream_timers_fired_total", "hookstream_timer_fire_lateness_seconds",
		"hookstream_suppressed_total", "hookstream_delivery_attempts_total", "hookstream_delivery_latency_seconds",
		"hookstream_webhook_circuit_state", "hookstream_webhook_in_flight",
	}
	deadline := time.Now().Add(30 * time.Second)
	var missing []string
	for {
		resp, err := http.Get("http://" + p.Server.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, f := range families {
			if !strings.Contains(string(body), "\n# TYPE "+f+" ") {
				missing = append(missing, f)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %v", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
