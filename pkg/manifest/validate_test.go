package manifest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// crm is a valid webhook appended to the campaign cases, so that their line
// numbers start at 1 and spec.webhook: crm resolves.
const crm = `
---
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
`

// check parses and validates input as `hookstream validate` does and
// returns every problem as "line: path: reason".
func check(t *testing.T, input string) []string {
	t.Helper()
	objs, err := Parse([]byte(input), "")
	var probs Problems
	if err != nil && !errors.As(err, &probs) {
		t.Fatalf("Parse returned a non-Problems error: %v", err)
	}
	if err == nil {
		probs = Validate(objs, nil)
	}
	out := make([]string, len(probs))
	for i, p := range probs {
		out[i] = fmt.Sprintf("%d: %s: %s", p.Line, p.Path, p.Reason)
	}
	return out
}

// Every invalid manifest is refused with the problem a user needs to fix
// it: the path, the reason and the line.
func TestInvalidManifests(t *testing.T) {
	cases := []struct {
		name  string
		input string
		want  []string
	}{
		{
			name: "unknown field",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  colour: blue
` + crm,
			want: []string{"8: spec.colour: unknown field"},
		},
		{
			name: "misspelled field gets a suggestion",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  who: {maxUser: 10}
` + crm,
			want: []string{"8: spec.who.maxUser: unknown field (did you mean maxUsers?)"},
		},
		{
			name: "wrong type: text for a number",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  who:
    maxUsers: lots
` + crm,
			want: []string{`9: spec.who.maxUsers: must be a whole number, got "lots"`},
		},
		{
			name: "wrong type: a word for a list",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    payload:
      profileVariables: Email
` + crm,
			want: []string{`10: spec.what.payload.profileVariables: must be a list, got "Email"`},
		},
		{
			name: "wrong type: a list for a mapping",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: [triggered]
  trigger: {type: single_action, action: {event: E}}
` + crm,
			want: []string{"6: spec.delivery: must be a mapping, got a list"},
		},
		{
			name: "duration that does not parse",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart}
    inaction: {event: Charged}
    within: half an hour
` + crm,
			want: []string{`11: spec.trigger.within: must be a duration like 30m, 36h, 3d or 2w, got "half an hour"`},
		},
		{
			name: "duration without a unit",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  limits:
    frequencyCap: {count: 1, per: 24}
` + crm,
			want: []string{`9: spec.limits.frequencyCap.per: must be a duration like 30m, 36h, 3d or 2w, got "24"`},
		},
		{
			name: "literal password instead of a reference",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  auth:
    basic:
      username: hookstream
      passwordRef: hunter2
`,
			want: []string{"9: spec.auth.basic.passwordRef: must reference a secret as {env: NAME} or {file: PATH}, never a literal value"},
		},
		{
			name: "password field",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  auth:
    basic:
      username: hookstream
      password: hunter2
`,
			want: []string{
				"7: spec.auth.basic.passwordRef: must reference a secret as {env: NAME} or {file: PATH}, never a literal value",
				"9: spec.auth.basic.password: secrets are never written in manifests: use passwordRef: {env: NAME} or {file: PATH}",
			},
		},
		{
			name: "bearer token field",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  auth: {bearer: {token: abc123}}
`,
			want: []string{
				"6: spec.auth.bearer.token: secrets are never written in manifests: use tokenRef: {env: NAME} or {file: PATH}",
				"6: spec.auth.bearer.tokenRef: must reference a secret as {env: NAME} or {file: PATH}, never a literal value",
			},
		},
		{
			name: "signing secret with both env and file",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  signing:
    secretRef: {env: SIGNING, file: /run/secret}
`,
			want: []string{"7: spec.signing.secretRef: must have env or file, not both"},
		},
		{
			name: "authorization header",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  headers:
    X-Source: hookstream
    Authorization: Bearer abc123
`,
			want: []string{"8: spec.headers.Authorization: credentials are never written in manifests: use spec.auth (basic or bearer) with a secret reference"},
		},
		{
			name: "webhook URL that is not http(s)",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: ftp://crm.example.com/hook
`,
			want: []string{`5: spec.url: must be an http(s) URL, got "ftp://crm.example.com/hook"`},
		},
		{
			name: "webhook URL with credentials",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://user:secret@crm.example.com/hook
`,
			want: []string{"5: spec.url: must not carry credentials (user:password@): use spec.auth with a secret reference"},
		},
		{
			name: "webhook method",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  method: GET
  rateLimit: {perSecond: 0}
`,
			want: []string{
				`6: spec.method: must be POST or PUT, got "GET"`,
				"7: spec.rateLimit.perSecond: must be a positive number, got 0",
			},
		},
		{
			name: "unknown kind",
			input: `apiVersion: hookstream.dev/v1
kind: Journey
metadata: {name: j}
spec: {}
`,
			want: []string{`2: kind: unknown kind "Journey" (want Webhook, Segment or Campaign)`},
		},
		{
			name: "missing kind",
			input: `apiVersion: hookstream.dev/v1
metadata: {name: j}
spec: {}
`,
			want: []string{"1: kind: is required (Webhook, Segment or Campaign)"},
		},
		{
			name: "wrong apiVersion and name",
			input: `apiVersion: hookstream.dev/v2
kind: Segment
metadata: {name: Canadians_Only}
spec: {profile: {property: Country, op: eq, value: Canada}}
`,
			want: []string{
				`1: apiVersion: must be hookstream.dev/v1, got "hookstream.dev/v2"`,
				`3: metadata.name: must be a DNS label (lowercase letters, digits and '-', at most 63), got "Canadians_Only"`,
			},
		},
		{
			name: "YAML syntax error in the second document",
			input: `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: s}
spec: {profile: {property: Country, op: eq, value: Canada}}
---
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm
spec: {url: https://crm.example.com/hook}
`,
			want: []string{"8: : did not find expected ',' or '}'"},
		},
		{
			name: "field given twice",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec:
  url: https://crm.example.com/hook
  timeout: 3s
  timeout: 5s
`,
			want: []string{"7: spec.timeout: is given twice (first at line 6)"},
		},
		{
			name: "time that does not parse",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  active: {from: yesterday}
` + crm,
			want: []string{`8: spec.active.from: must be an RFC 3339 time like 2026-12-07T09:00:00Z, got "yesterday"`},
		},
		{
			name: "unknown trigger type",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: on_event
    action: {event: E}
` + crm,
			want: []string{"8: spec.trigger.type: unknown trigger type \"on_event\" (one of single_action actions inaction_within_time inaction date_time_property actions_with_user_properties)"},
		},
		{
			name: "unknown operator",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: single_action
    action:
      event: Charged
      where:
        - {property: Amount, op: greater, value: 100}
` + crm,
			want: []string{`12: spec.trigger.action.where[0].op: unknown operator "greater" (one of eq neq gt gte lt lte in nin contains exists not_exists before after between)`},
		},
		{
			name: "in needs a list, between two values",
			input: `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: s}
spec:
  all:
    - {property: Country, op: in, value: Canada}
    - {property: Age, op: between, value: [18]}
    - {profile: {property: Plan, op: exists, value: gold}}
`,
			want: []string{
				"6: spec.all[0].value: must be a list for op in",
				"7: spec.all[1].value: must be a list of two values [low, high] for op between",
				"8: spec.all[2].profile.value: is not used by op exists",
			},
		},
		{
			name: "condition with two forms",
			input: `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: s}
spec:
  property: Country
  op: eq
  value: Canada
  any: []
`,
			want: []string{
				"4: spec: must be exactly one of a property condition, profile, event, all, any or not",
				"8: spec.any: must hold at least one condition",
			},
		},
		{
			name: "missing webhook and segment",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: call-center
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  who: {segment: canadians}
`,
			want: []string{
				`5: spec.webhook: Webhook "call-center" does not exist`,
				`8: spec.who.segment: Segment "canadians" does not exist`,
			},
		},
		{
			name: "Liquid body that does not compile",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    payload:
      body: |
        {"user": "{{ profile.Identity }}"}
        {% if profile.Vip %}vip
` + crm,
			want: []string{`10: spec.what.payload.body: Liquid does not compile: unterminated "if" block in {% if profile.Vip %}`},
		},
		{
			name: "Liquid with an unknown filter and an unclosed tag",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    query: {city: "{{ profile.City | urlencode }}"}
    keyValues: {Name: "{{ profile.Name "}
` + crm,
			want: []string{
				`9: spec.what.query.city: Liquid does not compile: unknown filter "urlencode"`,
				`10: spec.what.keyValues.Name: Liquid does not compile: "{{" is not closed by "}}"`,
			},
		},
		{
			name: "linked content: URL, Liquid, onError and name",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    linkedContent:
      - name: weather
        url: "file:///etc/passwd"
        onError: explode
      - name: weather
        url: "https://api.example/{{ profile.City | }}"
` + crm,
			want: []string{
				`11: spec.what.linkedContent[0].url: must be an http(s) URL, got "file:///etc/passwd"`,
				`12: spec.what.linkedContent[0].onError: must be abort or skip, got "explode"`,
				`13: spec.what.linkedContent[1].name: "weather" is used twice`,
				`14: spec.what.linkedContent[1].url: Liquid does not compile: syntax error in "profile.City |" in {{ profile.City | }}`,
			},
		},
		{
			name: "percentage above 100",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  controlGroup: {percent: 120}
` + crm,
			want: []string{"8: spec.controlGroup.percent: must be between 0 and 100, got 120"},
		},
		{
			name: "negative percentage",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  controlGroup:
    percent: -5
` + crm,
			want: []string{"9: spec.controlGroup.percent: must be between 0 and 100, got -5"},
		},
		{
			name: "triggered campaign without trigger",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  what: {payload: {profileVariables: [Identity]}}
` + crm,
			want: []string{"4: spec.trigger: is required for a triggered campaign"},
		},
		{
			name: "scheduled campaign with inaction_within_time",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: scheduled, at: "2026-12-07T09:00:00", timezone: Asia/Kolkata}
  trigger:
    type: inaction_within_time
    action: {event: A}
    inaction: {event: B}
    within: 30m
` + crm,
			want: []string{"8: spec.trigger.type: inaction_within_time is for triggered campaigns only (a scheduled campaign reads past behaviour)"},
		},
		{
			name: "scheduled campaign with date_time_property",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery:
    type: scheduled
    recurring: {every: day, time: "09:00"}
  trigger:
    type: date_time_property
    property: {source: profile, name: Birthday}
` + crm,
			want: []string{"10: spec.trigger.type: date_time_property is for triggered campaigns only (a scheduled campaign reads past behaviour)"},
		},
		{
			name: "scheduled campaign targeting everyone",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: scheduled, at: "2026-12-07T09:00:00Z"}
` + crm,
			want: []string{"4: spec.who: a scheduled campaign without a trigger needs who.segment or who.where (it would target every user)"},
		},
		{
			name: "recurring schedule",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery:
    type: scheduled
    recurring:
      every: week
      day: 7
      time: "9am"
      timezone: Mars/Olympus
  who: {where: {property: Country, op: eq, value: Canada}}
` + crm,
			want: []string{
				`8: spec.delivery.recurring.weekday: must be one of mon tue wed thu fri sat sun for every: week, got ""`,
				"10: spec.delivery.recurring.day: is only used with every: month",
				`11: spec.delivery.recurring.time: must be a time of day like 09:00, got "9am"`,
				`12: spec.delivery.recurring.timezone: unknown IANA time zone "Mars/Olympus" (like Europe/Paris or UTC)`,
			},
		},
		{
			name: "missing delivery type",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  trigger: {type: single_action, action: {event: E}}
` + crm,
			want: []string{"4: spec.delivery.type: is required: triggered or scheduled"},
		},
		{
			name: "batch with a Liquid body",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    payload: {body: "hello {{ profile.Name }}"}
    contentType: text
    batch: {maxProfiles: 0}
` + crm,
			want: []string{
				"11: spec.what.batch: is only for profileVariables payloads (a Liquid body is sent one profile per request)",
				"11: spec.what.batch.maxProfiles: must be 1 to 1000, got 0",
			},
		},
		{
			name: "payload with both forms",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    payload:
      profileVariables: [Email, Email]
      body: "{}"
` + crm,
			want: []string{
				"9: spec.what.payload: must have profileVariables or body, not both",
				"10: spec.what.payload.profileVariables[1]: Email is listed twice",
			},
		},
		{
			name: "same object twice",
			input: `apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://a.example.com/hook}
---
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://b.example.com/hook}
`,
			want: []string{"8: metadata.name: Webhook/crm is defined more than once (first at line 1)"},
		},
		{
			name: "field the trigger type does not use",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: single_action
    action: {event: E, in: 30d}
    within: 1h
` + crm,
			want: []string{
				"9: spec.trigger.action.in: is only used by scheduled campaigns (it bounds the past behaviour they read)",
				"10: spec.trigger.within: is not used by trigger type single_action",
			},
		},
		{
			name: "actions with one action and no window",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: actions
    actions: [{event: Viewed}]
` + crm,
			want: []string{
				"7: spec.trigger.within: is required for trigger type actions",
				"9: spec.trigger.actions: needs at least two actions (use single_action for one)",
			},
		},
		{
			name: "inaction_within_time without window or inaction event",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart}
    inaction: {}
    matchOn: [ProductId, ProductId]
` + crm,
			want: []string{
				"7: spec.trigger.within: is required for trigger type inaction_within_time",
				"10: spec.trigger.inaction.event: is required",
				"11: spec.trigger.matchOn[1]: ProductId is listed twice",
			},
		},
		{
			name: "date_time_property from an event without its name",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: date_time_property
    property: {source: event, name: DeliveryDate}
    offset: -1d
    at: "25:00"
` + crm,
			want: []string{
				"9: spec.trigger.property.event: is required for source: event",
				`11: spec.trigger.at: must be a time of day like 09:00, got "25:00"`,
			},
		},
		{
			name: "actions_with_user_properties without profile conditions",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: actions_with_user_properties
    action: {event: Charged}
` + crm,
			want: []string{"7: spec.trigger.profile: is required for trigger type actions_with_user_properties"},
		},
		{
			name: "quiet hours, limits, state and goal",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  state: stopped
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  limits: {frequencyCap: {count: 0, per: 24h}, throttle: {perMinute: 0}}
  quietHours: {from: "22:00", to: "22:00", action: postpone}
  goal: {within: 7d}
` + crm,
			want: []string{
				`6: spec.state: must be active or paused, got "stopped"`,
				"9: spec.limits.frequencyCap.count: must be at least 1, got 0",
				"9: spec.limits.throttle.perMinute: must be at least 1, got 0",
				"10: spec.quietHours.to: must differ from spec.quietHours.from",
				`10: spec.quietHours.action: must be delay or discard, got "postpone"`,
				"11: spec.goal.event: is required",
			},
		},
		{
			name: "JSON with an unknown field and a bad duration",
			input: `[
  {"apiVersion": "hookstream.dev/v1", "kind": "Webhook",
   "metadata": {"name": "crm"},
   "spec": {"url": "https://crm.example.com/hook", "timeOut": "3s"}},
  {"apiVersion": "hookstream.dev/v1", "kind": "Webhook",
   "metadata": {"name": "erp"},
   "spec": {"url": "https://erp.example.com/hook", "timeout": 3}}
]`,
			want: []string{
				"4: spec.timeOut: unknown field (did you mean timeout?)",
				`7: spec.timeout: must be a duration like 30m, 36h, 3d or 2w, got "3"`,
			},
		},
		{
			name: "every problem of a document at once",
			input: `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart-abandon}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart, where: [{property: Price, op: gte}]}
    inaction: {event: Charged}
    within: soon
  who: {segment: big-spenders, maxUsers: -1}
  what:
    contentType: xml
    payload: {profileVariables: [Email]}
  controlGroup: {percent: 101}
  extra: true
` + crm,
			want: []string{
				"9: spec.trigger.action.where[0].value: is required for op gte",
				`11: spec.trigger.within: must be a duration like 30m, 36h, 3d or 2w, got "soon"`,
				"12: spec.who.maxUsers: must not be negative, got -1",
				`14: spec.what.contentType: must be json or text, got "xml"`,
				"16: spec.controlGroup.percent: must be between 0 and 100, got 101",
				"17: spec.extra: unknown field",
			},
		},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := check(t, tc.input)
			if !slices.Equal(got, tc.want) {
				t.Errorf("problems:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}

// A manifest with structural problems still has its references checked
// once it is fixed: Validate with a resolver sees what is applied already.
func TestValidateResolvesAgainstExisting(t *testing.T) {
	objs, err := Parse([]byte(`apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  who: {segment: vips}
`), "c.yaml")
	if err != nil {
		t.Fatal(err)
	}
	applied := func(kind, name string) bool { return kind == KindWebhook && name == "crm" }
	probs := Validate(objs, applied)
	if len(probs) != 1 || probs[0].String() != `c.yaml:8: Campaign/c: spec.who.segment: Segment "vips" does not exist` {
		t.Fatalf("got %q", probs)
	}
}

// Objects that were not parsed from text (stored JSON) are validated too,
// without lines.
func TestValidateStoredObject(t *testing.T) {
	o, err := Decode([]byte(`{"apiVersion":"hookstream.dev/v1","kind":"Webhook","metadata":{"name":"crm"},"spec":{"url":"gopher://x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	probs := Validate([]Object{o}, nil)
	if len(probs) != 1 || probs[0].String() != `Webhook/crm: spec.url: must be an http(s) URL, got "gopher://x"` {
		t.Fatalf("got %q", probs)
	}
}

func TestCheckLiquid(t *testing.T) {
	for src, want := range map[string]string{
		"plain text":                                "",
		"{{ profile.City | url_encode }}":           "",
		"{{ profile.Name | default: 'a|b' }}":       "",
		"{% if linked.w.temp > 25 %}hot{% endif %}": "",
		"{{ x | nope }}":                            `unknown filter "nope"`,
		"{% for x in y %}":                          `unterminated "for" block in {% for x in y %}`,
		"a {% if x ":                                `"{%" is not closed by "%}"`,
		"{{ a }} {{ b":                              `"{{" is not closed by "}}"`,
	} {
		err := CheckLiquid(src)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("CheckLiquid(%q) = %q, want %q", src, got, want)
		}
	}
}
