package catalog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
)

// process is what each Hookstream process holds: its own catalog, the
// follower that keeps it in step with the campaigns topic, and a writer.
type process struct {
	cat    *catalog.Catalog
	writer *catalog.Writer
	stop   func()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newCluster starts a broker and creates the contract's topics.
func newCluster(t *testing.T) kafka.Config {
	t.Helper()
	cfg := kafkatest.New(t).Config()
	cl, err := kafka.NewClient(cfg, quiet(), "topics")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startProcess starts a catalog follower (loaded when this returns) and a
// writer, as one process would.
func startProcess(t *testing.T, cfg kafka.Config) *process {
	t.Helper()
	cat := catalog.New(quiet())
	f := catalog.NewFollower(cfg, quiet(), cat)
	if err := f.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(cfg, quiet(), "writer")
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			f.StopAsync()
			_ = f.AwaitTerminated(context.Background())
			cl.Close()
		})
	}
	t.Cleanup(stop)
	return &process{cat: cat, writer: catalog.NewWriter(cl, cfg, cat), stop: stop}
}

func parse(t *testing.T, yamlDocs string) []manifest.Object {
	t.Helper()
	objs, err := manifest.Parse([]byte(yamlDocs), "test")
	if err != nil {
		t.Fatalf("manifests: %v", err)
	}
	return objs
}

func (p *process) apply(t *testing.T, yamlDocs string, dryRun bool) []catalog.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes, err := p.writer.Apply(ctx, parse(t, yamlDocs), dryRun)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return changes
}

func (p *process) delete(t *testing.T, kind, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := p.writer.Delete(ctx, kind, name)
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	return ok
}

// view is a catalog's content as JSON, kind by kind, for comparing views.
func view(t *testing.T, c *catalog.Catalog) string {
	t.Helper()
	out := map[string][]manifest.Object{}
	for _, k := range []string{manifest.KindWebhook, manifest.KindSegment, manifest.KindCampaign} {
		out[k] = c.List(k)
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// within polls cond until it holds or d has passed.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const webhook = `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
`

func campaign(name, promo string) string {
	return fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: %s}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Charged}}
  what: {keyValues: {PromoCode: %s}}
`, name, promo)
}

func promo(c *catalog.Catalog, name string) string {
	cp, ok := c.Campaign(name)
	if !ok {
		return ""
	}
	return cp.Spec.What.KeyValues["PromoCode"]
}

// A change applied in one process is seen by another process's catalog
// within a second: a create, an edit and a delete.
func TestChangeVisibleInAnotherProcess(t *testing.T) {
	cfg := newCluster(t)
	a, b := startProcess(t, cfg), startProcess(t, cfg)

	a.apply(t, webhook+"---\n"+campaign("cart", "MT50"), false)
	if !within(time.Second, func() bool { return promo(b.cat, "cart") == "MT50" }) {
		t.Fatal("the created campaign is not visible in the other process within 1s")
	}
	if _, ok := b.cat.Webhook("crm"); !ok {
		t.Fatal("the webhook applied with the campaign is missing")
	}

	a.apply(t, campaign("cart", "MT60"), false)
	if !within(time.Second, func() bool { return promo(b.cat, "cart") == "MT60" }) {
		t.Fatal("the edit is not visible in the other process within 1s")
	}
	if c, _ := b.cat.Campaign("cart"); c.Metadata.Generation != 2 {
		t.Fatalf("generation after one edit = %d, want 2", c.Metadata.Generation)
	}

	if !a.delete(t, manifest.KindCampaign, "cart") {
		t.Fatal("delete says the campaign did not exist")
	}
	if !within(time.Second, func() bool { _, ok := b.cat.Campaign("cart"); return !ok }) {
		t.Fatal("the delete is not visible in the other process within 1s")
	}
	if a.delete(t, manifest.KindCampaign, "cart") {
		t.Fatal("deleting a missing campaign reports success")
	}
}

// A restarted process (a new, empty catalog) rebuilds exactly the view of
// the running ones from the compacted topic, deletes (tombstones) included,
// also after the broker has compacted superseded records away.
func TestRestartRebuildsView(t *testing.T) {
	cfg := newCluster(t)
	a := startProcess(t, cfg)
	a.apply(t, webhook, false)
	for i := range 5 {
		for _, name := range []string{"one", "two", "three"} {
			a.apply(t, campaign(name, fmt.Sprintf("P%d", i)), false)
		}
	}
	a.delete(t, manifest.KindCampaign, "two")
	a.apply(t, `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: gone}
spec: {property: Country, op: exists}
`, false)
	a.delete(t, manifest.KindSegment, "gone")
	want := view(t, a.cat)

	restarted := startProcess(t, cfg)
	if got := view(t, restarted.cat); got != want {
		t.Fatalf("restarted view differs:\n got %s\nwant %s", got, want)
	}
	if restarted.cat.Version() != a.cat.Version() {
		t.Fatalf("restarted version %d, running %d", restarted.cat.Version(), a.cat.Version())
	}
	if _, ok := restarted.cat.Campaign("two"); ok {
		t.Fatal("a deleted campaign came back after a restart")
	}
	if c, _ := restarted.cat.Campaign("one"); c == nil || c.Metadata.Generation != 5 || promo(restarted.cat, "one") != "P4" {
		t.Fatalf("campaign one after restart: %+v", c)
	}

	// Wait until the broker has compacted the topic (it keeps only the last
	// record per key, and always the last batch), then restart again.
	produced := countRecords(t, cfg)
	if !within(20*time.Second, func() bool { return countRecords(t, cfg) < produced }) {
		t.Fatalf("the campaigns topic was never compacted (%d records)", produced)
	}
	a.apply(t, campaign("three", "AFTER"), false)
	want = view(t, a.cat)
	again := startProcess(t, cfg)
	if got := view(t, again.cat); got != want {
		t.Fatalf("view rebuilt from the compacted topic differs:\n got %s\nwant %s", got, want)
	}
}

// readTopic reads the whole campaigns topic, up to its high watermark.
func readTopic(t *testing.T, cfg kafka.Config) []*kgo.Record {
	t.Helper()
	topic := cfg.Topics().Campaigns
	cl, err := kafka.NewClient(cfg, quiet(), "read",
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("reading the campaigns topic timed out")
		}
		done := false
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			recs = append(recs, p.Records...)
			done = len(recs) > 0 && recs[len(recs)-1].Offset+1 >= p.HighWatermark
		})
		if done {
			return recs
		}
	}
}

func countRecords(t *testing.T, cfg kafka.Config) int { return len(readTopic(t, cfg)) }

// A campaign's targetId is given once and kept across edits, even when it
// is not the one derived from its name.
func TestTargetIDKeptAcrossEdits(t *testing.T) {
	cfg := newCluster(t)
	p := startProcess(t, cfg)
	p.apply(t, webhook+"---\n"+campaign("cart", "A"), false)
	c, _ := p.cat.Campaign("cart")
	if c.Status == nil || c.Status.TargetID != catalog.TargetID("cart") || c.Status.TargetID <= 0 {
		t.Fatalf("targetId = %+v, want %d", c.Status, catalog.TargetID("cart"))
	}
	p.apply(t, campaign("cart", "B"), false)
	if c, _ := p.cat.Campaign("cart"); c.Status.TargetID != catalog.TargetID("cart") {
		t.Fatalf("targetId changed on edit: %d", c.Status.TargetID)
	}

	// A campaign stored with another targetId (by an older version, say)
	// keeps it; a targetId in an applied manifest is ignored.
	stored := parse(t, campaign("legacy", "A"))[0].(*manifest.Campaign)
	stored.Metadata.Generation = 1
	stored.Status = &manifest.CampaignState{TargetID: 42}
	raw, _ := json.Marshal(stored)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := p.writer.Client.ProduceSync(ctx, &kgo.Record{Topic: cfg.Topics().Campaigns, Key: []byte("Campaign/legacy"), Value: raw})
	if err := res.FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := p.cat.WaitVersion(ctx, res[0].Record.Offset+1); err != nil {
		t.Fatal(err)
	}
	p.apply(t, campaign("legacy", "B")+"status: {targetId: 7}\n", false)
	if c, _ := p.cat.Campaign("legacy"); c.Status.TargetID != 42 || c.Metadata.Generation != 2 {
		t.Fatalf("legacy campaign after edit: targetId %d generation %d, want 42 and 2", c.Status.TargetID, c.Metadata.Generation)
	}
}

// metadata.generation counts changes: re-applying the same manifest, with
// or without the server-set fields, changes nothing, in whichever process
// it is applied; dry runs report without writing.
func TestGenerationOnlyOnChange(t *testing.T) {
	cfg := newCluster(t)
	a, b := startProcess(t, cfg), startProcess(t, cfg)
	steps := []struct {
		p      *process
		yaml   string
		dryRun bool
		want   string
	}{
		{a, webhook, false, "Webhook/crm created 1"},
		{a, campaign("cart", "A"), false, "Campaign/cart created 1"},
		{a, campaign("cart", "A"), false, "Campaign/cart unchanged 1"},
		{b, campaign("cart", "A"), false, "Campaign/cart unchanged 1"},
		{b, campaign("cart", "B"), true, "Campaign/cart configured 2"},
		{a, campaign("cart", "A"), false, "Campaign/cart unchanged 1"},
		{b, campaign("cart", "B"), false, "Campaign/cart configured 2"},
		{a, campaign("cart", "B"), false, "Campaign/cart unchanged 2"},
		{a, campaign("cart", "C"), false, "Campaign/cart configured 3"},
		{b, campaign("cart", "C") + "status: {targetId: 9}\n", false, "Campaign/cart unchanged 3"},
		{b, webhook, false, "Webhook/crm unchanged 1"},
		{b, "apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: crm, generation: 40}\nspec: {url: https://crm.example.com/hook, method: POST, timeout: 3s}\n", false, "Webhook/crm unchanged 1"},
		{b, "apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: crm}\nspec: {url: https://crm.example.com/v2}\n", false, "Webhook/crm configured 2"},
	}
	for i, s := range steps {
		// The other process has seen every earlier write before it applies.
		for _, p := range []*process{a, b} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := p.cat.WaitVersion(ctx, max(a.cat.Version(), b.cat.Version())); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		ch := s.p.apply(t, s.yaml, s.dryRun)
		if got := fmt.Sprintf("%s/%s %s %d", ch[0].Kind, ch[0].Name, ch[0].Action, ch[0].Generation); got != s.want {
			t.Fatalf("step %d: got %q, want %q", i, got, s.want)
		}
	}
}

// Applies of the same object from two processes at once end with one
// winner: the last record on the topic, which every process then holds.
func TestConcurrentAppliesLastWriteWins(t *testing.T) {
	cfg := newCluster(t)
	a, b := startProcess(t, cfg), startProcess(t, cfg)
	a.apply(t, webhook, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.cat.WaitVersion(ctx, a.cat.Version()); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		gens = map[string]int64{} // promo code → generation its apply reported
	)
	for _, p := range []struct {
		proc *process
		name string
	}{{a, "a"}, {b, "b"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				objs, err := manifest.Parse([]byte(campaign("race", fmt.Sprintf("%s%d", p.name, i))), "")
				if err != nil {
					t.Error(err)
					return
				}
				changes, err := p.proc.writer.Apply(context.Background(), objs, false)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				gens[fmt.Sprintf("%s%d", p.name, i)] = changes[0].Generation
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	last := lastValue(t, cfg, "Campaign/race")
	for _, p := range []*process{a, b} {
		if !within(time.Second, func() bool { return promo(p.cat, "race") == last }) {
			t.Fatalf("a process holds %q, the topic's last write is %q", promo(p.cat, "race"), last)
		}
	}
	if view(t, a.cat) != view(t, b.cat) {
		t.Fatal("the two processes disagree after concurrent applies")
	}
	// Every version has a generation of its own: no two of the 20 applies
	// (each a different spec) were told the same generation, and every
	// process, and one started now from the topic, gives the last version
	// the generation its latest record on the topic carries.
	for promo, gen := range gens {
		for other, g := range gens {
			if promo != other && gen == g {
				t.Errorf("applies of %s and %s were both given generation %d", promo, other, gen)
			}
		}
	}
	if len(gens) != 20 {
		t.Errorf("%d applies reported, want 20", len(gens))
	}
	fresh := startProcess(t, cfg)
	top := lastGeneration(t, cfg, "Campaign/race")
	for _, p := range []*process{a, b, fresh} {
		if c, _ := p.cat.Campaign("race"); c.Metadata.Generation != top || c.Metadata.Generation < 20 {
			t.Errorf("a process gives the last version generation %d; the topic's last record carries %d (want >= 20)", c.Metadata.Generation, top)
		}
	}
	if g := gens[promo(a.cat, "race")]; g != top {
		t.Errorf("the last version's apply was told generation %d, the topic carries %d", g, top)
	}
}

// Two campaigns whose names hash to the same targetId get different ones,
// whether created in one apply or one after the other: the first keeps the
// hash of its name, the second the hash of "name#1".
func TestTargetIDsDoNotCollide(t *testing.T) {
	const x, y = "c-287019", "c-470000" // FNV-32a of both is 564837831
	if catalog.TargetID(x) != catalog.TargetID(y) {
		t.Fatal("the names no longer collide: pick another pair")
	}
	cfg := newCluster(t)
	p := startProcess(t, cfg)
	p.apply(t, webhook+"---\n"+campaign(x, "A"), false)
	p.apply(t, campaign(y, "A"), false)
	p.apply(t, campaign("solo-1", "A")+"---\n"+campaign("solo-2", "A"), false)
	id := func(name string) int64 {
		c, ok := p.cat.Campaign(name)
		if !ok || c.Status == nil {
			t.Fatalf("campaign %s missing", name)
		}
		return c.Status.TargetID
	}
	if id(x) != catalog.TargetID(x) || id(y) != catalog.TargetID(y+"#1") {
		t.Fatalf("targetIds %d and %d, want %d and %d", id(x), id(y), catalog.TargetID(x), catalog.TargetID(y+"#1"))
	}
	p.apply(t, campaign(y, "B"), false)
	if id(y) != catalog.TargetID(y+"#1") {
		t.Fatalf("targetId of %s changed on edit to %d", y, id(y))
	}

	// Both new in one apply.
	q := startProcess(t, newCluster(t))
	q.apply(t, webhook+"---\n"+campaign(y, "A")+"---\n"+campaign(x, "A"), false)
	cx, _ := q.cat.Campaign(x)
	cy, _ := q.cat.Campaign(y)
	if cx.Status.TargetID == cy.Status.TargetID {
		t.Fatalf("both campaigns of one apply got targetId %d", cx.Status.TargetID)
	}
}

// lastGeneration reads the generation of the last record for key on the
// topic.
func lastGeneration(t *testing.T, cfg kafka.Config, key string) int64 {
	t.Helper()
	return lastObject(t, cfg, key).GetMetadata().Generation
}

// Records that two writers wrote with the same generation (two ingest
// replicas applying at once) are told apart in every process: the later
// one, when its spec differs, gets the next generation after the highest
// given, and a record that only repeats the current version keeps its
// generation. A record whose key is not its object's kind/name (written by
// something else) is skipped.
func TestCollidingGenerationsToldApart(t *testing.T) {
	cfg := newCluster(t)
	a := startProcess(t, cfg)
	cl, err := kafka.NewClient(cfg, quiet(), "raw")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	record := func(key, doc string, gen int64) *kgo.Record {
		o := parse(t, doc)[0]
		o.GetMetadata().Generation = gen
		v, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return &kgo.Record{Topic: cfg.Topics().Campaigns, Key: []byte(key), Value: v}
	}
	steps := []struct {
		rec     *kgo.Record
		promo   string
		wantGen int64
	}{
		{record("Webhook/crm", webhook, 1), "", 0},
		{record("Campaign/race", campaign("race", "A"), 1), "A", 1},
		{record("Campaign/race", campaign("race", "B"), 2), "B", 2},
		{record("Campaign/race", campaign("race", "C"), 2), "C", 3}, // B's writer's twin
		{record("Campaign/race", campaign("race", "C"), 3), "C", 3}, // its writer's rewrite
		{record("Campaign/race", campaign("race", "D"), 1), "D", 4}, // a writer far behind
		{record("Campaign/race", webhook, 9), "D", 4},               // foreign: skipped
	}
	for _, st := range steps {
		if err := kafka.ProduceSync(context.Background(), cl, st.rec); err != nil {
			t.Fatal(err)
		}
		if st.promo == "" {
			continue
		}
		if !within(5*time.Second, func() bool { return a.cat.Version() > st.rec.Offset }) {
			t.Fatalf("record at %d not applied", st.rec.Offset)
		}
		c, ok := a.cat.Campaign("race")
		if !ok || promo(a.cat, "race") != st.promo || c.Metadata.Generation != st.wantGen {
			t.Fatalf("after the record at offset %d: %q generation %d, want %q generation %d", st.rec.Offset, promo(a.cat, "race"), c.Metadata.Generation, st.promo, st.wantGen)
		}
	}
	if _, ok := a.cat.Webhook("crm"); !ok {
		t.Fatal("the webhook is gone")
	}
	if got, want := view(t, startProcess(t, cfg).cat), view(t, a.cat); got != want {
		t.Fatalf("a process started now disagrees:\n got %s\nwant %s", got, want)
	}
}

// lastValue reads the PromoCode of the last record for key on the topic.
func lastValue(t *testing.T, cfg kafka.Config, key string) string {
	t.Helper()
	return lastObject(t, cfg, key).(*manifest.Campaign).Spec.What.KeyValues["PromoCode"]
}

// lastObject decodes the last record for key on the topic.
func lastObject(t *testing.T, cfg kafka.Config, key string) manifest.Object {
	t.Helper()
	var value []byte
	for _, r := range readTopic(t, cfg) {
		if string(r.Key) == key {
			value = r.Value
		}
	}
	o, err := manifest.Decode(value)
	if err != nil {
		t.Fatalf("last %s record: %v", key, err)
	}
	return o
}
