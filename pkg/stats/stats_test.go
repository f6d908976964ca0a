package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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

// emit produces msgs (Delivery or Conversion) with key, in order.
func emit(t *testing.T, cl *kgo.Client, cfg kafka.Config, key string, msgs ...proto.Message) {
	t.Helper()
	var recs []*kgo.Record
	for _, m := range msgs {
		topic := cfg.Topics().Deliveries
		if _, ok := m.(*hookstreamv1.Conversion); ok {
			topic = cfg.Topics().Conversions
		}
		v, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: v})
	}
	if err := kafka.ProduceSync(context.Background(), cl, recs...); err != nil {
		t.Fatal(err)
	}
}

func waitStats(t *testing.T, r *Reader, want func(*Stats) bool) *Stats {
	t.Helper()
	return waitCampaign(t, r, "cart", want)
}

func waitCampaign(t *testing.T, r *Reader, campaign string, want func(*Stats) bool) *Stats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := r.Get(context.Background(), campaign)
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
			cfg, cl := newTopics(t)
			produce(t, cl, cfg)
			addr := redistest.Start(t, b)
			stop := runAggregator(t, cfg, addr)
			r := &Reader{RDB: redisconn.Open(redisconn.Config{Addr: addr}), Now: func() time.Time { return now }}
			check(t, waitStats(t, r, func(s *Stats) bool { return s.Delivered == 5 && s.Conversions["control"] == 1 }))

			// Producers re-emit every record (at-least-once after a
			// crash), at new offsets: nothing is counted twice. The
			// sentinel, behind them in the same partition, says when they
			// have been read.
			produce(t, cl, cfg)
			emit(t, cl, cfg, "cart",
				&hookstreamv1.Delivery{WebhookId: "s", Campaign: "sentinel", Identities: []string{"u1"}, Attempt: 1, Status: hookstreamv1.Delivery_STATUS_DELIVERED, TsMs: now.UnixMilli()},
				&hookstreamv1.Conversion{Id: "s", Campaign: "sentinel", Identity: "u1", TsMs: now.UnixMilli()})
			waitCampaign(t, r, "sentinel", func(s *Stats) bool { return s.Delivered == 1 && s.Conversions["test"] == 1 })
			check(t, waitStats(t, r, func(s *Stats) bool { return true }))

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

// A replay (hookstream replay) is the same trigger sent again: it is never
// a new trigger or send, its failed attempts are retries, and its final
// outcome moves the original's users, on the original's day, however
// often it or its records come.
func TestReplay(t *testing.T) {
	const (
		R = hookstreamv1.Delivery_STATUS_RETRYING
		D = hookstreamv1.Delivery_STATUS_DELIVERED
		F = hookstreamv1.Delivery_STATUS_FAILED
		S = hookstreamv1.Delivery_STATUS_SUPPRESSED
	)
	later := now.Add(24 * time.Hour)
	orig := func(attempt int32, st hookstreamv1.Delivery_Status, users ...string) *hookstreamv1.Delivery {
		d := &hookstreamv1.Delivery{WebhookId: "w", Identities: users, Attempt: attempt, Status: st, TsMs: now.UnixMilli(), FirstAttemptMs: now.UnixMilli()}
		if st == S {
			d.SuppressionReason = "webhook_disabled"
		}
		return d
	}
	replay := func(firstMs int64, attempt int32, st hookstreamv1.Delivery_Status, users ...string) *hookstreamv1.Delivery {
		if len(users) == 0 {
			users = []string{"u1"}
		}
		return &hookstreamv1.Delivery{WebhookId: "w", Identities: users, Attempt: attempt, Status: st, TsMs: later.UnixMilli(), FirstAttemptMs: firstMs, Replay: true}
	}
	failed := []*hookstreamv1.Delivery{orig(1, R, "u1"), orig(2, F, "u1")} // triggered, sent, 1 retry, failed
	type counts struct{ triggered, sent, delivered, failed, retries, held int64 }
	cases := []struct {
		name    string
		records []*hookstreamv1.Delivery
		want    counts
	}{
		{"original failed", failed, counts{1, 1, 0, 1, 1, 0}},
		{"replay delivered", append(failed, replay(1, 1, D)), counts{1, 1, 1, 0, 1, 0}},
		{"replay retried then delivered", append(failed, replay(1, 1, R), replay(1, 2, D)), counts{1, 1, 1, 0, 2, 0}},
		{"replay failed again", append(failed, replay(1, 1, R), replay(1, 2, F)), counts{1, 1, 0, 1, 2, 0}},
		{"second replay delivered", append(failed, replay(1, 1, F), replay(2, 1, D)), counts{1, 1, 1, 0, 1, 0}},
		{"replayed twice, delivered twice", append(failed, replay(1, 1, D), replay(2, 1, D)), counts{1, 1, 1, 0, 1, 0}},
		{"records re-emitted", append(append(failed, failed...), replay(1, 1, R), replay(1, 1, R), replay(1, 2, D), replay(1, 2, D)), counts{1, 1, 1, 0, 2, 0}},
		{"batch of three replayed", []*hookstreamv1.Delivery{orig(1, F, "u1", "u2", "u3"), replay(1, 1, D, "u1", "u2", "u3")}, counts{3, 3, 3, 0, 0, 0}},
		{"held by a disabled webhook", []*hookstreamv1.Delivery{orig(1, S, "u1")}, counts{1, 0, 0, 0, 0, 1}},
		{"held, replay delivered", []*hookstreamv1.Delivery{orig(1, S, "u1"), replay(1, 1, D)}, counts{1, 1, 1, 0, 0, 0}},
		{"held, replay failed", []*hookstreamv1.Delivery{orig(1, S, "u1"), replay(1, 1, F)}, counts{1, 1, 0, 1, 0, 0}},
		{"held, still disabled at the replay", []*hookstreamv1.Delivery{orig(1, S, "u1"), replay(0, 1, S)}, counts{1, 0, 0, 0, 0, 1}},
		{"replay of an unknown delivery", []*hookstreamv1.Delivery{replay(1, 1, R), replay(1, 2, D)}, counts{0, 0, 0, 0, 1, 0}},
	}
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			cfg, cl := newTopics(t)
			addr := redistest.Start(t, b)
			defer runAggregator(t, cfg, addr)()
			r := &Reader{RDB: redisconn.Open(redisconn.Config{Addr: addr}), Now: func() time.Time { return later }}
			for i, c := range cases {
				campaign := fmt.Sprintf("c%d", i)
				var msgs []proto.Message
				for _, d := range c.records {
					d = proto.Clone(d).(*hookstreamv1.Delivery)
					d.Campaign = campaign
					msgs = append(msgs, d)
				}
				// The sentinel, behind them in their partition, says when
				// they have been read.
				msgs = append(msgs, &hookstreamv1.Delivery{WebhookId: "s", Campaign: campaign + "-read", Attempt: 1, Status: D, TsMs: now.UnixMilli()})
				emit(t, cl, cfg, campaign, msgs...)
			}
			for i, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					campaign := fmt.Sprintf("c%d", i)
					waitCampaign(t, r, campaign+"-read", func(s *Stats) bool { return s.Delivered == 1 })
					s, err := r.Get(context.Background(), campaign)
					if err != nil {
						t.Fatal(err)
					}
					got := counts{s.Triggered, s.Sent, s.Delivered, s.Failed, s.Retries, s.Suppressed["webhook_disabled"]}
					if got != c.want {
						t.Errorf("totals %+v, want %+v", got, c.want)
					}
					// The moves land on the original's day; the replay's
					// day has only its retries.
					day := s.Days[len(s.Days)-2]
					if day.Date != "2026-11-27" || day.Delivered != c.want.delivered || day.Failed != c.want.failed || day.Sent != c.want.sent || day.Suppressed["webhook_disabled"] != c.want.held {
						t.Errorf("original day %+v, want %+v", day, c.want)
					}
					for _, d := range s.Days {
						if d.Sent < 0 || d.Delivered < 0 || d.Failed < 0 || d.Suppressed["webhook_disabled"] < 0 {
							t.Errorf("negative count on %+v", d)
						}
					}
				})
			}
		})
	}
}

// A campaign that is neither in the catalog nor has stats is not found; a
// deleted campaign's stats stay readable.
func TestNotFound(t *testing.T) {
	addr := redistest.Start(t, redistest.Miniredis)
	rdb := redisconn.Open(redisconn.Config{Addr: addr})
	if err := rdb.HSet(context.Background(), totalsKey("deleted"), fTriggered, 3).Err(); err != nil {
		t.Fatal(err)
	}
	r := &Reader{RDB: rdb, Exists: func(name string) bool { return name == "live" }}
	mux := http.NewServeMux()
	r.Register(mux, func(http.ResponseWriter, *http.Request) bool { return true })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, c := range []struct {
		path      string
		status    int
		errSubstr string
	}{
		{"/v1/campaigns/live/stats", http.StatusOK, ""},
		{"/v1/campaigns/deleted/stats", http.StatusOK, ""},
		{"/v1/campaigns/nope/stats", http.StatusNotFound, `campaign "nope" not found`},
		{"/v1/campaigns/nope/deliveries", http.StatusNotFound, `campaign "nope" not found`},
		{"/v1/campaigns/live/deliveries", http.StatusOK, ""},
	} {
		t.Run(c.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + c.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != c.status || !strings.Contains(body.Error, c.errSubstr) || (c.errSubstr == "" && body.Error != "") {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, body.Error, c.status, c.errSubstr)
			}
		})
	}
}

// A poll larger than one script call is counted whole, each record once.
func TestLargeBatch(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			cfg, cl := newTopics(t)
			const n = 3*scriptRecords + 7
			var msgs []proto.Message
			for i := 0; i < n; i++ {
				d := &hookstreamv1.Delivery{WebhookId: fmt.Sprint("w", i), Campaign: "many", Identities: []string{fmt.Sprint("u", i)}, Attempt: 1, Status: hookstreamv1.Delivery_STATUS_DELIVERED, TsMs: now.UnixMilli()}
				msgs = append(msgs, d, d) // each re-emitted at once
			}
			emit(t, cl, cfg, "many", msgs...)
			addr := redistest.Start(t, b)
			defer runAggregator(t, cfg, addr)()
			r := &Reader{RDB: redisconn.Open(redisconn.Config{Addr: addr}), Now: func() time.Time { return now }}
			waitCampaign(t, r, "many", func(s *Stats) bool { return s.Delivered >= n })
			time.Sleep(200 * time.Millisecond) // any double count would follow
			s := waitCampaign(t, r, "many", func(*Stats) bool { return true })
			if s.Triggered != n || s.Sent != n || s.Delivered != n {
				t.Errorf("triggered %d sent %d delivered %d, want %d each", s.Triggered, s.Sent, s.Delivered, n)
			}
			recent, err := r.Recent(context.Background(), "many", false, "", recentLimit)
			if err != nil || len(recent) != n {
				t.Errorf("%d recent attempts (%v), want %d", len(recent), err, n)
			}
		})
	}
}

// newTopics starts a broker with the contract's topics and returns its
// configuration and a client (closed with the test).
func newTopics(t *testing.T) (kafka.Config, *kgo.Client) {
	t.Helper()
	cfg := kafkatest.New(t).Config()
	cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	if err := kafka.EnsureTopics(context.Background(), cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	return cfg, cl
}
