package normalize

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf8"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

func fuzzSeeds(f *testing.F) {
	for _, name := range []string{"events-native.ndjson", "events-segment.ndjson", "events-clevertap.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for _, line := range bytes.Split(b, []byte("\n")) {
			f.Add(line)
		}
	}
	for _, s := range []string{
		`{"type":"event","identity":42,"name":"X","ts":"1764237600","properties":{"a":[{"b":null}]}}`,
		`{"type":"identify","anonymousId":"a","traits":{"email":"e","address":{"city":"c"}},"context":{"timezone":"UTC"}}`,
		`{"type":"page","userId":"u","name":"Home","properties":{"a":1}}`,
		`{"d":[{"objectId":"o","type":"event","evtName":"E","evtData":{"x":{"y":{"z":1}}}},"x",{}]}`,
		`{"type":"event","identity":"","name":"N"}`,
		`{"\u0074ype":"profile","identity":"\ud800"}`,
		`{"type":"track","userId":"u","event":"E","timestamp":1e30}`,
		`[1,2]`, `"s"`, `{`, ``, "\xff",
	} {
		f.Add([]byte(s))
	}
}

// FuzzNormalize checks what every accepted event must satisfy, whatever the
// input: it has an identity within the limit, a name if it is an event, and
// properties that are a compact JSON object within the limits.
func FuzzNormalize(f *testing.F) {
	fuzzSeeds(f)
	small := Limits{MaxRecordBytes: 512, MaxProperties: 4, MaxDepth: 2, MaxIdentityBytes: 8, MaxFuture: time.Hour,
		MaxUploadBytes: 2048, MaxUploadRecords: 4}
	normalizers := []*Normalizer{
		New(DefaultLimits(), func() time.Time { return testNow }),
		New(small, func() time.Time { return testNow }),
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, n := range normalizers {
			l := n.Limits()
			res := n.Normalize(raw)
			if len(res) == 0 {
				t.Fatal("no results")
			}
			again := n.Normalize(raw)
			for i, r := range res {
				if (r.Event == nil) == (r.Err == nil) {
					t.Fatalf("result %d: event %v and err %v", i, r.Event, r.Err)
				}
				if r.Err != nil {
					if r.Err.Code == "" || r.Err.Reason == "" {
						t.Fatalf("result %d: error without code or reason: %+v", i, r.Err)
					}
					continue
				}
				checkAccepted(t, l, r.Event)
				if len(res) == 1 && !json.Valid(raw) {
					t.Fatalf("accepted a record that is not JSON: %q", raw)
				}
				if again[i].Event.GetId() != r.Event.GetId() {
					t.Fatalf("id not deterministic: %q then %q", r.Event.GetId(), again[i].Event.GetId())
				}
			}
		}
	})
}

func checkAccepted(t *testing.T, l Limits, ev *hookstreamv1.Event) {
	t.Helper()
	id := ev.GetIdentity()
	if id == "" || len(id) > l.MaxIdentityBytes || !utf8.ValidString(id) {
		t.Fatalf("accepted identity %q (limit %d)", id, l.MaxIdentityBytes)
	}
	switch ev.GetKind() {
	case hookstreamv1.Event_KIND_EVENT:
		if ev.GetName() == "" || !utf8.ValidString(ev.GetName()) {
			t.Fatalf("accepted event with name %q", ev.GetName())
		}
	case hookstreamv1.Event_KIND_PROFILE:
		if ev.GetName() != "" {
			t.Fatalf("profile with name %q", ev.GetName())
		}
	default:
		t.Fatalf("accepted kind %v", ev.GetKind())
	}
	p := ev.GetPropertiesJson()
	if len(p) == 0 || p[0] != '{' || !json.Valid(p) || !utf8.Valid(p) {
		t.Fatalf("properties_json %q is not a JSON object", p)
	}
	var c bytes.Buffer
	if err := json.Compact(&c, p); err != nil || !bytes.Equal(c.Bytes(), p) {
		t.Fatalf("properties_json %q is not compact", p)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(p, &m); err != nil {
		t.Fatalf("properties_json %q: %v", p, err)
	}
	if _, depth, members := appendCompact(nil, p); depth > l.MaxDepth || members > l.MaxProperties {
		t.Fatalf("properties_json %q: depth %d members %d over the limits", p, depth, members)
	}
	if ev.GetId() == "" || len(ev.GetId()) > max(l.MaxIdentityBytes, 34) {
		t.Fatalf("id %q", ev.GetId())
	}
	switch ev.GetSourceFormat() {
	case FormatNative, FormatCleverTap, FormatSegment:
	default:
		t.Fatalf("source_format %q", ev.GetSourceFormat())
	}
	now := testNow.UnixMilli()
	if ev.GetIngestedMs() != now || ev.GetTsMs() < 0 || ev.GetTsMs() > now+l.MaxFuture.Milliseconds() {
		t.Fatalf("ts_ms %d ingested_ms %d", ev.GetTsMs(), ev.GetIngestedMs())
	}
}

// FuzzSplitBody checks that SplitBody never panics, that an error is a
// bad_body *Error, and that records are non-empty pieces of the body that
// start like an object (or, inside an array, are JSON values).
func FuzzSplitBody(f *testing.F) {
	fuzzSeeds(f)
	f.Add([]byte("{\"a\":1}\n{\"b\":\n{\"c\":3}"))
	f.Add([]byte(`[{"a":1},"x",[2]]`))
	f.Add([]byte("{\n \"a\": 1,\n}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		recs, err := SplitBody(body)
		if err != nil {
			e, ok := err.(*Error)
			if !ok || e.Code != CodeBadBody || e.Reason == "" || recs != nil {
				t.Fatalf("error %#v with records %q", err, recs)
			}
			return
		}
		if len(recs) == 0 {
			t.Fatal("no records and no error")
		}
		trimmed := trimSpace(body)
		for i, r := range recs {
			if len(r) == 0 || !bytes.Contains(body, r) {
				t.Fatalf("record %d %q is not part of the body", i, r)
			}
			if trimmed[0] == '[' {
				if !json.Valid(r) {
					t.Fatalf("array element %d %q is not JSON", i, r)
				}
			} else if r[0] != '{' {
				t.Fatalf("record %d %q does not start with '{'", i, r)
			}
		}
		if trimmed[0] == '{' && json.Valid(trimmed) && (len(recs) != 1 || !bytes.Equal(recs[0], trimmed)) {
			t.Fatalf("one JSON object split into %q", recs)
		}
	})
}
