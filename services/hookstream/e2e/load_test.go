package e2e

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// The load harness (`make load`): the four services as separate processes
// on the in-process broker and a real redis-server, a paced producer of raw
// events and a real receiver. Flags go after the package, e.g.
//
//	go test -count=1 -timeout 60m -v -run '^TestLoad$' ./services/hookstream/e2e/ -args -load.rate=2000
//
// Without -short the defaults are the issue's: 5,000 events/s for 5 minutes.
// With -short (make test, under -race) the defaults become a small run that
// only checks that every owed webhook arrives and the figures are produced;
// a flag given explicitly always wins.
//
// The default trigger ratio, 5 % of events owing a webhook, is on the heavy
// side of real behavioural campaigns (purchases and abandoned carts are a
// few per cent of a product-analytics stream, and most campaigns filter
// further), so that the dispatch path is loaded too: 250 webhooks/s at the
// default rate. The rest of the mix: cancelled carts (a Carted at once
// followed by its Bought: a timer scheduled and cancelled) for a fifth of
// that ratio, 5 % profile updates, and page views that a filtering campaign
// evaluates and never matches.
var (
	loadRate      = flag.Int("load.rate", 5000, "Events per second produced to hookstream.events.raw.")
	loadDuration  = flag.Duration("load.duration", 5*time.Minute, "How long to produce.")
	loadUsers     = flag.Int("load.users", 20000, "Distinct identities the events are spread over.")
	loadRatio     = flag.Float64("load.trigger-ratio", 0.05, "Fraction of events that owe a webhook (4/5 immediate, 1/5 abandoned carts fired by the timer).")
	loadWindow    = flag.Duration("load.window", 30*time.Second, "within of the cart-abandonment campaign (inaction_within_time).")
	loadEvery     = flag.Duration("load.sample", 5*time.Second, "How often lag and RSS are sampled.")
	loadDrain     = flag.Duration("load.drain", 15*time.Minute, "How long to wait after producing for every owed webhook.")
	loadSeed      = flag.Int64("load.seed", 1, "Seed of the event mix.")
	loadMaxGrowth = flag.Float64("load.max-rss-growth", 0.25, "Full form: the largest allowed growth of a service's mean RSS from the middle to the last third of the run, as a fraction (and more than load.max-rss-growth-mib).")
	loadGrowthMB  = flag.Int("load.max-rss-growth-mib", 32, "Full form: growth in MiB below which RSS counts as flat whatever the fraction.")
	loadCleaner   = flag.Duration("load.broker-cleaner-backoff", time.Minute, "log.cleaner.backoff.ms of the in-process broker; 0 keeps kafkatest's 500ms (see loadSlowCleaner).")
)

// loadConfig is one run's settings.
type loadConfig struct {
	rate      int
	duration  time.Duration
	users     int
	ratio     float64
	window    time.Duration
	sample    time.Duration
	drain     time.Duration
	seed      int64
	short     bool
	growth    float64
	growthMiB int
	cleaner   time.Duration
}

// loadSettings reads the flags; under -short, flags not given take the
// small defaults.
func loadSettings() (loadConfig, bool) {
	c := loadConfig{rate: *loadRate, duration: *loadDuration, users: *loadUsers, ratio: *loadRatio, window: *loadWindow,
		sample: *loadEvery, drain: *loadDrain, seed: *loadSeed, short: testing.Short(), growth: *loadMaxGrowth, growthMiB: *loadGrowthMB, cleaner: *loadCleaner}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	explicit := false
	for name := range set {
		if strings.HasPrefix(name, "load.") {
			explicit = true
		}
	}
	if c.short {
		short := map[string]func(){
			"load.rate":     func() { c.rate = 200 },
			"load.duration": func() { c.duration = 8 * time.Second },
			"load.users":    func() { c.users = 200 },
			"load.window":   func() { c.window = 2 * time.Second },
			"load.sample":   func() { c.sample = time.Second },
			"load.drain":    func() { c.drain = 90 * time.Second },
		}
		for name, apply := range short {
			if !set[name] {
				apply()
			}
		}
	}
	return c, explicit
}

const loadCampaigns = `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: load-orders}
spec:
  url: %[1]s/load/orders
  signing: {secretRef: {env: LOAD_SIGNING_SECRET}}
---
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: load-carts}
spec:
  url: %[1]s/load/carts
  signing: {secretRef: {env: LOAD_SIGNING_SECRET}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: load-cart-abandon}
spec:
  webhook: load-carts
  delivery: {type: triggered}
  trigger: {type: inaction_within_time, action: {event: Carted}, inaction: {event: Bought}, matchOn: [sku], within: %[2]s}
  what: {payload: {profileVariables: [Identity, Country, Event_properties]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: load-viewed-expensive}
spec:
  webhook: load-orders
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Viewed, where: [{property: price, op: gte, value: 1000000}]}}
  what: {payload: {profileVariables: [Identity, Event_properties]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: load-purchase}
spec:
  webhook: load-orders
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Purchased}}
  what: {payload: {profileVariables: [Identity, Country, Event_properties]}}
`

// loadServices are the component names, in start order.
var loadServices = []string{"ingest", "evaluator", "timer", "dispatcher"}

// loadGroups are the consumer groups whose lag is sampled (stats runs in
// the ingest process).
var loadGroups = []string{"hookstream-ingest", "hookstream-evaluator", "hookstream-timer", "hookstream-dispatcher", "hookstream-stats"}

// TestLoad pushes a paced stream through the multi-process deployment and
// reports end-to-end latency, lag and RSS over time. It asserts only what
// holds on any machine: every owed webhook arrives, no cause gets two
// webhook ids, signatures verify, the figures exist, and (full form) the
// services' memory plateaus. It never asserts a speed.
func TestLoad(t *testing.T) {
	cfg, explicit := loadSettings()
	if raceEnabled && !cfg.short && !explicit {
		t.Skip("the full load run measures the binary users run: run it without -race (make load)")
	}
	started := time.Now()
	out := os.Stdout
	fmt.Fprintf(out, "\n== load: %d events/s for %v, %d users, trigger ratio %.3f, cart window %v, seed %d, broker cleaner backoff %v (short=%v, race=%v, GOMAXPROCS=%d, %d CPUs)\n",
		cfg.rate, cfg.duration, cfg.users, cfg.ratio, cfg.window, cfg.seed, cmp.Or(cfg.cleaner, 500*time.Millisecond), cfg.short, raceEnabled, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Fprintf(out, "== load average at start: %s\n", loadAvg())

	kc := kafkatest.New(t)
	loadSlowCleaner(t, kc.Addr(), cfg.cleaner)
	redis := redistest.StartReal(t)
	recv := newLoadReceiver(t)
	t.Setenv("LOAD_SIGNING_SECRET", signingSecret)

	base := t.TempDir()
	extra := []string{"-redis.addr=" + redis, "-dispatcher.allow-private-networks=true", "-log.level=info"}
	procs := map[string]*serveProcess{}
	for _, target := range loadServices {
		procs[target] = startServeWith(t, target, kc.Addr(), filepath.Join(base, target), "", extra...)
	}
	api := "http://" + procs["ingest"].http
	dir := t.TempDir()
	manifests := fmt.Sprintf(loadCampaigns, recv.URL, cfg.window)
	if err := os.WriteFile(filepath.Join(dir, "load.yaml"), []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(binary, "apply", "-f", dir, "--server", api).CombinedOutput(); err != nil {
		t.Fatalf("hookstream apply: %v\n%s", err, b)
	}

	prod := newLoadProducer(t, kc.Addr(), cfg)
	// Warm up: one purchase through the whole pipeline, so that every
	// consumer has joined its group and every catalog has the campaigns
	// before the clock starts.
	warm := time.Now()
	prod.warmUp(t, recv, 60*time.Second)
	time.Sleep(time.Second) // the other catalogs follow the topic within a poll
	fmt.Fprintf(out, "== services ready and warm in %v (start to first webhook %v)\n", time.Since(started).Round(time.Millisecond), time.Since(warm).Round(time.Millisecond))

	sampler := newLoadSampler(t, kc.Addr(), redis, procs, prod, recv)
	ctx, cancel := context.WithCancel(context.Background())
	samplerDone := make(chan struct{})
	go func() { defer close(samplerDone); sampler.run(ctx, cfg.sample) }()
	defer func() { cancel(); <-samplerDone }()

	prod.run(cfg)
	produced := prod.stats()
	fmt.Fprintf(out, "== produced %d events (%d owe a webhook) in %v: %.0f events/s acknowledged (target %d); producer behind target by %d at most\n",
		produced.acked, produced.owed, produced.elapsed.Round(time.Millisecond), float64(produced.acked)/produced.elapsed.Seconds(), cfg.rate, produced.maxBehind)
	if produced.errors > 0 {
		t.Errorf("%d produce errors", produced.errors)
	}

	// Drain: every owed webhook, then long enough after the last event for
	// a wrongly fired cancelled cart to show.
	drainDeadline := time.Now().Add(cfg.drain)
	for recv.missing(prod.expected()) > 0 && time.Now().Before(drainDeadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if rest := time.Until(prod.end.Add(cfg.window + 3*time.Second)); rest > 0 && time.Now().Add(rest).Before(drainDeadline) {
		time.Sleep(rest)
	}
	time.Sleep(2 * time.Second) // duplicates of the last deliveries
	cancel()
	<-samplerDone
	sampler.sample()

	rep := loadReport{cfg: cfg, prod: produced, recv: recv.snapshot(prod.expected(), prod.start, prod.end), samples: sampler.samples(), prodStart: prod.start, prodEnd: prod.end, wall: time.Since(started)}
	rep.print(out)

	// Assertions that hold on any machine.
	if len(rep.samples) < 2 {
		t.Errorf("only %d samples of lag and RSS", len(rep.samples))
	}
	if rep.recv.missing > 0 {
		t.Errorf("%d of %d owed webhooks missing after draining for %v (examples: %v)", rep.recv.missing, rep.recv.owed, cfg.drain, rep.recv.missingExamples)
	}
	if rep.recv.twoIDs > 0 {
		t.Errorf("%d causes were sent under more than one webhook-id", rep.recv.twoIDs)
	}
	if rep.recv.badSignatures > 0 {
		t.Errorf("%d webhooks with a signature that does not verify", rep.recv.badSignatures)
	}
	if rep.recv.unparsed > 0 {
		t.Errorf("%d webhooks whose body did not carry the event's seq and timestamp", rep.recv.unparsed)
	}
	if rep.recv.owed > 0 && len(rep.recv.latency["load-purchase"]) == 0 {
		t.Errorf("no latency figures for load-purchase")
	}
	if !cfg.short {
		for _, g := range rep.rssGrowth() {
			// The harness holds the broker's every record in memory and
			// Redis keeps a dedupe key per webhook for dedupe_ttl: both
			// grow by design and are reported, not judged.
			if g.name != "harness" && g.name != "redis" && g.grew(cfg) {
				t.Errorf("%s memory did not plateau: mean RSS %.1f MiB over the middle third, %.1f MiB over the last (limit +%.0f%% and +%d MiB; %s)",
					g.name, g.middle, g.last, cfg.growth*100, cfg.growthMiB, g.how)
			}
		}
	}
}

// loadSlowCleaner sets the in-process broker's log.cleaner.backoff.ms.
// kfake compacts every compacted partition (here the evaluator's changelog
// and the timers) in full on its single request loop; kafkatest's 500ms
// made that pass, growing with the topics, the largest CPU cost of the
// harness (58 % of the test process in a profile at 5,000 events/s) and a
// stall of every produce and fetch while it runs, which real Kafka's
// background cleaner never is. A minute keeps compaction going without
// letting the stand-in broker dominate the two cores.
func loadSlowCleaner(t *testing.T, broker string, every time.Duration) {
	t.Helper()
	if every <= 0 {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ms := strconv.FormatInt(every.Milliseconds(), 10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := kadm.NewClient(cl).AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.cleaner.backoff.ms", Value: &ms}}, 0)
	if err == nil && len(res) > 0 {
		err = res[0].Err
	}
	if err != nil {
		t.Fatalf("setting the broker's log.cleaner.backoff.ms: %v", err)
	}
}
