package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The chaos campaigns: one per trigger type, each with its own signed
// webhook (so each has its own queue and circuit breaker). Every event of
// the stream carries a "cause" property that the webhook body echoes
// (Event_properties in profileVariables, or a Liquid body), so that the
// receiver can tell which expected webhook a request is.
const (
	chaosIWTWithin = 5 * time.Second // inaction_within_time window
	chaosDTPAfter  = 6 * time.Second // date_time_property: eta after the event
)

// chaosTriggerTypes in the order of the summary table; chaosCampaign maps a
// trigger type to its campaign name.
var chaosTriggerTypes = []string{"single_action", "actions", "inaction_within_time", "inaction", "date_time_property", "actions_with_user_properties"}

func chaosCampaign(triggerType string) string {
	return map[string]string{
		"single_action": "chaos-single", "actions": "chaos-actions", "inaction_within_time": "chaos-iwt",
		"inaction": "chaos-inaction", "date_time_property": "chaos-dtp", "actions_with_user_properties": "chaos-awup",
	}[triggerType]
}

// chaosManifests returns the webhooks and campaigns. The webhooks time out
// after 2s and retry for far longer than any receiver outage lasts (about
// 4 minutes of attempts, maxAge 1h), so that nothing legitimately ends in
// the dispatch DLQ.
func chaosManifests(url string) string {
	var b strings.Builder
	retry := "  retry: {schedule: [1s, 2s, 3s, 5s, 5s, 5s, 5s, 5s, 5s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s, 10s], maxAge: 1h}\n"
	pv := "  what: {payload: {profileVariables: [Identity, Event_properties]}}\n"
	trig := "  delivery: {type: triggered}\n"
	specs := map[string]string{
		"single_action":        trig + "  trigger: {type: single_action, action: {event: Purchased, where: [{property: total, op: gte, value: 10}]}}\n" + pv,
		"actions":              trig + "  trigger: {type: actions, actions: [{event: Viewed}, {event: Wishlisted}], within: 1h, ordered: true}\n" + pv,
		"inaction_within_time": trig + fmt.Sprintf("  trigger: {type: inaction_within_time, action: {event: Carted}, inaction: {event: Bought}, matchOn: [sku], within: %s}\n", chaosIWTWithin) + pv,
		"inaction":             trig + "  trigger: {type: inaction, action: {event: Launched}, inaction: {event: Bought}, lookback: 30d}\n" + pv,
		"date_time_property":   trig + "  trigger: {type: date_time_property, property: {source: event, event: Shipped, name: eta}, offset: 0s}\n" + pv,
		"actions_with_user_properties": trig + "  trigger: {type: actions_with_user_properties, action: {event: Paid}, profile: [{property: Country, op: eq, value: Canada}]}\n" +
			"  what: {payload: {body: '{\"cause\": {{ event.properties.cause | json }}, \"user\": {{ profile.Identity | json }}}'}}\n",
	}
	for _, tt := range chaosTriggerTypes {
		name := chaosCampaign(tt)
		fmt.Fprintf(&b, "---\napiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: %s}\nspec:\n  url: %s/chaos/%s\n  timeout: 2s\n  signing: {secretRef: {env: CHAOS_SIGNING_SECRET}}\n%s",
			name, url, name, retry)
		fmt.Fprintf(&b, "---\napiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: %s}\nspec:\n  webhook: %s\n%s", name, name, specs[tt])
	}
	return b.String()
}

// chaosExpect is one cause of the stream: a webhook that must arrive, or
// (negative) one that must not.
type chaosExpect struct {
	Cause       string
	TriggerType string
	Identity    string
	Produced    time.Time
	Due         time.Time // timer-driven types: when it is due; zero otherwise
	Negative    bool
	// LagSensitive negatives are cancelled by a later event of the same
	// user; an evaluator that reads the action only after its window has
	// passed fires it at once (see the report).
	LagSensitive bool
}

// chaosRound returns the records of round i at now and the causes they
// carry. Each cause has a user of its own, so a cause is also (campaign,
// user); records of one user are keyed by the user and stay in order.
func chaosRound(i int, now time.Time) ([]*kgo.Record, []chaosExpect) {
	var recs []*kgo.Record
	var exp []chaosExpect
	ms := now.UnixMilli()
	seq := 0
	add := func(kind, user, name string, props map[string]any) {
		seq++
		m := map[string]any{"type": kind, "identity": user, "ts": ms, "properties": props}
		if kind == "event" {
			m["name"] = name
			m["id"] = fmt.Sprintf("chaos-%d-%d", i, seq)
		}
		v, _ := json.Marshal(m)
		recs = append(recs, &kgo.Record{Key: []byte(user), Value: v})
	}
	expect := func(tt, user string, due time.Time, neg, lag bool) string {
		cause := fmt.Sprintf("%s/%d", chaosCampaign(tt), i)
		if neg {
			cause += "/neg"
		}
		exp = append(exp, chaosExpect{Cause: cause, TriggerType: tt, Identity: user, Produced: now, Due: due, Negative: neg, LagSensitive: lag})
		return cause
	}
	var none time.Time

	// single_action: total 50 fires; total 5 (another user) does not.
	u := fmt.Sprintf("s-%d", i)
	add("event", u, "Purchased", map[string]any{"total": 50, "cause": expect("single_action", u, none, false, false)})
	u = fmt.Sprintf("s-%d-neg", i)
	add("event", u, "Purchased", map[string]any{"total": 5, "cause": expect("single_action", u, none, true, false)})

	// actions: Viewed then Wishlisted fires on Wishlisted.
	u = fmt.Sprintf("a-%d", i)
	c := expect("actions", u, none, false, false)
	add("event", u, "Viewed", map[string]any{"sku": "a", "cause": c + "/viewed"})
	add("event", u, "Wishlisted", map[string]any{"sku": "a", "cause": c})

	// inaction_within_time: sku a is abandoned (fires after the window);
	// sku b is bought within it (cancelled).
	due := time.UnixMilli(ms).Add(chaosIWTWithin)
	u = fmt.Sprintf("w-%d", i)
	add("event", u, "Carted", map[string]any{"sku": "a", "cause": expect("inaction_within_time", u, due, false, false)})
	u = fmt.Sprintf("w-%d-neg", i)
	add("event", u, "Carted", map[string]any{"sku": "b", "cause": expect("inaction_within_time", u, due, true, true)})
	add("event", u, "Bought", map[string]any{"sku": "b"})

	// inaction: Launched by a user who never bought fires; by one who
	// bought (earlier in the stream) does not.
	u = fmt.Sprintf("n-%d", i)
	add("event", u, "Launched", map[string]any{"cause": expect("inaction", u, none, false, false)})
	u = fmt.Sprintf("n-%d-neg", i)
	add("event", u, "Bought", map[string]any{"sku": "z"})
	add("event", u, "Launched", map[string]any{"cause": expect("inaction", u, none, true, false)})

	// date_time_property: eta a few seconds ahead.
	eta := time.UnixMilli(ms).Add(chaosDTPAfter)
	u = fmt.Sprintf("d-%d", i)
	add("event", u, "Shipped", map[string]any{"eta": eta.UTC().Format(time.RFC3339Nano), "cause": expect("date_time_property", u, eta, false, false)})

	// actions_with_user_properties: a Canadian pays (fires), an Indian
	// pays (does not).
	u = fmt.Sprintf("p-%d", i)
	add("profile", u, "", map[string]any{"Country": "Canada"})
	add("event", u, "Paid", map[string]any{"cause": expect("actions_with_user_properties", u, none, false, false)})
	u = fmt.Sprintf("p-%d-neg", i)
	add("profile", u, "", map[string]any{"Country": "India"})
	add("event", u, "Paid", map[string]any{"cause": expect("actions_with_user_properties", u, none, true, false)})
	return recs, exp
}
