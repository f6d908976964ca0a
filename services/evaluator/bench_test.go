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
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kfake"
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

// benchEvaluator returns an evaluator with the 100 campaigns on a broker of
// its own, its store in dir.
func benchEvaluator(b *testing.B, dir string) *Evaluator {
	return benchEvaluatorOn(b, kafkatest.New(b).Config(), dir)
}

// benchEvaluatorOn is benchEvaluator on the broker of cfg.
func benchEvaluatorOn(b *testing.B, cfg kafka.Config, dir string) *Evaluator {
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
	e.db = openBenchDB(b, dir)
	b.Cleanup(func() { e.db.Close() })
	return e
}

// openBenchDB opens a store with the options the evaluator uses by default.
func openBenchDB(b *testing.B, dir string) *pebble.DB {
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	db, err := pebble.Open(dir, pebbleOptions(&ec, slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// benchUser is the state populate gives user i: a profile and three events
// of history.
func benchUser(ec *Config, i int) *user {
	u, _ := newUser(fmt.Sprintf("user-%d", i), nil)
	_ = u.setProfile(map[string]any{"Country": []string{"Canada", "India", "USA"}[i%3], "Email": fmt.Sprintf("user-%d@example.com", i), "Score": i % 1000})
	for j := 0; j < 3; j++ {
		u.record(ec, &hookstreamv1.Event{Id: fmt.Sprintf("h-%d-%d", i, j), Name: benchEvents[(i+j)%10], TsMs: t0.Add(-time.Duration(j+1) * 24 * time.Hour).UnixMilli(), PropertiesJson: []byte(`{"n":3}`)}, t0.UnixMilli())
	}
	return u
}

// populate writes the same state of users users into every db, compacts
// them so that the measurement starts from a settled store rather than from
// the populating writes' compaction debt, and returns the mean encoded
// state size.
func populate(b *testing.B, users int, dbs ...*pebble.DB) float64 {
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	var total int
	batches := make([]*pebble.Batch, len(dbs))
	commit := func() {
		for i, pb := range batches {
			if pb != nil {
				if err := pb.Commit(pebble.NoSync); err != nil {
					b.Fatal(err)
				}
				pb.Close()
			}
			batches[i] = dbs[i].NewBatch()
		}
	}
	commit()
	for i := 0; i < users; i++ {
		u := benchUser(&ec, i)
		v, _ := u.encode()
		total += len(v)
		for _, pb := range batches {
			_ = pb.Set(userKey(int32(i%6), u.identity), v, nil)
		}
		if batches[0].Count() >= 10000 {
			commit()
		}
	}
	commit()
	for _, db := range dbs {
		if err := db.Compact(context.Background(), []byte{'u'}, []byte{'v'}, true); err != nil {
			b.Fatal(err)
		}
	}
	return float64(total) / float64(users)
}

// benchStores are the two populated stores of BenchmarkEvaluate, made once
// per process: populating 1,000,000 users takes tens of seconds and the
// framework calls a benchmark several times. Removed by TestMain.
var benchStores struct {
	once             sync.Once
	root             string
	evalDir, baseDir string
	perUser          float64
	users            int
	populateDuration time.Duration
	rounds           int
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchStores.root != "" {
		_ = os.RemoveAll(benchStores.root)
	}
	os.Exit(code)
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
// state path (decode, 100 campaigns, state read/modify/write, changelog and
// output records; no Kafka) next to a baseline that only reads and writes
// back the same users' keys in Pebble, and reports the ratio.
//
// Fairness: the evaluator and the baseline each have their own store,
// populated with the same users' state (1,000,000 by default) and compacted
// the same way, and both process the very same records in the same order,
// so that they read the same keys without either warming the block cache
// for the other. Their turns alternate batch by batch, so that background
// work one leaves behind (GC, compactions) falls on both alike.
func BenchmarkEvaluate(b *testing.B) {
	s := &benchStores
	s.once.Do(func() {
		var err error
		if s.root, err = os.MkdirTemp("", "evaluator-bench-"); err != nil {
			b.Fatal(err)
		}
		s.users = benchUsers()
		s.evalDir, s.baseDir = s.root+"/evaluator", s.root+"/baseline"
		start := time.Now()
		edb, bdb := openBenchDB(b, s.evalDir), openBenchDB(b, s.baseDir)
		s.perUser = populate(b, s.users, edb, bdb)
		s.populateDuration = time.Since(start)
		edb.Close()
		bdb.Close()
	})
	b.Logf("%d users populated in %v; state %.0f bytes/user", s.users, s.populateDuration.Round(time.Millisecond), s.perUser)
	e := benchEvaluator(b, s.evalDir)
	base := openBenchDB(b, s.baseDir)
	b.Cleanup(func() { base.Close() })
	// A seed per round, so that a round does not replay the events of the
	// previous one (they would be duplicates).
	s.rounds++
	rng := rand.New(rand.NewPCG(uint64(s.rounds), 2))
	const batchSize = 1000
	var evalDur, baseDur time.Duration
	var events int
	ctx := context.Background()
	var evalBytes, baseBytes int
	evaluate := func(recs []*kgo.Record) {
		t := time.Now()
		bt, changelog, err := e.evaluate(ctx, recs)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range changelog {
			evalBytes += len(r.Key) + len(r.Value)
		}
		if _, err := e.outputs(&bt.out); err != nil {
			b.Fatal(err)
		}
		if err := bt.pb.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		bt.pb.Close()
		evalDur += time.Since(t)
	}
	// The baseline decodes each record for its user and reads and writes
	// back that user's state, in one indexed batch as the evaluator does.
	baseline := func(recs []*kgo.Record) {
		t := time.Now()
		pb := base.NewIndexedBatch()
		for _, r := range recs {
			var ev hookstreamv1.Event
			_ = proto.Unmarshal(r.Value, &ev)
			k := userKey(r.Partition, ev.Identity)
			v, closer, err := pb.Get(k)
			if err == nil {
				v = append([]byte(nil), v...)
				closer.Close()
			}
			_ = pb.Set(k, v, nil)
			baseBytes += len(k) + len(v)
		}
		if err := pb.Commit(pebble.NoSync); err != nil {
			b.Fatal(err)
		}
		pb.Close()
		baseDur += time.Since(t)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs := randomEvents(batchSize, s.users, rng)
		if i%2 == 0 {
			evaluate(recs)
			baseline(recs)
		} else {
			baseline(recs)
			evaluate(recs)
		}
		events += batchSize
	}
	b.StopTimer()
	evalRate := float64(events) / evalDur.Seconds()
	baseRate := float64(events) / baseDur.Seconds()
	b.ReportMetric(evalRate, "events/s")
	b.ReportMetric(baseRate, "baseline-events/s")
	b.ReportMetric(evalRate/baseRate, "ratio")
	b.ReportMetric(s.perUser, "state-bytes/user")
	b.ReportMetric(float64(evalBytes)/float64(events), "written-bytes/event")
	b.ReportMetric(float64(baseBytes)/float64(events), "baseline-written-bytes/event")
	for _, db := range []struct {
		name string
		db   *pebble.DB
	}{{"evaluator", e.db}, {"baseline", base}} {
		m := db.db.Metrics()
		b.Logf("%s store: %d tables in L0, %d in all; block cache hits %d misses %d", db.name, m.Levels[0].TablesCount, m.Total().TablesCount, m.BlockCache.Hits, m.BlockCache.Misses)
	}
}

// BenchmarkRestore measures how fast a new disk is rebuilt from the
// changelog: 200,000 users' states consumed from an in-process broker and
// written to Pebble.
//
// The broker is kfake without the log cleaner that kafkatest enables: kfake
// compacts in its request loop, and compacting this topic every 500 ms held
// fetches back for long stretches, so that the figure measured the test
// broker rather than the evaluator (a real broker compacts on threads of
// its own; the records here have distinct keys, so there is nothing to
// compact anyway).
func BenchmarkRestore(b *testing.B) {
	const records = 200_000
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(3))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kc.Close)
	cfg := kafkatest.Config(kc.ListenAddrs()[0])
	cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "bench", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		b.Fatal(err)
	}
	// The records are the states BenchmarkEvaluate's users start with.
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	var recs []*kgo.Record
	var bytes int
	for i := 0; i < records; i++ {
		p := int32(i % cfg.Partitions)
		u := benchUser(&ec, i)
		value, err := u.encode()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(value)
		recs = append(recs, &kgo.Record{Topic: cfg.Topics().EvaluatorChangelog, Partition: p, Key: userKey(p, u.identity), Value: value})
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
		// The evaluator restores from the broker the changelog is on.
		e := benchEvaluatorOn(b, cfg, b.TempDir())
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
	b.ReportMetric(float64(bytes)/records, "bytes/record")
}
