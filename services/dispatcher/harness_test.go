package dispatcher

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
	"github.com/hookstream/hookstream/services/timer"
)

// testLogger discards logs unless HOOKSTREAM_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("HOOKSTREAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// clock is real time plus an offset that tests move forward, shared by the
// dispatcher and the timer service: waits in memory still pass, and a
// timer is fired by jumping past its due time.
type clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.offset += d; c.mu.Unlock() }

// receiver is a real HTTP endpoint whose answer tests change.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	status  int
	headers map[string]string
	delay   time.Duration
	block   chan struct{} // while non-nil and open, requests hang
	got     []received
}

type received struct {
	header http.Header
	body   []byte
	url    string
	at     time.Time
}

func newReceiver(t testing.TB, status int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{req.Header.Clone(), body, req.URL.String(), time.Now()})
		status, delay, block, headers := r.status, r.delay, r.block, r.headers
		r.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-req.Context().Done():
			}
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-req.Context().Done():
			}
		}
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "answer %d", status)
	}))
	t.Cleanup(func() {
		r.mu.Lock()
		if r.block != nil {
			close(r.block)
			r.block = nil
		}
		r.mu.Unlock()
		r.Close()
	})
	return r
}

func (r *receiver) set(status int, headers map[string]string) {
	r.mu.Lock()
	r.status, r.headers = status, headers
	r.mu.Unlock()
}

func (r *receiver) hang() {
	r.mu.Lock()
	r.block = make(chan struct{})
	r.mu.Unlock()
}

func (r *receiver) release() {
	r.mu.Lock()
	if r.block != nil {
		close(r.block)
		r.block = nil
	}
	r.mu.Unlock()
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

func (r *receiver) ids() []string {
	var out []string
	for _, q := range r.requests() {
		out = append(out, q.header.Get("webhook-id"))
	}
	return out
}

// env is a dispatcher over a test broker, a Redis, and a real timer
// service, with a reader of everything the dispatcher writes.
type env struct {
	t      testing.TB
	kcfg   kafka.Config
	cat    *catalogtest.Catalog
	rdb    *redis.Client
	clock  *clock
	client *kgo.Client
	d      *Dispatcher
	svc    *service.Service

	mu         sync.Mutex
	deliveries []*hookstreamv1.Delivery
	dlq        []*hookstreamv1.Delivery
	timers     []*hookstreamv1.TimerCommand
}

type envOptions struct {
	cfg      func(*Config)
	redis    string // address; default: a new server of the backend
	noTimer  bool
	manifest string
	hook     redis.Hook // added to the dispatcher's Redis client
	noReader bool       // do not read back what the dispatcher writes (benchmarks)
	kafka    func(*kafka.Config)
}

func baseConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("d", flag.ContinueOnError))
	c.AllowPrivateNetworks = true
	c.CommitInterval.Set("100ms") //nolint:errcheck // constant
	return c
}

func newEnv(t testing.TB, b redistest.Backend, o envOptions) *env {
	t.Helper()
	kc := kafkatest.New(t)
	kcfg := kc.Config()
	if o.kafka != nil {
		o.kafka(&kcfg)
	}
	cat := catalogtest.New(t, kcfg, o.manifest)
	addr := o.redis
	if addr == "" {
		addr = redistest.Start(t, b)
	}
	rdb := redisconn.Open(redisconn.Config{Addr: addr})
	if o.hook != nil {
		rdb.AddHook(o.hook)
	}
	t.Cleanup(func() { rdb.Close() })
	e := &env{t: t, kcfg: kcfg, cat: cat, rdb: rdb, clock: &clock{}}
	log := testLogger()
	if !o.noTimer {
		var tcfg timer.Config
		tcfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
		tcfg.DataDir = t.TempDir()
		tcfg.Tick.Set("50ms") //nolint:errcheck // constant
		ts, err := timer.New(tcfg, kcfg, log, noop.NewMeterProvider().Meter("t"), nil, e.clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		startService(t, ts.Service())
	}
	cfg := baseConfig()
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	d, err := New(cfg, kcfg, log, cat.Catalog, rdb, noop.NewMeterProvider().Meter("t"), WithClock(e.clock.Now), WithJitter(func() float64 { return 0 }))
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	e.svc = d.Service()
	startService(t, e.svc)

	var read []kgo.Opt
	if !o.noReader {
		read = append(read, kgo.ConsumeTopics(kcfg.Topics().Deliveries, kcfg.Topics().DispatchDLQ, kcfg.Topics().Timers),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
	cl, err := kafka.NewClient(kcfg, log, "test", read...)
	if err != nil {
		t.Fatal(err)
	}
	e.client = cl
	if o.noReader {
		t.Cleanup(cl.Close)
		return e
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(e.record)
		}
	}()
	t.Cleanup(func() { cl.Close(); <-done })
	return e
}

type lifecycle interface {
	StartAsync(context.Context) error
	AwaitRunning(context.Context) error
	StopAsync()
	AwaitTerminated(context.Context) error
}

func startService(t testing.TB, svc lifecycle) {
	t.Helper()
	if err := svc.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
}

func (e *env) record(r *kgo.Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch r.Topic {
	case e.kcfg.Topics().Deliveries, e.kcfg.Topics().DispatchDLQ:
		var d hookstreamv1.Delivery
		if err := proto.Unmarshal(r.Value, &d); err != nil {
			e.t.Errorf("bad delivery record: %v", err)
			return
		}
		if r.Topic == e.kcfg.Topics().DispatchDLQ {
			e.dlq = append(e.dlq, &d)
		} else {
			e.deliveries = append(e.deliveries, &d)
		}
	case e.kcfg.Topics().Timers:
		if r.Value == nil {
			return
		}
		var c hookstreamv1.TimerCommand
		if err := proto.Unmarshal(r.Value, &c); err == nil && c.Owner == "dispatcher" {
			e.timers = append(e.timers, &c)
		}
	}
}

// send produces triggers, keyed by identity, with optional headers.
func (e *env) send(trs ...*hookstreamv1.Trigger) {
	e.t.Helper()
	e.sendWith(nil, trs...)
}

func (e *env) sendWith(headers []kgo.RecordHeader, trs ...*hookstreamv1.Trigger) {
	e.t.Helper()
	var recs []*kgo.Record
	for _, tr := range trs {
		v, _ := proto.Marshal(tr)
		recs = append(recs, &kgo.Record{Topic: e.kcfg.Topics().Triggers, Key: []byte(tr.Identity), Value: v, Headers: headers})
	}
	if err := kafka.ProduceSync(context.Background(), e.client, recs...); err != nil {
		e.t.Fatal(err)
	}
}

// eventually polls cond for up to 30s.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s\n%s", what, e.dump())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) dump() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var b strings.Builder
	for _, d := range e.deliveries {
		fmt.Fprintf(&b, "  delivery %s %s attempt=%d %s reason=%q http=%d err=%q ids=%v\n", d.Campaign, d.WebhookId, d.Attempt, d.Status, d.SuppressionReason, d.HttpStatus, d.Error, d.Identities)
	}
	for _, d := range e.dlq {
		fmt.Fprintf(&b, "  dlq %s %s attempt=%d %s err=%q\n", d.Campaign, d.WebhookId, d.Attempt, d.Status, d.Error)
	}
	for _, c := range e.timers {
		fmt.Fprintf(&b, "  timer %s due=%s\n", c.Id, time.UnixMilli(c.DueMs).UTC().Format(time.RFC3339Nano))
	}
	return b.String()
}

// of returns the delivery records of a campaign.
func (e *env) of(campaign string) []*hookstreamv1.Delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*hookstreamv1.Delivery
	for _, d := range e.deliveries {
		if d.Campaign == campaign {
			out = append(out, d)
		}
	}
	return out
}

func (e *env) dlqOf(campaign string) []*hookstreamv1.Delivery {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*hookstreamv1.Delivery
	for _, d := range e.dlq {
		if d.Campaign == campaign {
			out = append(out, d)
		}
	}
	return out
}

// timersFor returns the dispatcher's timers whose id starts with prefix.
func (e *env) timersFor(prefix string) []*hookstreamv1.TimerCommand {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []*hookstreamv1.TimerCommand
	for _, c := range e.timers {
		if strings.HasPrefix(c.Id, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// waitRecords waits until campaign has n delivery records and returns them.
func (e *env) waitRecords(campaign string, n int) []*hookstreamv1.Delivery {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%d delivery records of %s", n, campaign), func() bool { return len(e.of(campaign)) >= n })
	return e.of(campaign)
}

func trig(id, campaign, identity string) *hookstreamv1.Trigger {
	return &hookstreamv1.Trigger{Id: id, Campaign: campaign, Identity: identity, CauseEventName: "E", ProfileJson: []byte(`{"Email":"` + identity + `@example.com"}`)}
}

func withProfile(t *hookstreamv1.Trigger, profile string) *hookstreamv1.Trigger {
	t.ProfileJson = []byte(profile)
	return t
}

const webhookDoc = `
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: %s}
spec: {url: "%s/hook", retry: {schedule: [10s, 20s]}%s}
`

const campaignDoc = `
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: %s}
spec:
  webhook: %s
  delivery: {type: triggered%s}
  trigger: {type: single_action, action: {event: E}}
%s
`

// webhookYAML is a Webhook manifest: url is the receiver, extra more spec
// fields in flow style ("maxInFlight: 2").
func webhookYAML(name, url, extra string) string {
	if !strings.Contains(extra, "timeout:") {
		extra = strings.TrimSuffix("timeout: 2s, "+extra, ", ")
	}
	extra = ", " + extra
	return "---" + fmt.Sprintf(webhookDoc, name, url, extra)
}

// campaignYAML is a triggered Campaign manifest; lines are more spec lines
// ("limits: {maxPerDay: 1}"), "what: ..." replacing the default payload of
// Identity and Email, "timezone: X" setting the delivery's time zone.
func campaignYAML(name, webhook string, lines ...string) string {
	var b strings.Builder
	what, zone := false, ""
	for _, l := range lines {
		if z, ok := strings.CutPrefix(l, "timezone: "); ok {
			zone = ", timezone: " + z
			continue
		}
		what = what || strings.HasPrefix(l, "what:")
		b.WriteString("  " + l + "\n")
	}
	if !what {
		b.WriteString("  what: {payload: {profileVariables: [Identity, Email]}}\n")
	}
	return "---" + fmt.Sprintf(campaignDoc, name, webhook, zone, b.String())
}

func status(d *hookstreamv1.Delivery) string {
	s := strings.TrimPrefix(d.Status.String(), "STATUS_")
	if d.SuppressionReason != "" {
		s += ":" + d.SuppressionReason
	}
	return s
}
