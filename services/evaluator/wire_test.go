package evaluator

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// withUnknown adds a field this version does not know to m, as a newer
// version would have written it.
func withUnknown[M proto.Message](m M, num protowire.Number) M {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	b = protowire.AppendString(b, "from a newer version")
	m.ProtoReflect().SetUnknown(b)
	return m
}

func sampleState() *hookstreamv1.UserState {
	return withUnknown(&hookstreamv1.UserState{
		ProfileJson: []byte(`{"Country":"Canada","Score":7}`),
		Events: []*hookstreamv1.EventStats{
			{Name: "Viewed", FirstMs: 1_700_000_000_000, LastMs: 1_700_000_500_000,
				Days: []*hookstreamv1.DayCount{{Day: 19675, Count: 2}, withUnknown(&hookstreamv1.DayCount{Day: 19676, Count: 1}, 3)},
				Recent: []*hookstreamv1.Occurrence{
					{TsMs: 1_700_000_000_000, Id: "a", PropertiesJson: []byte(`{"n":1}`)},
					withUnknown(&hookstreamv1.Occurrence{TsMs: 1_700_000_500_000, Id: "b"}, 9),
				}},
			withUnknown(&hookstreamv1.EventStats{Name: "Charged", FirstMs: 1, LastMs: 2, Days: []*hookstreamv1.DayCount{{Day: -1, Count: 1}}}, 12),
		},
		Campaigns: []*hookstreamv1.CampaignMemory{
			{Campaign: "actions", ActionMs: []int64{0, 1_700_000_000_000, -5}},
			withUnknown(&hookstreamv1.CampaignMemory{Campaign: "timers", Pending: map[string]*hookstreamv1.PendingTimer{
				"":        {DueMs: 5, CauseId: "x", CauseTsMs: 4, CauseName: "Viewed", CausePropertiesJson: []byte(`{}`), CampaignGeneration: 3},
				`"sku-1"`: withUnknown(&hookstreamv1.PendingTimer{DueMs: 6}, 10),
				"empty":   {},
			}}, 11),
			{Campaign: "goal", Exposure: withUnknown(&hookstreamv1.Exposure{TriggerId: "msg_1", TsMs: 9, Control: true}, 8)},
			{Campaign: "empty exposure", Exposure: &hookstreamv1.Exposure{}},
		},
	}, 15)
}

// The hand-written state codec must read what the generated code writes
// and write what it reads, unknown fields included, whether an entry was
// decoded and changed or copied as read.
func TestStateCodecMatchesGeneratedCode(t *testing.T) {
	want := sampleState()
	stored, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		touch func(*user)
	}{
		{"copied", func(*user) {}},
		{"decoded", func(u *user) {
			for _, e := range want.Events {
				u.eventEntry(e.Name).changed = true
			}
			for _, c := range want.Campaigns {
				u.updateMemory(c.Campaign)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := newUser("u", append([]byte(nil), stored...))
			if err != nil {
				t.Fatal(err)
			}
			tc.touch(u)
			if u.err != nil {
				t.Fatal(u.err)
			}
			b, err := u.encode()
			if err != nil {
				t.Fatal(err)
			}
			got := &hookstreamv1.UserState{}
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("round trip changed the state:\ngot  %v\nwant %v", got, want)
			}
		})
	}
}

// What the engine reads from a decoded state is what the generated code
// decodes.
func TestStateCodecDecodes(t *testing.T) {
	want := sampleState()
	stored, _ := proto.Marshal(want)
	u, err := newUser("u", stored)
	if err != nil {
		t.Fatal(err)
	}
	es := u.stats("Viewed")
	if es == nil || es.firstMs != 1_700_000_000_000 || len(es.days) != 2 || es.days[0].day != 19675 || es.days[0].count != 2 || len(es.recent) != 2 ||
		string(es.recent[0].id) != "a" || es.recent[0].props.get()["n"] == nil {
		t.Fatalf("Viewed stats decoded as %+v", es)
	}
	if es := u.stats("Charged"); es == nil || es.days[0].day != -1 {
		t.Fatalf("Charged stats decoded as %+v", es)
	}
	for _, c := range want.Campaigns {
		m := u.memoryOf(c.Campaign)
		if m == nil {
			t.Fatalf("no memory of %s", c.Campaign)
		}
		got := &hookstreamv1.CampaignMemory{}
		if err := proto.Unmarshal(appendMemory(nil, m), got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, c) {
			t.Fatalf("memory of %s decoded as %v, want %v", c.Campaign, got, c)
		}
	}
	if u.Profile()["Country"] != "Canada" || u.stats("Missing") != nil || u.memoryOf("missing") != nil {
		t.Fatal("profile or absent entries decoded wrongly")
	}
}

// A state changed by the engine is still a UserState, with one entry per
// name and the change in it.
func TestStateCodecAfterChanges(t *testing.T) {
	stored, _ := proto.Marshal(sampleState())
	u, err := newUser("u", stored)
	if err != nil {
		t.Fatal(err)
	}
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("e", flag.ContinueOnError))
	u.record(&cfg, &hookstreamv1.Event{Id: "c", Name: "Viewed", TsMs: 1_700_000_600_000, PropertiesJson: []byte(`{"n":2}`)}, 1_700_000_600_000)
	u.record(&cfg, &hookstreamv1.Event{Id: "d", Name: "Searched", TsMs: 1_700_000_600_000}, 1_700_000_600_000)
	u.memory("timers").pendingTimer("").DueMs = 50
	u.memory("new").actionMs = []int64{1, 0}
	u.updateMemory("goal").exposure = nil
	u.dropEmptyMemory("goal")
	if err := u.setProfile(map[string]any{"Country": "India"}); err != nil {
		t.Fatal(err)
	}
	b, err := u.encode()
	if err != nil {
		t.Fatal(err)
	}
	got := &hookstreamv1.UserState{}
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	names := map[string]*hookstreamv1.EventStats{}
	for _, e := range got.Events {
		if names[e.Name] != nil {
			t.Fatalf("two entries for %s", e.Name)
		}
		names[e.Name] = e
	}
	if v := names["Viewed"]; v == nil || len(v.Recent) != 3 || v.Recent[2].Id != "c" || v.LastMs != 1_700_000_600_000 {
		t.Fatalf("Viewed after record: %v", v)
	}
	if s := names["Searched"]; s == nil || len(s.Recent) != 1 || len(s.Days) != 1 {
		t.Fatalf("Searched after record: %v", s)
	}
	mems := map[string]*hookstreamv1.CampaignMemory{}
	for _, c := range got.Campaigns {
		mems[c.Campaign] = c
	}
	if mems["goal"] != nil || mems["timers"].Pending[""].DueMs != 50 || len(mems["new"].ActionMs) != 2 || mems["actions"] == nil {
		t.Fatalf("memories after changes: %v", got.Campaigns)
	}
	if string(got.ProfileJson) != `{"Country":"India"}` {
		t.Fatalf("profile %s", got.ProfileJson)
	}
}

// A timer command is what the generated code would have encoded.
func TestTimerCommandMatchesGeneratedCode(t *testing.T) {
	for _, tc := range []struct {
		name, key string
		trace     map[string]string
	}{
		{"no key, no trace", "", nil},
		{"key and trace", `"sku-1"`, map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const id, topic, identity, campaign = "ev_0123", "hookstream.events", "user-1", "cart-abandoned"
			const due, now = int64(1_700_000_000_000), int64(1_699_999_000_000)
			payload, _ := proto.Marshal(&hookstreamv1.EvaluatorTimer{Campaign: campaign, Key: tc.key, DueMs: due})
			fired, _ := proto.Marshal(&hookstreamv1.Event{
				Kind: hookstreamv1.Event_KIND_TIMER_FIRED, Id: fmt.Sprintf("%s@%d", id, due), Identity: identity, TsMs: due,
				Timer: &hookstreamv1.TimerFired{TimerId: id, DueMs: due, Payload: payload},
			})
			want := &hookstreamv1.TimerCommand{Id: id, DueMs: due, DestinationTopic: topic, DestinationKey: []byte(identity), Payload: fired,
				Owner: "evaluator", CreatedMs: now, TraceContext: tc.trace}
			b, _ := timerCommand([]byte("scratch"), []byte(id), topic, identity, campaign, tc.key, due, now, tc.trace)
			if len(b) != cap(b) {
				t.Errorf("encoded %d bytes into %d", len(b), cap(b))
			}
			got := &hookstreamv1.TimerCommand{}
			if err := proto.Unmarshal(b, got); err != nil {
				t.Fatal(err)
			}
			// The payloads are compared decoded: encodings may differ in
			// field order and still be equal.
			var gotEv, wantEv hookstreamv1.Event
			if err := proto.Unmarshal(got.Payload, &gotEv); err != nil {
				t.Fatal(err)
			}
			_ = proto.Unmarshal(want.Payload, &wantEv)
			var gotTimer, wantTimer hookstreamv1.EvaluatorTimer
			if err := proto.Unmarshal(gotEv.GetTimer().GetPayload(), &gotTimer); err != nil {
				t.Fatal(err)
			}
			_ = proto.Unmarshal(wantEv.GetTimer().GetPayload(), &wantTimer)
			if !proto.Equal(&gotTimer, &wantTimer) {
				t.Fatalf("timer payload %v, want %v", &gotTimer, &wantTimer)
			}
			gotEv.Timer.Payload, wantEv.Timer.Payload = nil, nil
			if !proto.Equal(&gotEv, &wantEv) {
				t.Fatalf("fired event %v, want %v", &gotEv, &wantEv)
			}
			got.Payload, want.Payload = nil, nil
			if !proto.Equal(got, want) {
				t.Fatalf("timer command %v, want %v", got, want)
			}
		})
	}
}

// Ids are derived as they always were: a changed derivation would give a
// record re-processed across an upgrade a new id, and a second webhook.
func TestIDsAreStable(t *testing.T) {
	old := func(prefix, in string) string {
		h := sha256.Sum256([]byte(in))
		return prefix + hex.EncodeToString(h[:16])
	}
	long := strings.Repeat("x", 300)
	for _, tc := range []struct{ got, want string }{
		{TriggerID("cart", "evt-1"), old("msg_", "cart\x00evt-1")},
		{TriggerID(long, long), old("msg_", long+"\x00"+long)},
		{string(timerID("cart", "user-1", `"sku"`)), old("ev_", "cart\x00user-1\x00\"sku\"")},
		{hashID("cv_", "conversion", "msg_1"), old("cv_", "conversion\x00msg_1")},
	} {
		if tc.got != tc.want {
			t.Errorf("id %s, want %s", tc.got, tc.want)
		}
	}
}

// A trigger is what the generated code would have encoded.
func TestTriggerMatchesGeneratedCode(t *testing.T) {
	for _, want := range []*hookstreamv1.Trigger{
		{},
		{Id: "msg_1", Campaign: "cart", CampaignGeneration: 3, TriggerType: "single_action", Identity: "u", TsMs: 1_700_000_000_000,
			CauseEventId: "e1", CauseEventName: "Added To Cart", CauseEventTsMs: 1_699_999_999_000, CauseEventPropertiesJson: []byte(`{"n":1}`),
			ProfileJson: []byte(`{}`), Control: true, IsTest: true},
	} {
		b := triggerValue(want)
		if len(b) != cap(b) {
			t.Errorf("encoded %d bytes into %d", len(b), cap(b))
		}
		got := &hookstreamv1.Trigger{}
		if err := proto.Unmarshal(b, got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("trigger %v, want %v", got, want)
		}
	}
}
