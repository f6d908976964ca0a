package evaluator

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// benchUsers is the number of users whose state is in the store, default
// 1,000,000 (HOOKSTREAM_BENCH_USERS overrides it).
func benchUsers() int {
	if n, err := strconv.Atoi(os.Getenv("HOOKSTREAM_BENCH_USERS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

var benchEvents = []string{"Viewed", "Added To Cart", "Charged", "App Launched", "Searched", "Shared", "Rated", "Subscribed", "Logged In", "Opened"}

// hundredCampaigns is 100 live campaigns over the bench's event names, of
// every event-driven trigger type.
func hundredCampaigns() string {
	var b strings.Builder
	b.WriteString(webhookYAML)
	b.WriteString("apiVersion: hookstream.dev/v1\nkind: Segment\nmetadata: {name: active}\nspec: {event: {name: Logged In, count: {gte: 1}, in: 30d}}\n")
	for i := 0; i < 100; i++ {
		a, z := benchEvents[i%10], benchEvents[(i+3)%10]
		var trig string
		switch i % 5 {
		case 0:
			trig = fmt.Sprintf("{type: single_action, action: {event: %s, where: [{property: n, op: gte, value: %d}]}}", a, i%7)
		case 1:
			trig = fmt.Sprintf("{type: actions_with_user_properties, action: {event: %s}, profile: [{property: Country, op: eq, value: Canada}]}", a)
		case 2:
			trig = fmt.Sprintf("{type: actions, actions: [{event: %s}, {event: %s}], within: 1h}", a, z)
		case 3:
			trig = fmt.Sprintf("{type: inaction, action: {event: %s}, inaction: {event: %s}, lookback: 30d}", a, z)
		case 4:
			trig = fmt.Sprintf("{type: inaction_within_time, action: {event: %s}, inaction: {event: %s}, within: 30m}", a, z)
		}
		who := ""
		if i%4 == 0 {
			who = "\n  who: {segment: active}"
		}
		fmt.Fprintf(&b, "---\napiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: c%d}\nspec:\n  webhook: crm\n  delivery: {type: triggered}\n  trigger: %s%s\n  what: {payload: {profileVariables: [Identity]}}\n", i, trig, who)
	}
	return b.String()
}

func benchEvaluator(b *testing.B, dir string) *Evaluator {
	kc := kafkatest.New(b)
	cfg := kc.Config()
	cat := catalogtest.New(b, cfg, hundredCampaigns())
	if n := len(cat.Campaigns()); n != 100 {
		b.Fatalf("%d campaigns", n)
	}
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	ec.DataDir = dir
	e, err := New(ec, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), cat.Catalog, noop.NewMeterProvider().Meter("b"), func() time.Time { return t0 })
	if err != nil {
		b.Fatal(err)
	}
	if e.db, err = pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{e.log}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.db.Close() })
	return e
}

// populate gives every user a profile and a few events' history, and
// returns the mean encoded state size.
func populate(b *testing.B, db *pebble.DB, users int) float64 {
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	var total int
	batch := db.NewBatch()
	for i := 0; i < users; i++ {
		u := newUser(fmt.Sprintf("user-%d", i), nil)
		_ = u.setProfile(map[string]any{"Country": []string{"Canada", "India", "USA"}[i%3], "Email": fmt.Sprintf("user-%d@example.com", i), "Score": i % 1000})
		for j := 0; j < 3; j++ {
			u.record(&ec, &hookstreamv1.Event{Id: fmt.Sprintf("h-%d-%d", i, j), Name: benchEvents[(i+j)%10], TsMs: t0.Add(-time.Duration(j+1) * 24 * time.Hour).UnixMilli(), PropertiesJson: []byte(`{"n":3}`)}, t0.UnixMilli())
		}
		v, _ := u.encode()
		total += len(v)
		_ = batch.Set(userKey(int32(i%6), u.identity), v, nil)
		if batch.Count() >= 10000 {
			if err := batch.Commit(pebble.NoSync); err != nil {
				b.Fatal(err)
			}
			batch = db.NewBatch()
		}
	}
	if err := batch.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
	return float64(total) / float64(users)
}

func randomEvents(n, users int, rng *rand.Rand) []*kgo.Record {
	recs := make([]*kgo.Record, n)
	for i := range recs {
		u := rng.IntN(users)
		ev := &hookstreamv1.Event{Kind: hookstreamv1.Event_KIND_EVENT, Id: fmt.Sprintf("b-%d-%d", i, rng.Int()), Identity: fmt.Sprintf("user-%d", u),
			Name: benchEvents[rng.IntN(10)], TsMs: t0.UnixMilli() - int64(rng.IntN(600_000)), PropertiesJson: []byte(`{"n":` + strconv.Itoa(rng.IntN(10)) + `}`)}
		v, _ := proto.Marshal(ev)
		recs[i] = &kgo.Record{Partition: int32(u % 6), Offset: int64(i), Value: v}
	}
	return recs
}

// BenchmarkEvaluate measures events/s through the evaluator's decision and
// state path (decode, 100 campaigns, state read/modify/write, changelog
// records; no Kafka) on one core, next to a bare Pebble read+write of the
// same kind of keys per event in the same run, and reports the ratio.
func BenchmarkEvaluate(b *testing.B) {
	users := benchUsers()
	e := benchEvaluator(b, b.TempDir())
	start := time.Now()
	perUser := populate(b, e.db, users)
	b.Logf("populated %d users in %v; state %.0f bytes/user", users, time.Since(start).Round(time.Millisecond), perUser)
	rng := rand.New(rand.NewPCG(1, 2))
	const batchSize = 1000
	var evalDur, baseDur time.Duration
	var events int
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs := randomEvents(batchSize, users, rng)

		t := time.Now()
		bt, _, err := e.evaluate(ctx, recs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.outputs(&bt.out); err != nil {
			b.Fatal(err)
		}
		if err := bt.pb.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		bt.pb.Close()
		evalDur += time.Since(t)

		// Baseline: read and write users' keys, nothing else. Its own
		// random users from the same distribution, so that neither pass
		// reads keys the other has just brought into the cache.
		base := randomEvents(batchSize, users, rng)
		t = time.Now()
		pb := e.db.NewIndexedBatch()
		for _, r := range base {
			var ev hookstreamv1.Event
			_ = proto.Unmarshal(r.Value, &ev)
			k := userKey(r.Partition, ev.Identity)
			v, closer, err := pb.Get(k)
			if err == nil {
				v = append([]byte(nil), v...)
				closer.Close()
			}
			_ = pb.Set(k, v, nil)
		}
		if err := pb.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		pb.Close()
		baseDur += time.Since(t)
		events += batchSize
	}
	b.StopTimer()
	evalRate := float64(events) / evalDur.Seconds()
	baseRate := float64(events) / baseDur.Seconds()
	b.ReportMetric(evalRate, "events/s")
	b.ReportMetric(baseRate, "baseline-events/s")
	b.ReportMetric(evalRate/baseRate, "ratio")
	b.ReportMetric(perUser, "state-bytes/user")
}

// BenchmarkRestore measures how fast a new disk is rebuilt from the
// changelog on the test broker.
func BenchmarkRestore(b *testing.B) {
	const records = 200_000
	kc := kafkatest.New(b)
	cfg := kc.Config()
	cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "bench", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		b.Fatal(err)
	}
	value, _ := proto.Marshal(&hookstreamv1.UserState{ProfileJson: []byte(`{"Country":"Canada","Email":"someone@example.com"}`)})
	var recs []*kgo.Record
	for i := 0; i < records; i++ {
		p := int32(i % cfg.Partitions)
		recs = append(recs, &kgo.Record{Topic: cfg.Topics().EvaluatorChangelog, Partition: p, Key: userKey(p, fmt.Sprintf("user-%d", i)), Value: value})
		if len(recs) == 10000 {
			if err := kafka.ProduceSync(ctx, cl, recs...); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ResetTimer()
	var total int64
	var dur time.Duration
	for i := 0; i < b.N; i++ {
		e := benchEvaluator(b, b.TempDir())
		e.clog = cl
		from := map[int32]kgo.Offset{}
		for p := 0; p < cfg.Partitions; p++ {
			from[int32(p)] = kgo.NewOffset().At(0)
		}
		t := time.Now()
		n, err := e.restoreChangelog(ctx, from)
		if err != nil {
			b.Fatal(err)
		}
		dur += time.Since(t)
		total += n
	}
	b.ReportMetric(float64(total)/dur.Seconds(), "records/s")
}
