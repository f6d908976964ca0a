package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const threeDocs = `# A comment before the first document.
apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook}
---
# Canadians.
apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: canadians}
spec: {profile: {property: Country, op: eq, value: Canada}}
--- # the campaign
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: big-cart}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: actions
    actions:
      - {event: Viewed}
      - {evnt: Added To Cart}
    within: 1h
  who: {segment: canadians}
`

func TestParseMultiDocumentLines(t *testing.T) {
	_, err := Parse([]byte(threeDocs), "m.yaml")
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("want Problems, got %v", err)
	}
	want := "m.yaml:23: Campaign/big-cart: spec.trigger.actions[1].evnt: unknown field (did you mean event?)\n" +
		"m.yaml:23: Campaign/big-cart: spec.trigger.actions[1].event: is required"
	if err.Error() != want {
		t.Fatalf("got\n%s\nwant\n%s", err, want)
	}
	fixed := strings.Replace(threeDocs, "evnt:", "event:", 1)
	objs, err := Parse([]byte(fixed), "m.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, Key(o))
	}
	if got := strings.Join(keys, " "); got != "Webhook/crm Segment/canadians Campaign/big-cart" {
		t.Fatalf("objects: %s", got)
	}
	if probs := Validate(objs, nil); len(probs) != 0 {
		t.Fatalf("valid set has problems: %v", probs)
	}
	c := objs[2].(*Campaign)
	if c.Spec.Trigger.Within.Std() != time.Hour || c.Spec.Trigger.Actions[1].Event != "Added To Cart" {
		t.Fatalf("decoded wrong: %+v", c.Spec.Trigger)
	}
}

func TestParseJSON(t *testing.T) {
	for name, input := range map[string]string{
		"object": `{"apiVersion":"hookstream.dev/v1","kind":"Webhook","metadata":{"name":"crm"},"spec":{"url":"https://crm.example.com/hook","timeout":"5s"}}`,
		"array":  "[\n\t{\"apiVersion\": \"hookstream.dev/v1\", \"kind\": \"Webhook\",\n\t \"metadata\": {\"name\": \"crm\"}, \"spec\": {\"url\": \"https://crm.example.com/hook\", \"timeout\": \"5s\"}}\n]",
		"yaml list": `- apiVersion: hookstream.dev/v1
  kind: Webhook
  metadata: {name: crm}
  spec: {url: "https://crm.example.com/hook", timeout: 5s}
`,
	} {
		t.Run(name, func(t *testing.T) {
			objs, err := Parse([]byte(input), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 1 || objs[0].(*Webhook).Spec.Timeout.Std() != 5*time.Second {
				t.Fatalf("got %+v", objs)
			}
		})
	}
}

func TestParseRefusesWhole(t *testing.T) {
	objs, err := Parse([]byte(threeDocs), "")
	if err == nil || objs != nil {
		t.Fatalf("a set with one bad document must be refused whole, got %d objects, err %v", len(objs), err)
	}
}

func TestParseNotAManifest(t *testing.T) {
	for input, want := range map[string]string{
		"just a string\n":           "line 1: a manifest must be a mapping with apiVersion, kind, metadata and spec",
		"- 1\n- 2\n":                "line 1: a manifest must be a mapping with apiVersion, kind, metadata and spec\nline 2: a manifest must be a mapping with apiVersion, kind, metadata and spec",
		"kind: [Webhook]\n":         "line 1: kind: is required (Webhook, Segment or Campaign)",
		"kind: Webhook\nspec: *x\n": `line 1: unknown anchor 'x' referenced`,
	} {
		_, err := Parse([]byte(input), "")
		if err == nil || err.Error() != want {
			t.Errorf("Parse(%q):\n got %v\nwant %s", input, err, want)
		}
	}
	if objs, err := Parse([]byte("# only a comment\n---\n"), ""); err != nil || len(objs) != 0 {
		t.Errorf("comments only: %v %v", objs, err)
	}
}

// YAML anchors and merge keys work, and alias expansion is bounded.
func TestParseAliases(t *testing.T) {
	input := `apiVersion: hookstream.dev/v1
kind: Segment
metadata: {name: s}
spec:
  all:
    - &canada {property: Country, op: eq, value: Canada}
    - not: *canada
`
	objs, err := Parse([]byte(input), "")
	if err != nil {
		t.Fatal(err)
	}
	if s := objs[0].(*Segment); s.Spec.All[1].Not == nil || s.Spec.All[1].Not.Value != "Canada" {
		t.Fatalf("alias not decoded: %+v", s.Spec)
	}
	// A billion laughs: every level doubles.
	var b strings.Builder
	b.WriteString("apiVersion: hookstream.dev/v1\nkind: Segment\nmetadata: {name: s}\nl0: &l0 [a, a]\n")
	for i := 1; i < 40; i++ {
		n, prev := strconv.Itoa(i), strconv.Itoa(i-1)
		b.WriteString("l" + n + ": &l" + n + " [*l" + prev + ", *l" + prev + "]\n")
	}
	b.WriteString("spec: {property: x, op: in, value: *l39}\n")
	start := time.Now()
	_, err = Parse([]byte(b.String()), "")
	if err == nil {
		t.Fatal("alias bomb accepted")
	} else if !strings.Contains(err.Error(), "too large") {
		t.Fatalf("alias bomb: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("alias bomb took %v", time.Since(start))
	}
}

func TestParsePathDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a-webhook.yaml", "apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: crm}\nspec: {url: https://crm.example.com/hook}\n")
	write("b-segment.json", `{"apiVersion": "hookstream.dev/v1", "kind": "Segment", "metadata": {"name": "s"}, "spec": {"property": "x", "op": "exists"}}`)
	write("notes.txt", "not a manifest")
	objs, err := ParsePath(dir)
	if err != nil || len(objs) != 2 {
		t.Fatalf("got %d objects, %v", len(objs), err)
	}
	write("c-campaign.yml", "apiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: c}\nspec:\n  webhook: crm\n  delivery: {type: sometimes}\n  bogus: 1\n")
	_, err = ParsePath(dir)
	want := filepath.Join(dir, "c-campaign.yml") + ":6: Campaign/c: spec.delivery.type: must be triggered or scheduled, got \"sometimes\"\n" +
		filepath.Join(dir, "c-campaign.yml") + ":7: Campaign/c: spec.bogus: unknown field"
	if err == nil || err.Error() != want {
		t.Fatalf("got\n%v\nwant\n%s", err, want)
	}
	if _, err := ParsePath(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestProblemString(t *testing.T) {
	for _, tc := range []struct {
		p    Problem
		want string
	}{
		{Problem{Source: "a.yaml", Line: 3, Object: "Campaign/c", Path: "spec.x", Reason: "bad"}, "a.yaml:3: Campaign/c: spec.x: bad"},
		{Problem{Line: 3, Path: "spec.x", Reason: "bad"}, "line 3: spec.x: bad"},
		{Problem{Object: "Webhook/w", Reason: "bad"}, "Webhook/w: bad"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// What `hookstream get -o yaml` prints can be applied again unchanged, and
// the stored JSON form decodes to the same object.
func TestRoundTrip(t *testing.T) {
	objs, err := ParsePath("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		ApplyDefaults(o)
		want, _ := json.Marshal(o)

		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(y, "")
		if err != nil {
			t.Fatalf("%s: YAML output does not parse: %v\n%s", Key(o), err, y)
		}
		if got, _ := json.Marshal(again[0]); string(got) != string(want) {
			t.Errorf("%s: YAML round trip\n got %s\nwant %s", Key(o), got, want)
		}

		stored, err := Decode(want)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := json.Marshal(stored); string(got) != string(want) {
			t.Errorf("%s: JSON round trip\n got %s\nwant %s", Key(o), got, want)
		}
	}
}

func TestApplyDefaults(t *testing.T) {
	objs, err := Parse([]byte(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: crm}
spec: {url: https://crm.example.com/hook, retry: {schedule: [1m]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E}}
  what:
    batch: {maxProfiles: 10}
    linkedContent: [{name: w, url: "https://w.example/"}]
  quietHours: {from: "22:00", to: "08:00"}
  goal: {event: Charged}
`), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		ApplyDefaults(o)
		first, _ := json.Marshal(o)
		ApplyDefaults(o)
		if second, _ := json.Marshal(o); string(first) != string(second) {
			t.Errorf("ApplyDefaults is not idempotent:\n%s\n%s", first, second)
		}
	}
	w := objs[0].(*Webhook).Spec
	if w.Method != "POST" || w.Timeout.Std() != 3*time.Second || w.MaxInFlight != 10 || w.Retry.MaxAge.Std() != 6*time.Hour || len(w.Retry.Schedule) != 1 {
		t.Errorf("webhook defaults: %+v %+v", w, w.Retry)
	}
	c := objs[1].(*Campaign).Spec
	if c.State != StateActive || c.What.ContentType != "json" || c.What.Batch.Linger.Std() != time.Second ||
		c.What.LinkedContent[0].OnError != "abort" || c.What.LinkedContent[0].Timeout.Std() != 2*time.Second ||
		c.QuietHours.Action != "delay" || c.Goal.Within.Std() != 7*24*time.Hour {
		t.Errorf("campaign defaults: %+v", c)
	}
	if probs := Validate(objs, nil); len(probs) != 0 {
		t.Errorf("defaults made the objects invalid: %v", probs)
	}
}

func TestClone(t *testing.T) {
	objs, err := Parse([]byte(threeDocs[:strings.Index(threeDocs, "--- # the campaign")]), "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Clone(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	c.(*Webhook).Spec.URL = "https://other.example.com"
	if objs[0].(*Webhook).Spec.URL != "https://crm.example.com/hook" {
		t.Fatal("Clone shares memory with the original")
	}
}
