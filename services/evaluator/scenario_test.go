package evaluator

import (
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"sort"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

const webhookYAML = `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
---
`

var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// scenario drives the engine directly with an injected clock. Timer commands
// it emits are kept here and fed back as firings when the clock passes
// them, as the timer service does.
type scenario struct {
	t      *testing.T
	eng    *engine
	cat    *catalogtest.Catalog
	users  map[string]*user
	mu     sync.Mutex
	now    time.Time
	timers map[string]*hookstreamv1.TimerCommand
	trs    []*hookstreamv1.Trigger
	convs  []*hookstreamv1.Conversion
	n      int
}

func newScenario(t *testing.T, campaigns string) *scenario {
	kc := kafkatest.New(t)
	cfg := kc.Config()
	s := &scenario{t: t, users: map[string]*user{}, now: t0, timers: map[string]*hookstreamv1.TimerCommand{}}
	s.cat = catalogtest.New(t, cfg, webhookYAML+campaigns)
	var ec Config
	ec.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	m, err := newMetrics(noop.NewMeterProvider().Meter("t"))
	if err != nil {
		t.Fatal(err)
	}
	s.eng = &engine{cfg: ec, topics: cfg.Topics(), cat: s.cat.Catalog, now: s.clock, log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m, tracer: tracenoop.NewTracerProvider().Tracer("t")}
	return s
}

func (s *scenario) clock() time.Time { s.mu.Lock(); defer s.mu.Unlock(); return s.now }

func (s *scenario) user(id string) *user {
	if s.users[id] == nil {
		s.users[id], _ = newUser(id, nil)
	}
	return s.users[id]
}

func (s *scenario) apply(ev *hookstreamv1.Event) {
	s.t.Helper()
	// Round-trip the state through its encoding, as Pebble does.
	u := s.user(ev.Identity)
	b, err := u.encode()
	if err != nil {
		s.t.Fatal(err)
	}
	// Through the generated type too: the state must stay a UserState.
	st := &hookstreamv1.UserState{}
	if err := proto.Unmarshal(b, st); err != nil {
		s.t.Fatal(err)
	}
	if b, err = proto.Marshal(st); err != nil {
		s.t.Fatal(err)
	}
	if s.users[ev.Identity], err = newUser(ev.Identity, b); err != nil {
		s.t.Fatal(err)
	}
	var out output
	if err := s.eng.apply(s.users[ev.Identity], ev, &out); err != nil {
		s.t.Fatal(err)
	}
	if err := s.users[ev.Identity].err; err != nil {
		s.t.Fatal(err)
	}
	s.trs = append(s.trs, triggersOf(s.t, &out)...)
	s.convs = append(s.convs, out.conversions...)
	for _, r := range out.timers {
		if r.Value == nil {
			delete(s.timers, string(r.Key))
			continue
		}
		var c hookstreamv1.TimerCommand
		if err := proto.Unmarshal(r.Value, &c); err != nil {
			s.t.Fatal(err)
		}
		s.timers[c.Id] = &c
	}
}

func (s *scenario) event(identity, name string, ts time.Time, props map[string]any) string {
	s.n++
	id := name + "-" + identity + "-" + ts.Format("150405") + "-" + string(rune('a'+s.n%26))
	b, _ := json.Marshal(props)
	s.apply(&hookstreamv1.Event{Kind: hookstreamv1.Event_KIND_EVENT, Id: id, Identity: identity, Name: name, TsMs: ts.UnixMilli(), PropertiesJson: b})
	return id
}

func (s *scenario) profile(identity string, props map[string]any) {
	b, _ := json.Marshal(props)
	s.apply(&hookstreamv1.Event{Kind: hookstreamv1.Event_KIND_PROFILE, Identity: identity, TsMs: s.clock().UnixMilli(), PropertiesJson: b})
}

// advance moves the clock and fires every due timer, in due order.
func (s *scenario) advance(to time.Time) {
	s.mu.Lock()
	s.now = to
	s.mu.Unlock()
	for {
		var due []*hookstreamv1.TimerCommand
		for _, c := range s.timers {
			if c.DueMs <= to.UnixMilli() {
				due = append(due, c)
			}
		}
		if len(due) == 0 {
			return
		}
		sort.Slice(due, func(i, j int) bool { return due[i].DueMs < due[j].DueMs })
		c := due[0]
		delete(s.timers, c.Id)
		var ev hookstreamv1.Event
		if err := proto.Unmarshal(c.Payload, &ev); err != nil {
			s.t.Fatal(err)
		}
		s.apply(&ev)
	}
}

// fired returns the campaigns of the triggers since the last call, with
// the cause ids, and forgets them.
func (s *scenario) fired() []*hookstreamv1.Trigger {
	out := s.trs
	s.trs = nil
	return out
}

func (s *scenario) expect(n int, what string) []*hookstreamv1.Trigger {
	s.t.Helper()
	got := s.fired()
	if len(got) != n {
		var names []string
		for _, t := range got {
			names = append(names, t.Campaign+"("+t.CauseEventId+")")
		}
		s.t.Fatalf("%s: %d triggers %v, want %d", what, len(got), names, n)
	}
	return got
}

func TestSingleAction(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Charged, where: [{property: Amount, op: gte, value: 100}]}}
  what: {payload: {profileVariables: [Identity]}}
`)
	id := s.event("u", "Charged", t0, map[string]any{"Amount": 150})
	trs := s.expect(1, "matching event")
	if trs[0].Id != TriggerID("c", id) || trs[0].Identity != "u" || trs[0].TriggerType != "single_action" {
		t.Fatalf("trigger %+v", trs[0])
	}
	s.event("u", "Charged", t0.Add(time.Minute), map[string]any{"Amount": 50})
	s.expect(0, "filtered by where")
	s.event("u", "Charged", t0.Add(2*time.Minute), map[string]any{"Amount": 500})
	s.expect(1, "fires again for each matching event")
	// A redelivered event (same id) is not judged twice.
	b, _ := json.Marshal(map[string]any{"Amount": 150})
	s.apply(&hookstreamv1.Event{Kind: hookstreamv1.Event_KIND_EVENT, Id: id, Identity: "u", Name: "Charged", TsMs: t0.UnixMilli(), PropertiesJson: b})
	s.expect(0, "duplicate event id")
}

func TestActions(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: any-order}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: actions, actions: [{event: A}, {event: B}], within: 1h}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: in-order}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: actions, actions: [{event: A}, {event: B}], within: 1h, ordered: true}
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("u1", "B", t0, nil)
	s.event("u1", "A", t0.Add(10*time.Minute), nil)
	if got := s.expect(1, "B then A"); got[0].Campaign != "any-order" {
		t.Fatalf("B then A fired %s; only the unordered campaign should", got[0].Campaign)
	}
	s.event("u1", "B", t0.Add(20*time.Minute), nil)
	if got := s.expect(1, "A then B completes the ordered set"); got[0].Campaign != "in-order" {
		t.Fatalf("fired %s", got[0].Campaign)
	}
	// Once per completion: the unordered set starts over after firing.
	s.event("u1", "B", t0.Add(25*time.Minute), nil)
	s.expect(0, "a repeated B alone")
	s.event("u2", "A", t0, nil)
	s.event("u2", "B", t0.Add(2*time.Hour), nil)
	s.expect(0, "outside the window")
}

const cartAbandon = `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart}
    inaction: {event: Charged}
    matchOn: [ProductId]
    within: 30m
  what: {payload: {profileVariables: [Identity]}}
`

func TestInactionWithinTime(t *testing.T) {
	s := newScenario(t, cartAbandon)
	a := s.event("u", "Added To Cart", t0, map[string]any{"ProductId": "p1"})
	s.advance(t0.Add(29 * time.Minute))
	s.expect(0, "before the window ends")
	s.advance(t0.Add(30 * time.Minute))
	trs := s.expect(1, "no purchase within 30m")
	if trs[0].Id != TriggerID("cart", "timer:"+a) || trs[0].TsMs != t0.Add(30*time.Minute).UnixMilli() || trs[0].CauseEventId != a {
		t.Fatalf("trigger %+v", trs[0])
	}

	t1 := t0.Add(time.Hour)
	s.advance(t1)
	s.event("u", "Added To Cart", t1, map[string]any{"ProductId": "p1"})
	s.event("u", "Added To Cart", t1, map[string]any{"ProductId": "p2"})
	s.event("u", "Charged", t1.Add(5*time.Minute), map[string]any{"ProductId": "p2"})
	s.advance(t1.Add(31 * time.Minute))
	if trs := s.expect(1, "only the product bought is cancelled (matchOn)"); string(trs[0].CauseEventPropertiesJson) != `{"ProductId":"p1"}` {
		t.Fatalf("fired for %s", trs[0].CauseEventPropertiesJson)
	}

	// A repeated action moves the timer forward; one trigger.
	t2 := t0.Add(3 * time.Hour)
	s.advance(t2)
	s.event("u", "Added To Cart", t2, map[string]any{"ProductId": "p3"})
	s.event("u", "Added To Cart", t2.Add(20*time.Minute), map[string]any{"ProductId": "p3"})
	s.advance(t2.Add(35 * time.Minute))
	s.expect(0, "moved by the repeated action")
	s.advance(t2.Add(50 * time.Minute))
	s.expect(1, "fires once at the moved time")

	// An inaction event earlier than its action does not cancel; one that
	// happened after it but arrived first (out of order) does.
	t3 := t0.Add(6 * time.Hour)
	s.advance(t3)
	s.event("u", "Charged", t3.Add(-time.Minute), map[string]any{"ProductId": "p4"})
	s.event("u", "Added To Cart", t3, map[string]any{"ProductId": "p4"})
	s.event("u", "Charged", t3.Add(10*time.Minute), map[string]any{"ProductId": "p5"})
	s.event("u", "Added To Cart", t3, map[string]any{"ProductId": "p5"})
	s.advance(t3.Add(31 * time.Minute))
	if trs := s.expect(1, "earlier purchase does not cancel; later one does"); string(trs[0].CauseEventPropertiesJson) != `{"ProductId":"p4"}` {
		t.Fatalf("fired for %s", trs[0].CauseEventPropertiesJson)
	}

	// Late actions: one whose window has passed fires through the timer
	// service, after the events queued behind it (one of which may cancel
	// it); older than the lateness (1h) is dropped.
	t4 := t0.Add(10 * time.Hour)
	s.advance(t4)
	s.event("u", "Added To Cart", t4.Add(-40*time.Minute), map[string]any{"ProductId": "late"})
	s.expect(0, "late action: not fired before the events queued behind it")
	s.advance(t4)
	s.expect(1, "late action whose window has passed fires once its timer comes back")
	s.event("u", "Added To Cart", t4.Add(-40*time.Minute), map[string]any{"ProductId": "late-bought"})
	s.event("u", "Charged", t4.Add(-35*time.Minute), map[string]any{"ProductId": "late-bought"})
	s.advance(t4)
	s.expect(0, "late action bought within its window, read after it (evaluator behind)")
	s.event("u", "Added To Cart", t4.Add(-2*time.Hour), map[string]any{"ProductId": "too-late"})
	s.expect(0, "action older than the lateness")
}

func TestInaction(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: never-bought}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: inaction, action: {event: App Launched}, inaction: {event: Charged}, lookback: 30d}
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("new", "App Launched", t0, nil)
	s.expect(1, "never charged")
	s.event("old-buyer", "Charged", t0.Add(-40*24*time.Hour), nil)
	s.event("old-buyer", "App Launched", t0, nil)
	s.expect(1, "charged before the look-back")
	s.event("buyer", "Charged", t0.Add(-10*24*time.Hour), nil)
	s.event("buyer", "App Launched", t0, nil)
	s.expect(0, "charged within the look-back")
}

func TestDateTimeProperty(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: after-delivery}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: date_time_property
    property: {source: event, event: Order Shipped, name: DeliveryDate}
    offset: 3d
    at: "10:00"
    timezone: Asia/Kolkata
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: renewal}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: date_time_property
    property: {source: profile, name: RenewalDate}
    offset: -1d
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("u", "Order Shipped", t0, map[string]any{"DeliveryDate": "2026-11-30T12:00:00Z"})
	kolkata, _ := time.LoadLocation("Asia/Kolkata")
	want := time.Date(2026, 12, 3, 10, 0, 0, 0, kolkata)
	s.advance(want.Add(-time.Second))
	s.expect(0, "before 10:00 Kolkata three days after delivery")
	s.advance(want)
	if trs := s.expect(1, "at 10:00 Kolkata"); trs[0].TsMs != want.UnixMilli() {
		t.Fatalf("fired for %v, want %v", time.UnixMilli(trs[0].TsMs).In(kolkata), want)
	}

	// Profile source: a change reschedules, a removal cancels.
	s.advance(t0)
	s.profile("p", map[string]any{"RenewalDate": "2026-12-10T00:00:00Z"})
	s.profile("p", map[string]any{"RenewalDate": "2026-12-20T00:00:00Z"})
	s.advance(time.Date(2026, 12, 15, 0, 0, 0, 0, time.UTC))
	s.expect(0, "the first date was replaced")
	s.advance(time.Date(2026, 12, 19, 0, 0, 0, 0, time.UTC))
	s.expect(1, "one day before the new date")
	s.profile("q", map[string]any{"RenewalDate": "2027-01-10T00:00:00Z"})
	s.profile("q", map[string]any{"RenewalDate": nil})
	s.advance(time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC))
	s.expect(0, "removed property cancels")
}

func TestDateDueAcrossDST(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	tests := []struct {
		value string
		at    string
		want  time.Time
	}{
		// 2026-03-08 02:30 does not exist in New York (02:00 → 03:00):
		// it fires at 03:00 EDT.
		{"2026-03-08", "02:30", time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC)},
		// 2026-11-01 01:30 happens twice; it fires once, at the first.
		{"2026-11-01", "01:30", time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC)},
		{"2026-07-04", "09:00", time.Date(2026, 7, 4, 13, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := dateDue(mustTrigger(t, tt.at, "America/New_York"), tt.value, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(tt.want) {
			t.Errorf("%s at %s: due %v, want %v", tt.value, tt.at, got.In(ny), tt.want.In(ny))
		}
	}
}

func TestActionsWithUserPropertiesAndAudience(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: frequent}
spec: {event: {name: App Launched, count: {gte: 3}, in: 7d}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: canada-charge}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: actions_with_user_properties, action: {event: Charged}, profile: [{property: Country, op: eq, value: Canada}]}
  who: {segment: frequent}
  what: {payload: {profileVariables: [Identity]}}
`)
	s.profile("u", map[string]any{"Country": "Canada"})
	for i := 0; i < 2; i++ {
		s.event("u", "App Launched", t0.Add(time.Duration(i)*time.Hour), nil)
	}
	s.event("u", "Charged", t0.Add(3*time.Hour), nil)
	s.expect(0, "not in the segment yet (2 launches)")
	s.event("u", "App Launched", t0.Add(4*time.Hour), nil)
	s.event("u", "Charged", t0.Add(5*time.Hour), nil)
	s.expect(1, "3 launches in 7 days and Canadian")
	s.profile("u", map[string]any{"Country": "India"})
	s.event("u", "Charged", t0.Add(6*time.Hour), nil)
	s.expect(0, "the profile as it is at the event")
}

func TestPausedEditedControlAndConversions(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: promo}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Viewed}}
  controlGroup: {percent: 50}
  goal: {event: Charged, within: 1d}
  what: {payload: {profileVariables: [Identity]}}
`)
	var test, control string
	for i := 0; test == "" || control == ""; i++ {
		id := "user-" + string(rune('a'+i))
		s.event(id, "Viewed", t0, nil)
		if tr := s.expect(1, "exposure"); tr[0].Control {
			control = id
		} else {
			test = id
		}
	}
	s.event(test, "Charged", t0.Add(time.Hour), nil)
	s.event(control, "Charged", t0.Add(2*24*time.Hour), nil)
	if len(s.convs) != 1 || s.convs[0].Identity != test || s.convs[0].Control {
		t.Fatalf("conversions %+v, want one for the test user within a day", s.convs)
	}
	s.fired()

	// Pause: nothing fires. Edit (resume with a where): applies to later events.
	c, _ := s.cat.Campaign("promo")
	paused := *c
	paused.Spec.State = "paused"
	if _, err := s.cat.Writer.Apply(t.Context(), toObjects(&paused), false); err != nil {
		t.Fatal(err)
	}
	s.event("x", "Viewed", t0, nil)
	s.expect(0, "paused")
	s.cat.Apply(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: promo}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Viewed, where: [{property: Page, op: eq, value: pricing}]}}
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("x", "Viewed", t0, map[string]any{"Page": "home"})
	s.expect(0, "edited where")
	s.event("x", "Viewed", t0, map[string]any{"Page": "pricing"})
	if tr := s.expect(1, "edited campaign"); tr[0].CampaignGeneration < 2 {
		t.Fatalf("generation %d, want the edited one", tr[0].CampaignGeneration)
	}
}

func TestScheduledRun(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: winback}
spec:
  webhook: crm
  delivery: {type: scheduled, recurring: {every: month, day: 7, time: "09:00", timezone: Asia/Kolkata}}
  trigger: {type: inaction, action: {event: App Launched, in: 30d}, inaction: {event: Charged}}
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("launched", "App Launched", t0.Add(-5*24*time.Hour), nil)
	s.event("bought", "App Launched", t0.Add(-5*24*time.Hour), nil)
	s.event("bought", "Charged", t0.Add(-4*24*time.Hour), nil)
	s.event("long-ago", "App Launched", t0.Add(-60*24*time.Hour), nil)
	c, _ := s.cat.Campaign("winback")
	run := func() []string {
		var out output
		for _, id := range []string{"launched", "bought", "long-ago"} {
			s.eng.scheduledRun(s.user(id), c, t0.UnixMilli(), &out)
		}
		var ids []string
		for _, tr := range triggersOf(t, &out) {
			ids = append(ids, tr.Identity+" "+tr.Id)
		}
		return ids
	}
	first := run()
	if len(first) != 1 || first[0][:len("launched")] != "launched" {
		t.Fatalf("run targeted %v, want only the user who launched and did not buy", first)
	}
	if again := run(); again[0] != first[0] {
		t.Fatalf("the same run gave another id: %v vs %v", again, first)
	}
}

func mustTrigger(t *testing.T, at, tz string) *manifest.Trigger {
	t.Helper()
	return &manifest.Trigger{At: at, Timezone: tz}
}

func toObjects(objs ...manifest.Object) []manifest.Object { return objs }

// Two events ingested together get the same time; an ordered set whose
// steps share a timestamp still completes.
func TestActionsOrderedSameTimestamp(t *testing.T) {
	s := newScenario(t, `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: viewed-then-wishlisted}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: actions
    actions:
      - {event: Product Viewed}
      - {event: Added To Wishlist, where: [{property: Price, op: gte, value: 50}]}
    within: 1h
    ordered: true
  what: {payload: {profileVariables: [Identity]}}
`)
	s.event("bob", "Product Viewed", t0, map[string]any{"ProductId": "p-1"})
	s.event("bob", "Added To Wishlist", t0, map[string]any{"ProductId": "p-1", "Price": 80})
	s.expect(1, "viewed then wishlisted at the same instant")
}

// triggersOf decodes the triggers of out.
func triggersOf(t testing.TB, out *output) []*hookstreamv1.Trigger {
	t.Helper()
	var trs []*hookstreamv1.Trigger
	for _, r := range out.triggers {
		tr := &hookstreamv1.Trigger{}
		if err := proto.Unmarshal(r.Value, tr); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != tr.Identity {
			t.Fatalf("trigger for %s keyed %s", tr.Identity, r.Key)
		}
		trs = append(trs, tr)
	}
	return trs
}
