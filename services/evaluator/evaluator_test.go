package evaluator

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

const manifests = `
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
---
apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: canadians}
spec: {profile: {property: Country, op: eq, value: Canada}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: big-cart}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: single_action
    action: {event: Added To Cart, where: [{property: Price, op: gte, value: 500}]}
  who: {segment: canadians}
  what: {payload: {profileVariables: [Email, Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: vip-charge}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: actions_with_user_properties
    action: {event: Charged}
    profile: [{property: Tier, op: eq, value: vip}]
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: paused-one}
spec:
  webhook: crm
  state: paused
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Charged}}
  what: {payload: {profileVariables: [Identity]}}
`

type harness struct {
	t      *testing.T
	cfg    kafka.Config
	client *kgo.Client
	out    chan *hookstreamv1.Trigger
	n      int
}

func newHarness(t *testing.T) (*harness, *catalogtest.Catalog) {
	kc := kafkatest.New(t)
	cfg := kc.Config()
	cat := catalogtest.New(t, cfg, manifests)
	cl, err := kafka.NewClient(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test",
		kgo.ConsumeTopics(cfg.Topics().Triggers), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	h := &harness{t: t, cfg: cfg, client: cl, out: make(chan *hookstreamv1.Trigger, 100)}
	go func() {
		for {
			fs := cl.PollFetches(context.Background())
			if fs.IsClientClosed() {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				var tr hookstreamv1.Trigger
				if err := proto.Unmarshal(r.Value, &tr); err == nil {
					h.out <- &tr
				}
			})
		}
	}()
	return h, cat
}

func (h *harness) start(dir string, cat *catalogtest.Catalog) *service.Service {
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	cfg.DataDir = dir
	e, err := New(cfg, h.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), cat.Catalog, noop.NewMeterProvider().Meter("t"), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	svc := e.Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		h.t.Fatal(err)
	}
	return svc
}

func (h *harness) event(kind hookstreamv1.Event_Kind, identity, name string, props map[string]any) string {
	h.n++
	b, _ := json.Marshal(props)
	ev := &hookstreamv1.Event{Kind: kind, Id: "e" + string(rune('a'+h.n)), Identity: identity, Name: name, TsMs: time.Date(2026, 11, 27, 10, 0, h.n, 0, time.UTC).UnixMilli(), PropertiesJson: b}
	v, _ := proto.Marshal(ev)
	if err := kafka.ProduceSync(context.Background(), h.client, &kgo.Record{Topic: h.cfg.Topics().Events, Key: []byte(identity), Value: v}); err != nil {
		h.t.Fatal(err)
	}
	return ev.Id
}

func (h *harness) expect(want ...[2]string) {
	h.t.Helper()
	for _, w := range want {
		select {
		case tr := <-h.out:
			if tr.Campaign != w[0] || tr.CauseEventId != w[1] {
				h.t.Fatalf("trigger %s for %s, want %s for %s", tr.Campaign, tr.CauseEventId, w[0], w[1])
			}
			if tr.Id != TriggerID(tr.Campaign, tr.CauseEventId) {
				h.t.Fatalf("trigger id %q is not deterministic", tr.Id)
			}
		case <-time.After(20 * time.Second):
			h.t.Fatalf("no trigger for %v", w)
		}
	}
	select {
	case tr := <-h.out:
		h.t.Fatalf("unexpected trigger %s for %s", tr.Campaign, tr.CauseEventId)
	case <-time.After(500 * time.Millisecond):
	}
}

func TestEvaluatorDecisions(t *testing.T) {
	h, cat := newHarness(t)
	dir := t.TempDir()
	svc := h.start(dir, cat)
	const E, P = hookstreamv1.Event_KIND_EVENT, hookstreamv1.Event_KIND_PROFILE

	// Not Canadian yet: no trigger. Then the profile says Canada.
	h.event(E, "u-1", "Added To Cart", map[string]any{"Price": 899})
	h.expect()
	h.event(P, "u-1", "", map[string]any{"Country": "Canada", "Tier": "vip"})
	h.event(E, "u-1", "Added To Cart", map[string]any{"Price": 20}) // below the where: no trigger
	big := h.event(E, "u-1", "Added To Cart", map[string]any{"Price": 899})
	charged := h.event(E, "u-1", "Charged", map[string]any{"Amount": 899})
	h.expect([2]string{"big-cart", big}, [2]string{"vip-charge", charged}) // paused-one never fires

	// The profile survives a restart on the same disk.
	svc.StopAsync()
	if err := svc.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.start(dir, cat)
	again := h.event(E, "u-1", "Added To Cart", map[string]any{"Price": 501})
	h.expect([2]string{"big-cart", again})

	// Resuming the paused campaign applies to later events; a profile
	// property set to null is removed.
	c, _ := cat.Campaign("paused-one")
	resumed := *c
	resumed.Spec.State = manifest.StateActive
	if _, err := cat.Writer.Apply(context.Background(), []manifest.Object{&resumed}, false); err != nil {
		t.Fatal(err)
	}
	h.event(P, "u-1", "", map[string]any{"Tier": nil})
	later := h.event(E, "u-1", "Charged", map[string]any{})
	h.expect([2]string{"paused-one", later})
}

func TestControlGroupIsDeterministic(t *testing.T) {
	c := &manifest.Campaign{Metadata: manifest.Metadata{Name: "c"}, Spec: manifest.CampaignSpec{ControlGroup: &manifest.ControlGroup{Percent: 10}}}
	in := 0
	for i := 0; i < 10000; i++ {
		id := "user-" + string(rune(i))
		if InControlGroup(c, id) != InControlGroup(c, id) {
			t.Fatal("assignment not deterministic")
		}
		if InControlGroup(c, id) {
			in++
		}
	}
	if in < 800 || in > 1200 {
		t.Fatalf("%d of 10000 users in a 10%% control group", in)
	}
	c.Spec.ControlGroup.Percent = 0
	if InControlGroup(c, "x") {
		t.Fatal("0% control group holds users back")
	}
}
