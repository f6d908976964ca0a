package stats

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func deliveries() []*hookstreamv1.Delivery {
	d := func(id string, users []string, attempt int32, st hookstreamv1.Delivery_Status, reason string) *hookstreamv1.Delivery {
		return &hookstreamv1.Delivery{WebhookId: id, Campaign: "cart", Identities: users, Attempt: attempt, Status: st, SuppressionReason: reason, TsMs: now.UnixMilli(), HttpStatus: 200}
	}
	S := hookstreamv1.Delivery_STATUS_SUPPRESSED
	return []*hookstreamv1.Delivery{
		d("t1", []string{"u1"}, 1, hookstreamv1.Delivery_STATUS_DELIVERED, ""),
		d("t2", []string{"u2", "u3", "u4"}, 1, hookstreamv1.Delivery_STATUS_DELIVERED, ""), // a batch of 3 profiles
		d("t5", []string{"u5"}, 1, hookstreamv1.Delivery_STATUS_RETRYING, ""),
		d("t5", []string{"u5"}, 2, hookstreamv1.Delivery_STATUS_RETRYING, ""),
		d("t5", []string{"u5"}, 3, hookstreamv1.Delivery_STATUS_FAILED, ""),
		d("t6", []string{"u6"}, 1, hookstreamv1.Delivery_STATUS_RETRYING, ""),
		d("t6", []string{"u6"}, 2, hookstreamv1.Delivery_STATUS_DELIVERED, ""),
		d("t7", []string{"u7"}, 0, S, "control"),
		d("t8", []string{"u8"}, 0, S, "frequency_cap"),
		d("t1", []string{"u1"}, 0, S, "duplicate"),
		{WebhookId: "x", Campaign: "cart", Identities: []string{"tester"}, Attempt: 1, Status: hookstreamv1.Delivery_STATUS_DELIVERED, IsTest: true, TsMs: now.UnixMilli()},
	}
}

func produce(t *testing.T, cl *kgo.Client, cfg kafka.Config) {
	var recs []*kgo.Record
	for _, d := range deliveries() {
		v, _ := proto.Marshal(d)
		recs = append(recs, &kgo.Record{Topic: cfg.Topics().Deliveries, Key: []byte(d.Campaign), Value: v})
	}
	for _, c := range []*hookstreamv1.Conversion{{Id: "c1", Campaign: "cart", Identity: "u1", TsMs: now.UnixMilli()}, {Id: "c2", Campaign: "cart", Identity: "u7", Control: true, TsMs: now.UnixMilli()}} {
		v, _ := proto.Marshal(c)
		recs = append(recs, &kgo.Record{Topic: cfg.Topics().Conversions, Key: []byte(c.Campaign), Value: v})
	}
	if err := kafka.ProduceSync(context.Background(), cl, recs...); err != nil {
		t.Fatal(err)
	}
}

func runAggregator(t *testing.T, cfg kafka.Config, addr string) (stop func()) {
	rdb := redisconn.Open(redisconn.Config{Addr: addr})
	svc := NewAggregator(cfg, rdb, slog.New(slog.NewTextHandler(io.Discard, nil))).Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := svc.AwaitRunning(context.Background()); err != nil {
		t.Fatal(err)
	}
	return func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()); rdb.Close() }
}

func waitStats(t *testing.T, r *Reader, want func(*Stats) bool) *Stats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := r.Get(context.Background(), "cart")
		if err != nil {
			t.Fatal(err)
		}
		if want(s) {
			return s
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(s)
			t.Fatalf("stats never reached the expected state: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func check(t *testing.T, s *Stats) {
	t.Helper()
	// Triggers: t1, t2 (3 users), t5, t6, t7 (control), t8 (capped) = 8
	// users; the duplicate of t1 is not a new trigger; the test send is
	// not counted.
	if s.Triggered != 8 || s.Sent != 6 || s.Delivered != 5 || s.Failed != 1 || s.Retries != 3 {
		t.Fatalf("counts %+v", s)
	}
	if s.Suppressed["control"] != 1 || s.Suppressed["frequency_cap"] != 1 || s.Suppressed["duplicate"] != 1 || s.Suppressed["max_users"] != 0 {
		t.Fatalf("suppressed %v", s.Suppressed)
	}
	if s.Conversions["test"] != 1 || s.Conversions["control"] != 1 || s.ConversionRate["test"] != 0.167 || s.ConversionRate["control"] != 1 {
		t.Fatalf("conversions %v rates %v", s.Conversions, s.ConversionRate)
	}
	today := s.Days[len(s.Days)-1]
	if len(s.Days) != 30 || today.Date != "2026-11-27" || today.Delivered != 5 {
		t.Fatalf("series: %d days, last %+v", len(s.Days), today)
	}
}

func TestStats(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			kc := kafkatest.New(t)
			cfg := kc.Config()
			cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "t")
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := kafka.EnsureTopics(context.Background(), cl, -1, cfg.TopicSpecs()); err != nil {
				t.Fatal(err)
			}
			produce(t, cl, cfg)
			addr := redistest.Start(t, b)
			stop := runAggregator(t, cfg, addr)
			r := &Reader{RDB: redisconn.Open(redisconn.Config{Addr: addr}), Now: func() time.Time { return now }}
			check(t, waitStats(t, r, func(s *Stats) bool { return s.Delivered == 5 && s.Conversions["control"] == 1 }))

			// A restart counts nothing twice.
			stop()
			stop = runAggregator(t, cfg, addr)
			time.Sleep(time.Second)
			check(t, waitStats(t, r, func(s *Stats) bool { return true }))
			stop()

			// A Redis that lost everything is rebuilt from the topics.
			fresh := redistest.Start(t, b)
			stop = runAggregator(t, cfg, fresh)
			defer stop()
			r2 := &Reader{RDB: redisconn.Open(redisconn.Config{Addr: fresh}), Now: func() time.Time { return now }}
			check(t, waitStats(t, r2, func(s *Stats) bool { return s.Delivered == 5 && s.Conversions["control"] == 1 }))

			// The HTTP answers.
			mux := http.NewServeMux()
			r2.Register(mux, func(http.ResponseWriter, *http.Request) bool { return true })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/v1/campaigns/cart/deliveries?failed=true")
			if err != nil {
				t.Fatal(err)
			}
			var body struct{ Deliveries []Attempt }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if len(body.Deliveries) != 4 || body.Deliveries[0].Status == "delivered" {
				t.Fatalf("failed deliveries: %+v", body.Deliveries)
			}
		})
	}
}
