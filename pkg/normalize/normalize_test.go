package normalize

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// testNow is the fixed clock of these tests: after every example record.
var testNow = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func newTestNormalizer() *Normalizer {
	return New(DefaultLimits(), func() time.Time { return testNow })
}

// want describes an expected event; Id "derived" means an "h-" id.
type want struct {
	Kind     hookstreamv1.Event_Kind
	Identity string
	Name     string
	TsMs     int64
	Id       string
	Props    string
	Format   string
}

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

func checkEvent(t *testing.T, got *hookstreamv1.Event, w want, raw []byte) {
	t.Helper()
	if got == nil {
		t.Fatalf("no event")
	}
	if got.GetKind() != w.Kind || got.GetIdentity() != w.Identity || got.GetName() != w.Name ||
		got.GetTsMs() != w.TsMs || got.GetSourceFormat() != w.Format {
		t.Errorf("event = kind %v identity %q name %q ts %d format %q; want kind %v identity %q name %q ts %d format %q",
			got.GetKind(), got.GetIdentity(), got.GetName(), got.GetTsMs(), got.GetSourceFormat(),
			w.Kind, w.Identity, w.Name, w.TsMs, w.Format)
	}
	if got.GetIngestedMs() != testNow.UnixMilli() {
		t.Errorf("ingested_ms = %d, want %d", got.GetIngestedMs(), testNow.UnixMilli())
	}
	switch w.Id {
	case "derived":
		if want := derivedID(bytes.TrimSpace(raw)); got.GetId() != want {
			t.Errorf("id = %q, want derived %q", got.GetId(), want)
		}
	default:
		if got.GetId() != w.Id {
			t.Errorf("id = %q, want %q", got.GetId(), w.Id)
		}
	}
	p := got.GetPropertiesJson()
	var c bytes.Buffer
	if err := json.Compact(&c, p); err != nil || c.String() != string(p) {
		t.Errorf("properties_json %s is not compact JSON (err %v)", p, err)
	}
	if !jsonEqual(t, p, []byte(w.Props)) {
		t.Errorf("properties_json = %s, want %s", p, w.Props)
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Errorf("unmarshal %s: %v", a, err)
		return false
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("unmarshal want %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func readLines(t *testing.T, name string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := SplitBody(b)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestNormalizeExamples(t *testing.T) {
	n := newTestNormalizer()
	tests := []struct {
		file string
		want []want
	}{
		{"events-native.ndjson", []want{
			{hookstreamv1.Event_KIND_PROFILE, "u-1001", "", ms("2026-11-27T09:59:00Z"), "derived",
				`{"Email":"jack@example.com","Name":"Jack","Country":"Canada","City":"Toronto","Timezone":"America/Toronto","Push_token":"19403aa5d3bb376769a8101c9cbf22159cb1836117659cc684a71243589982ea","Last Score":308}`, FormatNative},
			{hookstreamv1.Event_KIND_EVENT, "u-1001", "Added To Cart", ms("2026-11-27T10:00:00Z"), "e-0001",
				`{"ProductId":"sku-42","Price":899.0,"Currency":"CAD"}`, FormatNative},
			{hookstreamv1.Event_KIND_EVENT, "u-1001", "Charged", 1764237900000, "derived",
				`{"ProductId":"sku-42","Amount":899.0}`, FormatNative},
			{hookstreamv1.Event_KIND_EVENT, "u-1002", "Order Shipped", 1764237900123, "derived",
				`{"OrderId":"o-77","DeliveryDate":"2026-11-30T12:00:00Z"}`, FormatNative},
		}},
		{"events-segment.ndjson", []want{
			{hookstreamv1.Event_KIND_PROFILE, "u-3001", "", ms("2026-11-27T10:00:00Z"), "ajs-1",
				`{"Email":"ann@example.com","Country":"USA"}`, FormatSegment},
			{hookstreamv1.Event_KIND_EVENT, "u-3001", "Order Completed", ms("2026-11-27T10:05:00Z"), "ajs-2",
				`{"order_id":"50314b8e","total":27.5,"currency":"USD"}`, FormatSegment},
			{hookstreamv1.Event_KIND_EVENT, "anon-9", "Signed Up", ms("2026-11-27T10:06:00Z"), "derived",
				`{"plan":"free"}`, FormatSegment},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			recs := readLines(t, tt.file)
			if len(recs) != len(tt.want) {
				t.Fatalf("%d records, want %d", len(recs), len(tt.want))
			}
			for i, rec := range recs {
				res := n.Normalize(rec)
				if len(res) != 1 || res[0].Err != nil {
					t.Fatalf("record %d: results %+v", i, res)
				}
				if !bytes.Equal(res[0].Raw, rec) {
					t.Errorf("record %d: Raw = %s", i, res[0].Raw)
				}
				checkEvent(t, res[0].Event, tt.want[i], rec)
			}
		})
	}

	t.Run("events-clevertap.json", func(t *testing.T) {
		recs := readLines(t, "events-clevertap.json")
		if len(recs) != 1 {
			t.Fatalf("SplitBody gave %d records, want the upload as one", len(recs))
		}
		res := n.Normalize(recs[0])
		wants := []want{
			{hookstreamv1.Event_KIND_PROFILE, "u-2001", "", testNow.UnixMilli(), "derived",
				`{"Email":"jill@example.com","Country":"India","Timezone":"Asia/Kolkata"}`, FormatCleverTap},
			{hookstreamv1.Event_KIND_EVENT, "u-2001", "Product viewed", 1764237600000, "derived",
				`{"Product name":"Casio Chronograph Watch","Category":"Mens Watch","Price":59.99}`, FormatCleverTap},
			{hookstreamv1.Event_KIND_EVENT, "__g09c9bf3b0d374a259c86f5b855ec9b19", "App Launched", 1764237660000, "derived",
				`{}`, FormatCleverTap},
		}
		if len(res) != len(wants) {
			t.Fatalf("%d results, want %d", len(res), len(wants))
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("element %d: %v", i, r.Err)
			}
			if r.Index != i {
				t.Errorf("element %d: Index %d", i, r.Index)
			}
			if !json.Valid(r.Raw) || !bytes.Contains(recs[0], r.Raw) || r.Raw[0] != '{' {
				t.Errorf("element %d: Raw %q is not the element's bytes", i, r.Raw)
			}
			checkEvent(t, r.Event, wants[i], r.Raw)
		}
	})
}

func TestNormalizeFormats(t *testing.T) {
	n := newTestNormalizer()
	now := testNow.UnixMilli()
	tests := []struct {
		name string
		raw  string
		want want
	}{
		{"native event, integer identity", `{"type":"event","identity":42,"name":"X","ts":1764237600}`,
			want{hookstreamv1.Event_KIND_EVENT, "42", "X", 1764237600000, "derived", `{}`, FormatNative}},
		{"native profile, null properties", `{"type":"profile","identity":"u","properties":null}`,
			want{hookstreamv1.Event_KIND_PROFILE, "u", "", now, "derived", `{}`, FormatNative}},
		{"native, whitespace compacted", "{ \"type\" : \"event\" ,\n \"identity\":\"u\", \"name\":\"A b\",\"properties\" : { \"k\" : [ 1 , \"x y\" ] } }",
			want{hookstreamv1.Event_KIND_EVENT, "u", "A b", now, "derived", `{"k":[1,"x y"]}`, FormatNative}},
		{"native, escaped strings", `{"type":"event","identity":"u\u00e9","name":"A\"B","id":"i\/1"}`,
			want{hookstreamv1.Event_KIND_EVENT, "ué", `A"B`, now, "i/1", `{}`, FormatNative}},
		{"native, escaped key", `{"\u0074ype":"event","identity":"u","name":"N"}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "N", now, "derived", `{}`, FormatNative}},
		{"native, unknown keys ignored", `{"type":"event","identity":"u","name":"N","extra":{"deep":[[[[[[1]]]]]]}}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "N", now, "derived", `{}`, FormatNative}},
		{"native, numeric id", `{"type":"event","identity":"u","name":"N","id":123}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "N", now, "123", `{}`, FormatNative}},
		{"native, empty id derives", `{"type":"event","identity":"u","name":"N","id":""}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "N", now, "derived", `{}`, FormatNative}},
		{"segment track, userId wins over anonymousId", `{"type":"track","userId":"u","anonymousId":"a","event":"E","messageId":"m"}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "E", now, "m", `{}`, FormatSegment}},
		{"segment track, anonymousId fallback", `{"type":"track","anonymousId":"a","event":"E"}`,
			want{hookstreamv1.Event_KIND_EVENT, "a", "E", now, "derived", `{}`, FormatSegment}},
		{"segment track, null userId falls back", `{"type":"track","userId":null,"anonymousId":"a","event":"E"}`,
			want{hookstreamv1.Event_KIND_EVENT, "a", "E", now, "derived", `{}`, FormatSegment}},
		{"segment track, empty userId falls back", `{"type":"track","userId":"","anonymousId":"a","event":"E"}`,
			want{hookstreamv1.Event_KIND_EVENT, "a", "E", now, "derived", `{}`, FormatSegment}},
		{"segment track, originalTimestamp", `{"type":"track","userId":"u","event":"E","originalTimestamp":"2026-11-27T10:00:00Z","context":{"ip":"1.2.3.4"}}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "E", ms("2026-11-27T10:00:00Z"), "derived", `{}`, FormatSegment}},
		{"segment page", `{"type":"page","userId":"u","name":"Home","properties":{"url":"https://x/"}}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "Page Viewed", now, "derived", `{"url":"https://x/","name":"Home"}`, FormatSegment}},
		{"segment page, properties name wins", `{"type":"page","userId":"u","name":"Home","properties":{"name":"Mine"}}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "Page Viewed", now, "derived", `{"name":"Mine"}`, FormatSegment}},
		{"segment screen, no properties", `{"type":"screen","userId":"u","name":"Cart"}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "Screen Viewed", now, "derived", `{"name":"Cart"}`, FormatSegment}},
		{"segment screen, no name", `{"type":"screen","userId":"u"}`,
			want{hookstreamv1.Event_KIND_EVENT, "u", "Screen Viewed", now, "derived", `{}`, FormatSegment}},
		{"segment identify, reserved traits", `{"type":"identify","userId":"u","traits":{"email":"a@b","name":"Ann","phone":"+1","address":{"city":"Toronto","country":"Canada","street":"1 Main"},"plan":"pro","nested":{"x":1}},"context":{"timezone":"America/Toronto"}}`,
			want{hookstreamv1.Event_KIND_PROFILE, "u", "", now, "derived",
				`{"Email":"a@b","Name":"Ann","Phone":"+1","address":{"city":"Toronto","country":"Canada","street":"1 Main"},"plan":"pro","nested":{"x":1},"City":"Toronto","Country":"Canada","Timezone":"America/Toronto"}`, FormatSegment}},
		{"segment identify, explicit well-known wins", `{"type":"identify","userId":"u","traits":{"email":"a@b","Email":"E@b","address":{"city":"X"},"City":"Y"}}`,
			want{hookstreamv1.Event_KIND_PROFILE, "u", "", now, "derived", `{"email":"a@b","Email":"E@b","address":{"city":"X"},"City":"Y"}`, FormatSegment}},
		{"segment identify, no traits", `{"type":"identify","anonymousId":"a","context":{"timezone":"Asia/Kolkata"}}`,
			want{hookstreamv1.Event_KIND_PROFILE, "a", "", now, "derived", `{"Timezone":"Asia/Kolkata"}`, FormatSegment}},
		{"clevertap objectId fallback", `{"d":[{"objectId":"o-1","type":"profile","profileData":{"Name":"N"}}]}`,
			want{hookstreamv1.Event_KIND_PROFILE, "o-1", "", now, "", `{"Name":"N"}`, FormatCleverTap}},
		{"clevertap upload with null type", `{"type":null,"d":[{"identity":"i-1","type":"profile"}]}`,
			want{hookstreamv1.Event_KIND_PROFILE, "i-1", "", now, "", `{}`, FormatCleverTap}},
		{"clevertap identity wins over objectId", `{"d":[{"identity":"i-1","objectId":"o-1","type":"event","evtName":"E","ts":"1764237600"}]}`,
			want{hookstreamv1.Event_KIND_EVENT, "i-1", "E", 1764237600000, "", `{}`, FormatCleverTap}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := n.Normalize([]byte(tt.raw))
			if len(res) != 1 || res[0].Err != nil {
				t.Fatalf("results %+v (err %v)", res, res[0].Err)
			}
			w := tt.want
			if w.Id == "" { // CleverTap: derived from the element
				w.Id = derivedID(res[0].Raw)
			}
			checkEvent(t, res[0].Event, w, []byte(tt.raw))
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	n := newTestNormalizer()
	big := `{"type":"event","identity":"u","name":"N","properties":{"p":"` + strings.Repeat("x", 64<<10) + `"}}`
	var many strings.Builder
	many.WriteString(`{"type":"event","identity":"u","name":"N","properties":{`)
	for i := range 257 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`"k` + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + `":` + "1")
	}
	many.WriteString(`}}`)
	tests := []struct {
		name, raw, code, reason string
	}{
		{"not json", `hello`, CodeNotJSON, `record: not JSON: unexpected character 'h' at offset 0`},
		{"truncated", `{"type":"event"`, CodeNotJSON, `record: not JSON: expected ',' or '}' in object, found end of input at offset 15`},
		{"trailing data", `{"type":"event"} x`, CodeNotJSON, `record: not JSON: unexpected data after the object at offset 17`},
		{"empty", "  \n", CodeNotJSON, `record: empty`},
		{"binary", "\x00\x01\x02", CodeNotJSON, `record: not JSON: unexpected byte 0x00 at offset 0`},
		{"broken array", `[1,`, CodeNotJSON, `record: not JSON: unexpected end of input at offset 3`},
		{"two values", `1 2`, CodeNotJSON, `record: not JSON: unexpected data after the value at offset 1`},
		{"array", `[{"type":"event"}]`, CodeNotObject, `record: must be a JSON object, got array`},
		{"string", `"event"`, CodeNotObject, `record: must be a JSON object, got string`},
		{"invalid utf8", "{\"type\":\"event\",\"identity\":\"u\xff\",\"name\":\"N\"}", CodeInvalidUTF8, `record: not valid UTF-8`},
		{"too large", big, CodeTooLarge, `record: 65600 bytes, more than 65536`},
		{"duplicate key", `{"type":"event","identity":"a","identity":"b","name":"N"}`, CodeDuplicateKey, `identity: given more than once`},
		{"no type", `{"identity":"u","name":"N"}`, CodeUnknownType, `type: missing (expected event, profile, track, identify, page or screen, or a CleverTap upload {"d":[...]})`},
		{"type not string", `{"type":1,"identity":"u"}`, CodeUnknownType, `type: must be a string, got number`},
		{"unknown type", `{"type":"purchase","identity":"u"}`, CodeUnknownType, `type: unknown type "purchase" (expected event, profile, track, identify, page or screen)`},
		{"long unknown type", `{"type":"` + strings.Repeat("x", 70) + `","identity":"u"}`, CodeUnknownType, `type: unknown type "` + strings.Repeat("x", 64) + `…" (expected event, profile, track, identify, page or screen)`},
		{"typed record with d is not an upload", `{"type":"event","identity":"u","d":[]}`, CodeMissingName, `name: missing`},
		{"segment alias", `{"type":"alias","userId":"u","previousId":"p"}`, CodeUnknownType, `type: Segment "alias" calls are not supported (only track, identify, page and screen)`},
		{"segment group", `{"type":"group","userId":"u","groupId":"g"}`, CodeUnknownType, `type: Segment "group" calls are not supported (only track, identify, page and screen)`},
		{"no identity", `{"type":"event","name":"N"}`, CodeNoIdentity, `identity: missing`},
		{"null identity", `{"type":"event","identity":null,"name":"N"}`, CodeNoIdentity, `identity: missing`},
		{"empty identity", `{"type":"event","identity":"","name":"N"}`, CodeNoIdentity, `identity: empty`},
		{"native ignores userId", `{"type":"event","userId":"u","name":"N"}`, CodeNoIdentity, `identity: missing`},
		{"segment no identity", `{"type":"track","event":"E"}`, CodeNoIdentity, `userId: missing, and no anonymousId`},
		{"segment empty anonymousId", `{"type":"track","userId":"","anonymousId":"","event":"E"}`, CodeNoIdentity, `anonymousId: empty`},
		{"identity object", `{"type":"event","identity":{"id":1},"name":"N"}`, CodeBadIdentity, `identity: must be a string, got object`},
		{"identity float", `{"type":"event","identity":1.5,"name":"N"}`, CodeBadIdentity, `identity: must be a string, got number`},
		{"identity bool", `{"type":"event","identity":true,"name":"N"}`, CodeBadIdentity, `identity: must be a string, got boolean`},
		{"identity too long", `{"type":"event","identity":"` + strings.Repeat("u", 257) + `","name":"N"}`, CodeIdentityTooLong, `identity: longer than 256 bytes`},
		{"userId too long", `{"type":"track","userId":"` + strings.Repeat("u", 257) + `","event":"N"}`, CodeIdentityTooLong, `userId: longer than 256 bytes`},
		{"missing name", `{"type":"event","identity":"u"}`, CodeMissingName, `name: missing`},
		{"empty name", `{"type":"event","identity":"u","name":""}`, CodeMissingName, `name: empty`},
		{"bare clevertap record", `{"type":"event","identity":"u","evtName":"E"}`, CodeMissingName, `name: missing (a CleverTap record with evtName must be sent inside an upload object {"d":[...]})`},
		{"segment missing event", `{"type":"track","userId":"u"}`, CodeMissingName, `event: missing`},
		{"name not string", `{"type":"event","identity":"u","name":5}`, CodeBadName, `name: must be a string, got number`},
		{"page name not string", `{"type":"page","userId":"u","name":[]}`, CodeBadName, `name: must be a string, got array`},
		{"id object", `{"type":"event","identity":"u","name":"N","id":{}}`, CodeBadID, `id: must be a string, got object`},
		{"messageId too long", `{"type":"track","userId":"u","event":"N","messageId":"` + strings.Repeat("m", 257) + `"}`, CodeBadID, `messageId: longer than 256 bytes`},
		{"ts absurd", `{"type":"event","identity":"u","name":"N","ts":1e30}`, CodeBadTimestamp, `ts: 1e30 is not a valid time`},
		{"ts negative", `{"type":"event","identity":"u","name":"N","ts":-1}`, CodeBadTimestamp, `ts: -1 is not a valid time`},
		{"ts microseconds", `{"type":"event","identity":"u","name":"N","ts":1764237600000000}`, CodeBadTimestamp, `ts: 1764237600000000 is not a valid time`},
		{"ts garbage string", `{"type":"event","identity":"u","name":"N","ts":"yesterday"}`, CodeBadTimestamp, `ts: "yesterday" is not a valid time`},
		{"ts NaN string", `{"type":"event","identity":"u","name":"N","ts":"NaN"}`, CodeBadTimestamp, `ts: "NaN" is not a valid time`},
		{"ts empty string", `{"type":"event","identity":"u","name":"N","ts":""}`, CodeBadTimestamp, `ts: "" is not a valid time`},
		{"ts before 1970", `{"type":"event","identity":"u","name":"N","ts":"1969-12-31T23:59:59Z"}`, CodeBadTimestamp, `ts: "1969-12-31T23:59:59Z" is not a valid time`},
		{"ts not RFC 3339", `{"type":"event","identity":"u","name":"N","ts":"2026-11-27 10:00:00"}`, CodeBadTimestamp, `ts: "2026-11-27 10:00:00" is not a valid time`},
		{"ts bool", `{"type":"event","identity":"u","name":"N","ts":true}`, CodeBadTimestamp, `ts: must be an RFC 3339 string or Unix seconds or milliseconds, got boolean`},
		{"segment timestamp bad", `{"type":"track","userId":"u","event":"N","timestamp":"x"}`, CodeBadTimestamp, `timestamp: "x" is not a valid time`},
		{"ts future", `{"type":"event","identity":"u","name":"N","ts":"2026-11-28T12:00:01Z"}`, CodeFutureTimestamp, `ts: "2026-11-28T12:00:01Z" is more than 24h0m0s in the future`},
		{"ts future seconds", `{"type":"event","identity":"u","name":"N","ts":1900000000}`, CodeFutureTimestamp, `ts: 1900000000 is more than 24h0m0s in the future`},
		{"properties array", `{"type":"event","identity":"u","name":"N","properties":[1]}`, CodeBadProperties, `properties: must be a JSON object, got array`},
		{"properties string", `{"type":"profile","identity":"u","properties":"x"}`, CodeBadProperties, `properties: must be a JSON object, got string`},
		{"traits array", `{"type":"identify","userId":"u","traits":[]}`, CodeBadProperties, `traits: must be a JSON object, got array`},
		{"too many properties", many.String(), CodeTooManyProperties, `properties: 257 properties, more than 256`},
		{"too deep", `{"type":"event","identity":"u","name":"N","properties":{"a":{"b":{"c":{"d":{"e":{}}}}}}}`, CodeTooDeep, `properties: nesting deeper than 5`},
		{"too deep array", `{"type":"event","identity":"u","name":"N","properties":{"a":[[[[[1]]]]]}}`, CodeTooDeep, `properties: nesting deeper than 5`},
		{"traits too deep", `{"type":"identify","userId":"u","traits":{"a":{"b":{"c":{"d":{"e":{}}}}}}}`, CodeTooDeep, `traits: nesting deeper than 5`},
		{"page too deep", `{"type":"page","userId":"u","properties":{"a":{"b":{"c":{"d":{"e":{}}}}}}}`, CodeTooDeep, `properties: nesting deeper than 5`},
		{"upload d not array", `{"d":{"type":"event"}}`, CodeBadUpload, `d: must be an array of records, got object`},
		{"upload empty", `{"d":[]}`, CodeBadUpload, `d: empty, no records`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := n.Normalize([]byte(tt.raw))
			if len(res) != 1 {
				t.Fatalf("%d results, want 1", len(res))
			}
			r := res[0]
			if r.Event != nil || r.Err == nil {
				t.Fatalf("accepted: %v", r.Event)
			}
			if r.Err.Code != tt.code || r.Err.Reason != tt.reason {
				t.Errorf("error = %s / %q\n want %s / %q", r.Err.Code, r.Err.Reason, tt.code, tt.reason)
			}
			if r.Err.Error() != r.Err.Reason {
				t.Errorf("Error() = %q", r.Err.Error())
			}
			if string(r.Raw) != tt.raw {
				t.Errorf("Raw is not the record")
			}
		})
	}
}

func TestDepthLimitBoundary(t *testing.T) {
	n := newTestNormalizer()
	ok := `{"type":"event","identity":"u","name":"N","properties":{"a":{"b":{"c":{"d":{"e":1}}}}}}`
	if r := n.Normalize([]byte(ok))[0]; r.Err != nil {
		t.Errorf("depth 5 rejected: %v", r.Err)
	}
	var props strings.Builder
	props.WriteString("{")
	for i := range 256 {
		if i > 0 {
			props.WriteString(",")
		}
		props.WriteString(`"k` + strings.Repeat("1", i) + `":1`)
	}
	props.WriteString("}")
	rec := `{"type":"profile","identity":"u","properties":` + props.String() + `}`
	if len(rec) > 64<<10 {
		t.Fatalf("test record too large")
	}
	if r := n.Normalize([]byte(rec))[0]; r.Err != nil {
		t.Errorf("256 properties rejected: %v", r.Err)
	}
}

func TestTimestampForms(t *testing.T) {
	n := newTestNormalizer()
	base := ms("2026-11-27T10:00:00Z")
	tests := []struct {
		ts   string
		want int64
	}{
		{`"2026-11-27T10:00:00Z"`, base},
		{`"2026-11-27T10:00:00.123Z"`, base + 123},
		{`"2026-11-27T11:00:00+01:00"`, base},
		{`"2026-11-27T10:00:00.123456789Z"`, base + 123},
		{`1795773600`, base},              // seconds
		{`1795773600.5`, base + 500},      // fractional seconds
		{`1795773600123`, base + 123},     // milliseconds
		{`1795773600123.4`, base + 123},   // fractional milliseconds
		{`"1795773600"`, base},            // numeric string, seconds
		{`"1795773600123"`, base + 123},   // numeric string, milliseconds
		{`1.7957736e9`, base},             // exponent
		{`100000000000`, 100000000000000}, // 1e11 is still seconds (year 5138): future
		{`100000000001`, 100000000001},    // above 1e11: milliseconds
		{`0`, 0},
		{`null`, testNow.UnixMilli()},
		{`"2026-11-28T12:00:00Z"`, testNow.UnixMilli() + 24*3600*1000}, // exactly MaxFuture ahead
	}
	for _, tt := range tests {
		t.Run(tt.ts, func(t *testing.T) {
			r := n.Normalize([]byte(`{"type":"event","identity":"u","name":"N","ts":` + tt.ts + `}`))[0]
			if tt.ts == `100000000000` {
				if r.Err == nil || r.Err.Code != CodeFutureTimestamp {
					t.Fatalf("want future_timestamp, got %+v", r)
				}
				return
			}
			if r.Err != nil {
				t.Fatalf("rejected: %v", r.Err)
			}
			if r.Event.GetTsMs() != tt.want {
				t.Errorf("ts_ms = %d, want %d", r.Event.GetTsMs(), tt.want)
			}
		})
	}
	if base != 1795773600000 {
		t.Fatalf("base = %d", base)
	}
}

func TestDerivedID(t *testing.T) {
	n := newTestNormalizer()
	id := func(raw string) string {
		t.Helper()
		r := n.Normalize([]byte(raw))[0]
		if r.Err != nil {
			t.Fatalf("%s: %v", raw, r.Err)
		}
		return r.Event.GetId()
	}
	a := `{"type":"event","identity":"u","name":"N","properties":{"x":1}}`
	b := `{"type":"event","identity":"u","name":"N","properties":{"x":2}}`
	if id(a) != id(a) {
		t.Error("same bytes, different ids")
	}
	if id(a) == id(b) {
		t.Error("different bytes, same id")
	}
	if id(a) != id("\n  "+a+"\r\n") {
		t.Error("surrounding whitespace changed the id")
	}
	if got := id(a); !strings.HasPrefix(got, "h-") || len(got) != 34 {
		t.Errorf("derived id %q: want h- and 32 hex digits", got)
	}
	if id(a) != derivedID([]byte(a)) {
		t.Error("id is not derivedID of the record")
	}
	// The same CleverTap element gets the same id in any upload.
	el := `{"identity":"u","type":"event","evtName":"E"}`
	r1 := n.Normalize([]byte(`{"d":[` + el + `]}`))
	r2 := n.Normalize([]byte(`{"d":[{"identity":"v","type":"event","evtName":"F"}, ` + el + `]}`))
	if r1[0].Event.GetId() != r2[1].Event.GetId() || r1[0].Event.GetId() == r2[0].Event.GetId() {
		t.Errorf("CleverTap ids: %q %q %q", r1[0].Event.GetId(), r2[0].Event.GetId(), r2[1].Event.GetId())
	}
}

func TestUpload(t *testing.T) {
	n := newTestNormalizer()
	raw := `{"d":[
		{"identity":"u","type":"event","evtName":"E","evtData":{"a":1}},
		"junk",
		{"type":"event","evtName":"E"},
		{"identity":"u","type":"track","evtName":"E"},
		{"identity":"u","type":"event","evtData":{}},
		{"identity":"u","type":"profile","profileData":[1]},
		{"identity":"u","type":"event","evtName":"E","ts":1e30},
		{"identity":"u` + "\xff" + `","type":"profile"},
		{"identity":"u","type":"profile","profileData":{"Name":"N"},"ts":1764237600}
	]}`
	res := n.Normalize([]byte(raw))
	wants := []struct{ code, reason string }{
		{"", ""},
		{CodeNotObject, "record: must be a JSON object, got string"},
		{CodeNoIdentity, "identity: missing, and no objectId"},
		{CodeUnknownType, `type: "track" is not a CleverTap record type (expected event or profile)`},
		{CodeMissingName, "evtName: missing"},
		{CodeBadProperties, "profileData: must be a JSON object, got array"},
		{CodeBadTimestamp, "ts: 1e30 is not a valid time"},
		{CodeInvalidUTF8, "record: not valid UTF-8"},
		{"", ""},
	}
	if len(res) != len(wants) {
		t.Fatalf("%d results, want %d", len(res), len(wants))
	}
	for i, w := range wants {
		r := res[i]
		if r.Index != i {
			t.Errorf("%d: Index = %d", i, r.Index)
		}
		if !bytes.Contains([]byte(raw), r.Raw) || len(r.Raw) == 0 {
			t.Errorf("%d: Raw %q not from the upload", i, r.Raw)
		}
		if w.code == "" {
			if r.Err != nil || r.Event == nil {
				t.Errorf("%d: rejected: %v", i, r.Err)
			}
			continue
		}
		if r.Err == nil || r.Err.Code != w.code || r.Err.Reason != w.reason {
			t.Errorf("%d: err = %+v, want %s %q", i, r.Err, w.code, w.reason)
		}
	}

	t.Run("limits", func(t *testing.T) {
		l := DefaultLimits()
		l.MaxRecordBytes = 100
		l.MaxUploadBytes = 300
		l.MaxUploadRecords = 3
		n := New(l, func() time.Time { return testNow })
		el := `{"identity":"u","type":"event","evtName":"E"}`
		bigEl := `{"identity":"u","type":"event","evtName":"E","evtData":{"x":"` + strings.Repeat("x", 60) + `"}}`
		tests := []struct {
			name, raw, code, reason string
		}{
			{"element too large", `{"d":[` + el + `,` + bigEl + `]}`, "", ""},
			{"too many elements", `{"d":[` + el + `,` + el + `,` + el + `,` + el + `]}`, CodeTooManyRecords, "d: 4 records, more than 3"},
			{"upload too large", `{"d":[` + el + `,` + el + `,` + el + `],"pad":"` + strings.Repeat("p", 200) + `"}`, CodeTooLarge, "record: 354 bytes, more than 300"},
			{"upload larger than a record is fine", `{"d":[` + el + `,` + el + `,` + el + `]}`, "", ""},
			{"native record over the record limit", `{"type":"event","identity":"u","name":"N","properties":{"x":"` + strings.Repeat("x", 60) + `"}}`, CodeTooLarge, "record: 124 bytes, more than 100"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res := n.Normalize([]byte(tt.raw))
				if tt.code == "" {
					for _, r := range res {
						if r.Err != nil && r.Err.Code != CodeTooLarge {
							t.Errorf("element %d: %v", r.Index, r.Err)
						}
					}
					if tt.name == "element too large" {
						if len(res) != 2 || res[0].Err != nil || res[1].Err == nil ||
							res[1].Err.Reason != "record: 124 bytes, more than 100" {
							t.Errorf("results: %+v %+v", res[0].Err, res[1].Err)
						}
					}
					return
				}
				if len(res) != 1 || res[0].Err == nil || res[0].Err.Code != tt.code || res[0].Err.Reason != tt.reason {
					t.Fatalf("results %d, first err %+v; want %s %q", len(res), res[0].Err, tt.code, tt.reason)
				}
			})
		}
	})
}

func TestLimitsDefaults(t *testing.T) {
	n := New(Limits{MaxRecordBytes: 1000}, nil)
	l := n.Limits()
	d := DefaultLimits()
	if l.MaxRecordBytes != 1000 || l.MaxUploadBytes != 64000 || l.MaxProperties != d.MaxProperties ||
		l.MaxDepth != d.MaxDepth || l.MaxIdentityBytes != d.MaxIdentityBytes || l.MaxFuture != d.MaxFuture ||
		l.MaxUploadRecords != d.MaxUploadRecords {
		t.Errorf("limits = %+v", l)
	}
	if d.MaxRecordBytes != 64<<10 || d.MaxProperties != 256 || d.MaxDepth != 5 || d.MaxIdentityBytes != 256 || d.MaxFuture != 24*time.Hour {
		t.Errorf("defaults = %+v", d)
	}
	// A nil clock is the wall clock.
	r := n.Normalize([]byte(`{"type":"event","identity":"u","name":"N"}`))[0]
	if r.Err != nil || time.Since(time.UnixMilli(r.Event.GetIngestedMs())) > time.Minute {
		t.Errorf("nil clock: %+v", r)
	}
}
