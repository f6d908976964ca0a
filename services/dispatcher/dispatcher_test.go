package dispatcher

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

type receiver struct {
	*httptest.Server
	status int
	mu     sync.Mutex
	ids    []string
}

func newReceiver(t *testing.T, status int) *receiver {
	r := &receiver{status: status}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.ids = append(r.ids, req.Header.Get("webhook-id"))
		r.mu.Unlock()
		w.WriteHeader(r.status)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ids...)
}

type env struct {
	cfg    kafka.Config
	client *kgo.Client
}

// start runs a dispatcher over a test broker and the given Redis, with a
// campaign sending to ok and one sending to failing.
func start(t *testing.T, redisAddr string, ok, failing *receiver) *env {
	t.Helper()
	kc := kafkatest.New(t)
	cfg := kc.Config()
	cat := catalogtest.New(t, cfg, fmt.Sprintf(`
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: ok}
spec: {url: %s/hook}
---
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: failing}
spec: {url: %s/hook}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: good}
spec:
  webhook: ok
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: bad}
spec:
  webhook: failing
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what: {payload: {profileVariables: [Identity]}}
`, ok.URL, failing.URL))
	var dcfg Config
	dcfg.RegisterFlags(flag.NewFlagSet("d", flag.ContinueOnError))
	dcfg.AllowPrivateNetworks = true
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb := redisconn.Open(redisconn.Config{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	d, err := New(dcfg, cfg, log, cat.Catalog, rdb, noop.NewMeterProvider().Meter("t"))
	if err != nil {
		t.Fatal(err)
	}
	svc := d.Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := kafka.NewClient(cfg, log, "test", kgo.ConsumeTopics(cfg.Topics().Deliveries), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &env{cfg: cfg, client: cl}
}

func (e *env) send(t *testing.T, trs ...*hookstreamv1.Trigger) {
	t.Helper()
	var recs []*kgo.Record
	for _, tr := range trs {
		v, _ := proto.Marshal(tr)
		recs = append(recs, &kgo.Record{Topic: e.cfg.Topics().Triggers, Key: []byte(tr.Identity), Value: v})
	}
	if err := kafka.ProduceSync(context.Background(), e.client, recs...); err != nil {
		t.Fatal(err)
	}
}

// deliveries reads n delivery records.
func (e *env) deliveries(t *testing.T, n int) []*hookstreamv1.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*hookstreamv1.Delivery
	for len(out) < n {
		fs := e.client.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d delivery records, want %d", len(out), n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			var d hookstreamv1.Delivery
			if err := proto.Unmarshal(r.Value, &d); err != nil {
				t.Fatal(err)
			}
			out = append(out, &d)
		})
	}
	return out
}

func TestDispatcher(t *testing.T) {
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			ok, failing := newReceiver(t, http.StatusOK), newReceiver(t, http.StatusBadRequest)
			e := start(t, redistest.Start(t, b), ok, failing)
			trig := func(id, campaign string, control bool) *hookstreamv1.Trigger {
				return &hookstreamv1.Trigger{Id: id, Campaign: campaign, Identity: "u-" + id, Control: control}
			}
			// A delivered trigger, the same trigger again, a control user,
			// and one whose endpoint refuses it.
			e.send(t, trig("t1", "good", false), trig("t2", "good", true), trig("t3", "bad", false))
			first := e.deliveries(t, 3)
			e.send(t, trig("t1", "good", false))
			all := append(first, e.deliveries(t, 1)...)

			byID := map[string][]*hookstreamv1.Delivery{}
			for _, d := range all {
				byID[d.WebhookId] = append(byID[d.WebhookId], d)
			}
			if d := byID["t1"]; len(d) != 2 || d[0].Status != hookstreamv1.Delivery_STATUS_DELIVERED || d[0].HttpStatus != 200 ||
				d[1].Status != hookstreamv1.Delivery_STATUS_SUPPRESSED || d[1].SuppressionReason != "duplicate" {
				t.Errorf("t1 deliveries = %v, want delivered then suppressed as duplicate", d)
			}
			if d := byID["t2"]; len(d) != 1 || d[0].SuppressionReason != "control" {
				t.Errorf("t2 (control) deliveries = %v", d)
			}
			if d := byID["t3"]; len(d) != 1 || d[0].Status != hookstreamv1.Delivery_STATUS_FAILED || d[0].HttpStatus != 400 {
				t.Errorf("t3 deliveries = %v, want failed with 400", d)
			}
			if got := ok.got(); len(got) != 1 || got[0] != "t1" {
				t.Errorf("healthy receiver got %v, want exactly [t1]", got)
			}
			if got := failing.got(); len(got) != 1 || got[0] != "t3" {
				t.Errorf("refusing receiver got %v, want [t3]", got)
			}
		})
	}
}
