package ingest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// This file generates a deterministic mix of raw records in every input
// format, valid and invalid with every error kind, and what ingest must make
// of each: used by the kcat test, the restart tests and the benchmarks.

// outcome is what must become of one record, or of one element of a
// CleverTap upload.
type outcome struct {
	index int // element of a CleverTap upload; 0 otherwise
	// identity is the key on the events topic of a valid record.
	identity string
	// code and reason are the DLQ headers of an invalid record; dlq is the
	// DLQ value (the record's, or the element's, original bytes).
	code, reason string
	dlq          []byte
}

func (o outcome) valid() bool { return o.code == "" }

// mixRecord is one raw record and its outcomes.
type mixRecord struct {
	template string
	key      []byte // nil: no key
	value    []byte
	outs     []outcome
}

type template struct {
	name string
	// weight is the relative frequency after the first pass, in which
	// every template is used once.
	weight float64
	gen    func(i int) (value string, outs []outcome)
}

func ok(identity string) outcome { return outcome{identity: identity} }

// bad is an outcome for a record rejected whole.
func bad(value, code, reason string) []outcome {
	return []outcome{{code: code, reason: reason, dlq: []byte(value)}}
}

// upload builds a CleverTap upload from elements, each valid (its identity)
// or invalid (its code and reason).
func upload(elems []string, outs []outcome) (string, []outcome) {
	for j := range outs {
		outs[j].index = j
		if !outs[j].valid() {
			outs[j].dlq = []byte(elems[j])
		}
	}
	return `{"d":[` + strings.Join(elems, ",") + `]}`, outs
}

func deep(levels int) string {
	return strings.Repeat(`{"a":`, levels-1) + "{}" + strings.Repeat("}", levels-1)
}

func manyProps(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for k := range n {
		if k > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"p%d":%d`, k, k)
	}
	b.WriteString("}")
	return b.String()
}

const unknownTypeReason = " (expected event, profile, track, identify, page or screen)"

var templates = []template{
	// Valid records in every format and timestamp form.
	{"native event, RFC 3339, id", 4, func(i int) (string, []outcome) {
		id := fmt.Sprintf("n-%d", i)
		return fmt.Sprintf(`{"type":"event","identity":%q,"name":"Added To Cart","ts":"2026-11-27T10:00:00Z","properties":{"ProductId":"sku-%d","Price":899.0,"Currency":"CAD","Tags":["gift","sale"]},"id":"e-%d"}`, id, i, i), []outcome{ok(id)}
	}},
	{"native event, Unix seconds, derived id", 4, func(i int) (string, []outcome) {
		id := fmt.Sprintf("s-%d", i)
		return fmt.Sprintf(`{"type":"event","identity":%q,"name":"Charged","ts":1764237900,"properties":{"Amount":%d,"Items":[{"sku":"sku-42","qty":1}]}}`, id, i), []outcome{ok(id)}
	}},
	{"native event, Unix ms, integer identity", 2, func(i int) (string, []outcome) {
		return fmt.Sprintf(`{"type":"event","identity":%d,"name":"Order Shipped","ts":1764237900123}`, 10_000_000+i), []outcome{ok(strconv.Itoa(10_000_000 + i))}
	}},
	{"native profile, pretty-printed", 2, func(i int) (string, []outcome) {
		id := fmt.Sprintf("p-%d", i)
		return fmt.Sprintf("\n  {\n    \"type\": \"profile\",\n    \"identity\": %q,\n    \"properties\": {\"Email\": \"u%d@example.com\", \"Country\": \"Canada\", \"Timezone\": \"America/Toronto\"}\n  }\n", id, i), []outcome{ok(id)}
	}},
	{"segment track", 4, func(i int) (string, []outcome) {
		id := fmt.Sprintf("t-%d", i)
		return fmt.Sprintf(`{"type":"track","userId":%q,"event":"Order Completed","properties":{"order_id":"o-%d","total":27.5,"currency":"USD"},"timestamp":"2026-11-27T10:05:00.000Z","messageId":"ajs-%d"}`, id, i, i), []outcome{ok(id)}
	}},
	{"segment track, anonymousId", 2, func(i int) (string, []outcome) {
		id := fmt.Sprintf("anon-%d", i)
		return fmt.Sprintf(`{"type":"track","anonymousId":%q,"event":"Signed Up","properties":{"plan":"free"}}`, id), []outcome{ok(id)}
	}},
	{"segment identify", 2, func(i int) (string, []outcome) {
		id := fmt.Sprintf("i-%d", i)
		return fmt.Sprintf(`{"type":"identify","userId":%q,"traits":{"email":"ann%d@example.com","address":{"city":"Austin","country":"USA"}},"context":{"timezone":"America/Chicago"},"timestamp":"2026-11-27T10:00:00.000Z"}`, id, i), []outcome{ok(id)}
	}},
	{"segment page", 1, func(i int) (string, []outcome) {
		id := fmt.Sprintf("pg-%d", i)
		return fmt.Sprintf(`{"type":"page","userId":%q,"name":"Home","properties":{"url":"https://example.com/%d"}}`, id, i), []outcome{ok(id)}
	}},
	{"clevertap upload", 3, func(i int) (string, []outcome) {
		a, b, c := fmt.Sprintf("ct-%d", i), fmt.Sprintf("ct-%d-b", i), fmt.Sprintf("__g%d", i)
		return upload([]string{
			fmt.Sprintf(`{"identity":%q,"type":"profile","profileData":{"Email":"jill%d@example.com","Country":"India"}}`, a, i),
			fmt.Sprintf(`{"identity":%q,"ts":1764237600,"type":"event","evtName":"Product viewed","evtData":{"Price":59.99}}`, b),
			fmt.Sprintf(`{"objectId":%q,"ts":"1764237660000","type":"event","evtName":"App Launched","evtData":{}}`, c),
		}, []outcome{ok(a), ok(b), ok(c)})
	}},
	{"clevertap upload, some elements invalid", 2, func(i int) (string, []outcome) {
		a, b := fmt.Sprintf("ctm-%d", i), fmt.Sprintf("ctm-%d-b", i)
		return upload([]string{
			fmt.Sprintf(`{"identity":%q,"type":"event","evtName":"A","ts":1764237600}`, a),
			fmt.Sprintf(`{"type":"event","evtName":"B%d"}`, i),
			fmt.Sprintf(`{"identity":%q,"type":"profile","profileData":{"n":%d}}`, b, i),
			fmt.Sprintf(`{"identity":"ctm-%d-c","type":"event","evtName":"C","evtData":%s}`, i, deep(6)),
			strconv.Itoa(i),
			fmt.Sprintf(`{"identity":"ctm-%d-d","type":"charged"}`, i),
		}, []outcome{
			ok(a),
			{code: "no_identity", reason: "identity: missing, and no objectId"},
			ok(b),
			{code: "too_deep", reason: "evtData: nesting deeper than 5"},
			{code: "not_object", reason: "record: must be a JSON object, got number"},
			{code: "unknown_type", reason: `type: "charged" is not a CleverTap record type (expected event or profile)`},
		})
	}},

	// Invalid records: every error kind.
	{"not JSON", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf("not json %d", i)
		return v, bad(v, "not_json", "record: not JSON: unexpected character 'o' at offset 1") // 'n' starts null
	}},
	{"truncated JSON", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"tr-%d"`, i)
		return v, bad(v, "not_json", "record: not JSON: expected ',' or '}' in object, found end of input at offset "+strconv.Itoa(len(v)))
	}},
	{"binary", 0.2, func(i int) (string, []outcome) {
		v := fmt.Sprintf("\x00\x01\x02\xfe%d", i)
		return v, bad(v, "not_json", "record: not JSON: unexpected byte 0x00 at offset 0")
	}},
	{"empty", 0.1, func(int) (string, []outcome) {
		return "", bad("", "not_json", "record: empty")
	}},
	{"whitespace only", 0.1, func(int) (string, []outcome) {
		return " \t\n ", bad(" \t\n ", "not_json", "record: empty")
	}},
	{"not an object", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`[{"type":"event","identity":"arr-%d"}]`, i)
		return v, bad(v, "not_object", "record: must be a JSON object, got array")
	}},
	{"invalid UTF-8", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf("{\"type\":\"event\",\"identity\":\"u8-%d\xff\",\"name\":\"N\"}", i)
		return v, bad(v, "invalid_utf8", "record: not valid UTF-8")
	}},
	{"record too large", 0.02, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"big-%d","name":"N","properties":{"p":"%s"}}`, i, strings.Repeat("x", 64<<10))
		return v, bad(v, "too_large", fmt.Sprintf("record: %d bytes, more than 65536", len(v)))
	}},
	{"upload with too many records", 0.02, func(i int) (string, []outcome) {
		v := `{"d":[` + strings.TrimSuffix(strings.Repeat(`{"identity":"x","type":"profile"},`, 1001), ",") + `],"n":` + strconv.Itoa(i) + `}`
		return v, bad(v, "too_many_records", "d: 1001 records, more than 1000")
	}},
	{"upload, d not an array", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"d":{"identity":"d-%d"}}`, i)
		return v, bad(v, "bad_upload", "d: must be an array of records, got object")
	}},
	{"upload, d empty", 0.2, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"d":[],"n":%d}`, i)
		return v, bad(v, "bad_upload", "d: empty, no records")
	}},
	{"duplicate key", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"a-%d","identity":"b","name":"N"}`, i)
		return v, bad(v, "duplicate_key", "identity: given more than once")
	}},
	{"no type", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"identity":"nt-%d","name":"N"}`, i)
		return v, bad(v, "unknown_type", `type: missing (expected event, profile, track, identify, page or screen, or a CleverTap upload {"d":[...]})`)
	}},
	{"unknown type", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"purchase","identity":"ut-%d"}`, i)
		return v, bad(v, "unknown_type", `type: unknown type "purchase"`+unknownTypeReason)
	}},
	{"segment alias", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"alias","userId":"al-%d","previousId":"p"}`, i)
		return v, bad(v, "unknown_type", `type: Segment "alias" calls are not supported (only track, identify, page and screen)`)
	}},
	{"no identity", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","name":"N%d"}`, i)
		return v, bad(v, "no_identity", "identity: missing")
	}},
	{"segment, no userId nor anonymousId", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"track","event":"E%d"}`, i)
		return v, bad(v, "no_identity", "userId: missing, and no anonymousId")
	}},
	{"identity not a string", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":{"id":%d},"name":"N"}`, i)
		return v, bad(v, "bad_identity", "identity: must be a string, got object")
	}},
	{"identity too long", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"%s","name":"N%d"}`, strings.Repeat("u", 257), i)
		return v, bad(v, "identity_too_long", "identity: longer than 256 bytes")
	}},
	{"bad id", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"bi-%d","name":"N","id":{}}`, i)
		return v, bad(v, "bad_id", "id: must be a string, got object")
	}},
	{"missing name", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"mn-%d"}`, i)
		return v, bad(v, "missing_name", "name: missing")
	}},
	{"name not a string", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"bn-%d","name":5}`, i)
		return v, bad(v, "bad_name", "name: must be a string, got number")
	}},
	{"bad timestamp", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"bt-%d","name":"N","ts":"yesterday"}`, i)
		return v, bad(v, "bad_timestamp", `ts: "yesterday" is not a valid time`)
	}},
	{"negative timestamp", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"track","userId":"nt-%d","event":"N","timestamp":-1}`, i)
		return v, bad(v, "bad_timestamp", `timestamp: -1 is not a valid time`)
	}},
	{"timestamp in the future", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"ft-%d","name":"N","ts":"2099-01-01T00:00:00Z"}`, i)
		return v, bad(v, "future_timestamp", `ts: "2099-01-01T00:00:00Z" is more than 24h0m0s in the future`)
	}},
	{"properties not an object", 0.3, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"event","identity":"bp-%d","name":"N","properties":[1]}`, i)
		return v, bad(v, "bad_properties", "properties: must be a JSON object, got array")
	}},
	{"too many properties", 0.1, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"profile","identity":"tm-%d","properties":%s}`, i, manyProps(257))
		return v, bad(v, "too_many_properties", "properties: 257 properties, more than 256")
	}},
	{"nesting too deep", 0.5, func(i int) (string, []outcome) {
		v := fmt.Sprintf(`{"type":"identify","userId":"td-%d","traits":%s}`, i, deep(6))
		return v, bad(v, "too_deep", "traits: nesting deeper than 5")
	}},
}

// genMix returns n records: every template once, then a weighted random
// (but reproducible) choice. Invalid records are always keyed "r-<i>", so
// that a dead letter leads back to its record; a third of the valid ones
// have no key.
func genMix(n int) []mixRecord {
	var total float64
	for _, t := range templates {
		total += t.weight
	}
	rng := rand.New(rand.NewPCG(4, 2026))
	out := make([]mixRecord, n)
	for i := range n {
		t := templates[i%len(templates)]
		if i >= len(templates) {
			x := rng.Float64() * total
			for _, t = range templates {
				if x -= t.weight; x < 0 {
					break
				}
			}
		}
		v, outs := t.gen(i)
		r := mixRecord{template: t.name, value: []byte(v), outs: outs, key: []byte("r-" + strconv.Itoa(i))}
		allValid := true
		for _, o := range outs {
			allValid = allValid && o.valid()
		}
		if allValid && i%3 == 0 {
			r.key = nil
		}
		out[i] = r
	}
	return out
}

// rawPos is where a raw record landed.
type rawPos struct {
	partition int32
	offset    int64
}

// ref names an outcome: record rec of the mix, element index.
type ref struct{ rec, index int }

// mixCheck relates a mix to the raw records the broker holds and checks
// what ingest made of them.
type mixCheck struct {
	t     testing.TB
	mix   []mixRecord
	raw   string // the raw topic
	rawAt map[rawPos]int
	posOf []rawPos
	// validAt finds a valid outcome by its identity.
	validAt map[string]ref

	failures int
}

// identifyRaw maps every raw record back to its record of the mix: by key,
// or (unkeyed, always valid) by value. It fails the test unless the raw
// records are exactly the mix.
func identifyRaw(t testing.TB, mix []mixRecord, raw []*kgo.Record) *mixCheck {
	t.Helper()
	m := &mixCheck{t: t, mix: mix, rawAt: map[rawPos]int{}, posOf: make([]rawPos, len(mix)), validAt: map[string]ref{}}
	byValue := map[string]int{}
	for i, r := range mix {
		if r.key == nil {
			byValue[string(r.value)] = i
		}
		for _, o := range r.outs {
			if o.valid() {
				m.validAt[o.identity] = ref{i, o.index}
			}
		}
	}
	if len(raw) != len(mix) {
		t.Fatalf("raw topic holds %d records, %d were produced", len(raw), len(mix))
	}
	for _, r := range raw {
		m.raw = r.Topic
		i, ok := byValue[string(r.Value)]
		if r.Key != nil {
			var err error
			if i, err = strconv.Atoi(string(bytes.TrimPrefix(r.Key, []byte("r-")))); err != nil || i < 0 || i >= len(mix) {
				t.Fatalf("%s: unexpected key %q", pos(r), r.Key)
			}
		} else if !ok {
			t.Fatalf("%s: unexpected unkeyed value %q", pos(r), r.Value)
		}
		if !bytes.Equal(r.Value, mix[i].value) || !bytes.Equal(r.Key, mix[i].key) {
			t.Fatalf("%s: holds key %q value %q for record %d, want key %q value %q", pos(r), r.Key, r.Value, i, mix[i].key, mix[i].value)
		}
		m.rawAt[rawPos{r.Partition, r.Offset}] = i
		m.posOf[i] = rawPos{r.Partition, r.Offset}
	}
	if len(m.rawAt) != len(mix) {
		t.Fatalf("raw records identify %d of the %d records", len(m.rawAt), len(mix))
	}
	return m
}

// fail reports a failure, the first 20 in full.
func (m *mixCheck) fail(format string, args ...any) {
	m.t.Helper()
	if m.failures++; m.failures <= 20 {
		m.t.Errorf(format, args...)
	}
}

// done reports how many failures were not shown.
func (m *mixCheck) done() {
	if m.failures > 20 {
		m.t.Errorf("... and %d more failures", m.failures-20)
	}
}

// outputs checks every record of the events topic and the DLQ against the
// mix (key, identity, error code and reason, original bytes, source
// headers, trace context when wantTrace) and returns where each outcome was
// seen. Outputs of unknown or wrong origin are failures.
func (m *mixCheck) outputs(events, dlq []*kgo.Record, wantTrace string) (seen map[ref][]string, formats, codes map[string]int) {
	m.t.Helper()
	seen, formats, codes = map[ref][]string{}, map[string]int{}, map[string]int{}
	for _, r := range events {
		ev := decodeEvent(m.t, r)
		at, ok := m.validAt[ev.GetIdentity()]
		if !ok {
			m.fail("%s: event for identity %q, which no valid record has", pos(r), ev.GetIdentity())
			continue
		}
		seen[at] = append(seen[at], "events "+pos(r))
		formats[ev.GetSourceFormat()]++
		if !keyedByIdentity(r, ev) {
			m.fail("%s: key %q, identity %q: want key = identity", pos(r), r.Key, ev.GetIdentity())
		}
		if tp, _ := header(r, "traceparent"); tp != wantTrace {
			m.fail("%s: traceparent %q, want the raw record's %q", pos(r), tp, wantTrace)
		}
	}
	for _, r := range dlq {
		h := func(k string) string { v, _ := header(r, k); return v }
		p, perr := strconv.Atoi(h(HeaderSourcePartition))
		o, oerr := strconv.ParseInt(h(HeaderSourceOffset), 10, 64)
		idx, ierr := strconv.Atoi(h(HeaderSourceIndex))
		i, ok := m.rawAt[rawPos{int32(p), o}]
		if perr != nil || oerr != nil || ierr != nil || !ok || h(HeaderSourceTopic) != m.raw {
			m.fail("%s: dead letter does not lead back to a raw record: headers %v", pos(r), r.Headers)
			continue
		}
		at := ref{i, idx}
		seen[at] = append(seen[at], "dlq "+pos(r))
		if idx >= len(m.mix[i].outs) || m.mix[i].outs[idx].valid() {
			m.fail("%s: valid record %d (%s) element %d dead-lettered: %s", pos(r), i, m.mix[i].template, idx, h(HeaderError))
			continue
		}
		out := m.mix[i].outs[idx]
		codes[h(HeaderErrorCode)]++
		if h(HeaderErrorCode) != out.code || h(HeaderError) != out.reason {
			m.fail("%s: record %d (%s) element %d: %s %q, want %s %q", pos(r), i, m.mix[i].template, idx, h(HeaderErrorCode), h(HeaderError), out.code, out.reason)
		}
		if !bytes.Equal(r.Value, out.dlq) {
			m.fail("%s: record %d (%s): DLQ value %q, want the original bytes %q", pos(r), i, m.mix[i].template, r.Value, out.dlq)
		}
		if !bytes.Equal(r.Key, m.mix[i].key) {
			m.fail("%s: record %d: DLQ key %q, want the raw key %q", pos(r), i, r.Key, m.mix[i].key)
		}
		if tp := h("traceparent"); tp != wantTrace {
			m.fail("%s: traceparent %q, want the raw record's %q", pos(r), tp, wantTrace)
		}
	}
	return seen, formats, codes
}

// complete checks that every outcome of the records selected by in was seen
// in its right place (events for valid, DLQ for invalid), and exactly once
// unless dupOK. It returns the number of duplicates.
func (m *mixCheck) complete(seen map[ref][]string, dupOK bool, in func(rec int) bool) (dups int) {
	m.t.Helper()
	for i, r := range m.mix {
		if !in(i) {
			continue
		}
		for _, o := range r.outs {
			at, where := ref{i, o.index}, "events"
			if !o.valid() {
				where = "dlq"
			}
			got := seen[at]
			if len(got) == 0 {
				m.fail("record %d (%s, raw %v) element %d is missing: on neither events nor the DLQ", i, r.template, m.posOf[i], o.index)
				continue
			}
			if len(got) > 1 && !dupOK {
				m.fail("record %d (%s) element %d appears %d times: %v", i, r.template, o.index, len(got), got)
			}
			dups += len(got) - 1
			for _, g := range got {
				if !strings.HasPrefix(g, where+" ") {
					m.fail("record %d (%s) element %d is on %s, want %s only", i, r.template, o.index, g, where)
				}
			}
		}
	}
	return dups
}

// produceMix writes the mix to the raw topic with the Go client.
func (e *env) produceMix(mix []mixRecord) {
	e.t.Helper()
	recs := make([]*kgo.Record, len(mix))
	for i, r := range mix {
		recs[i] = &kgo.Record{Key: r.key, Value: r.value}
	}
	e.produce(e.topics.EventsRaw, recs...)
}
