package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/flagvalue"
	"github.com/hookstream/hookstream/pkg/normalize"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// wantEvent is what a test expects of one record on the events topic.
type wantEvent struct {
	identity, name string
	kind           hookstreamv1.Event_Kind
	format         string
}

const (
	kindEvent   = hookstreamv1.Event_KIND_EVENT
	kindProfile = hookstreamv1.Event_KIND_PROFILE
)

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPostEvents sends bodies to POST /v1/events of an ingest service on
// kfake and checks the answer and what arrives on the events topic.
func TestPostEvents(t *testing.T) {
	e := newEnv(t)
	cfg := defaultConfig()
	cfg.Tokens = flagvalue.Strings{"tok-a", "tok-b"}
	cfg.MaxBodyBytes = 128 << 10
	in, _ := e.start(cfg)
	mux := http.NewServeMux()
	in.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	events := e.reader(e.topics.Events)

	bigBody := `[{"type":"event","identity":"big","name":"N","properties":{"p":"` + strings.Repeat("x", 130<<10) + `"}}]`
	bomb := gzipped(t, []byte("["+strings.Repeat(" ", 1<<20)+"]"))
	validGzip := gzipped(t, []byte(`{"type":"event","identity":"gz-1","name":"Zipped"}`+"\n"+`{"type":"identify","userId":"gz-2","traits":{"email":"g@example.com"}}`))
	const unknownPurchase = `type: unknown type "purchase" (expected event, profile, track, identify, page or screen)`

	tests := []struct {
		name    string
		body    string
		headers map[string]string // added to Authorization: Bearer tok-a, Content-Type: application/json; "" deletes
		status  int
		// accepted and rejected are the 200/400 answer; errText a
		// substring of the {"error": ...} answer of other statuses.
		accepted int
		rejected []Rejection
		errText  string
		events   []wantEvent
	}{
		{
			name:     "one object",
			body:     `{"type":"event","identity":"obj-1","name":"Added To Cart","ts":"2026-11-27T10:00:00Z","properties":{"Price":899}}`,
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"obj-1", "Added To Cart", kindEvent, normalize.FormatNative}},
		},
		{
			name: "array of objects",
			body: `[{"type":"profile","identity":"arr-1","properties":{"Email":"a@example.com"}},
			        {"type":"track","userId":"arr-2","event":"Order Completed","timestamp":"2026-11-27T10:05:00.000Z"}]`,
			status:   200,
			accepted: 2,
			events: []wantEvent{
				{"arr-1", "", kindProfile, normalize.FormatNative},
				{"arr-2", "Order Completed", kindEvent, normalize.FormatSegment},
			},
		},
		{
			name: "NDJSON in every format",
			body: `{"type":"event","identity":"nd-1","name":"Charged","ts":1764237900}
{"type":"identify","userId":"nd-2","traits":{"email":"ann@example.com"},"context":{"timezone":"America/Chicago"}}

{"type":"page","anonymousId":"nd-3","name":"Home"}
{"d":[{"identity":"nd-4","type":"event","evtName":"App Launched","ts":1764237900123}]}
`,
			headers:  map[string]string{"Content-Type": "application/x-ndjson"},
			status:   200,
			accepted: 4,
			events: []wantEvent{
				{"nd-1", "Charged", kindEvent, normalize.FormatNative},
				{"nd-2", "", kindProfile, normalize.FormatSegment},
				{"nd-3", "Page Viewed", kindEvent, normalize.FormatSegment},
				{"nd-4", "App Launched", kindEvent, normalize.FormatCleverTap},
			},
		},
		{
			name: "CleverTap upload",
			body: `{"d":[
 {"identity":"ct-1","type":"profile","profileData":{"Email":"jill@example.com","Country":"India"}},
 {"identity":"ct-1","ts":1764237600,"type":"event","evtName":"Product viewed","evtData":{"Price":59.99}},
 {"objectId":"__g09c9bf3b0d374a259c86f5b855ec9b19","ts":1764237660,"type":"event","evtName":"App Launched","evtData":{}}
]}`,
			status:   200,
			accepted: 3,
			events: []wantEvent{
				{"ct-1", "", kindProfile, normalize.FormatCleverTap},
				{"ct-1", "Product viewed", kindEvent, normalize.FormatCleverTap},
				{"__g09c9bf3b0d374a259c86f5b855ec9b19", "App Launched", kindEvent, normalize.FormatCleverTap},
			},
		},
		{
			name:     "trace context of the request carried onto the events",
			body:     `{"type":"event","identity":"tr-1","name":"Traced"}`,
			headers:  map[string]string{"traceparent": traceparent},
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"tr-1", "Traced", kindEvent, normalize.FormatNative}},
		},
		{
			name:     "gzip body",
			body:     string(validGzip),
			headers:  map[string]string{"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"},
			status:   200,
			accepted: 2,
			events: []wantEvent{
				{"gz-1", "Zipped", kindEvent, normalize.FormatNative},
				{"gz-2", "", kindProfile, normalize.FormatSegment},
			},
		},
		{
			name: "some invalid: 200 with the rejected indexes",
			body: `[{"type":"event","identity":"mix-1","name":"A"},
			        {"type":"event","name":"no identity"},
			        {"type":"track","userId":"mix-2","event":"B"},
			        {"type":"event","identity":"mix-3","name":"N","ts":"2099-01-01T00:00:00Z"},
			        42,
			        {"type":"purchase","identity":"mix-4"}]`,
			status:   200,
			accepted: 2,
			rejected: []Rejection{
				{1, "identity: missing"},
				{3, `ts: "2099-01-01T00:00:00Z" is more than 24h0m0s in the future`},
				{4, "record: must be a JSON object, got number"},
				{5, unknownPurchase},
			},
			events: []wantEvent{
				{"mix-1", "A", kindEvent, normalize.FormatNative},
				{"mix-2", "B", kindEvent, normalize.FormatSegment},
			},
		},
		{
			name:     "CleverTap upload with a bad element: index in d",
			body:     `{"d":[{"identity":"ctm-1","type":"event","evtName":"A"},{"type":"event","evtName":"B"},{"identity":"ctm-2","type":"profile","profileData":{"a":{"b":{"c":{"d":{"e":{}}}}}}}]}`,
			status:   200,
			accepted: 1,
			rejected: []Rejection{{1, "identity: missing, and no objectId"}, {2, "profileData: nesting deeper than 5"}},
			events:   []wantEvent{{"ctm-1", "A", kindEvent, normalize.FormatCleverTap}},
		},
		{
			name: "NDJSON line that is no object: 400, body rejected whole",
			body: `{"type":"event","identity":"` + strings.Repeat("u", 257) + `","name":"N"}
{"type":"purchase","identity":"inv-2"}
not json at all`,
			headers:  map[string]string{"Content-Type": "application/x-ndjson"},
			status:   400,
			rejected: []Rejection{{0, "body: line 3 is not a JSON object (the body is neither one JSON object, a JSON array nor NDJSON)"}},
		},
		{
			name: "all records invalid: 400",
			body: `{"type":"event","identity":"` + strings.Repeat("u", 257) + `","name":"N"}
{"type":"purchase","identity":"inv-2"}
{"type":"event","identity":"inv-3","name":"N","ts":"yesterday"}`,
			headers: map[string]string{"Content-Type": "application/x-ndjson"},
			status:  400,
			rejected: []Rejection{
				{0, "identity: longer than 256 bytes"},
				{1, unknownPurchase},
				{2, `ts: "yesterday" is not a valid time`},
			},
		},
		{
			name:     "empty body: 400",
			body:     "  \n",
			status:   400,
			rejected: []Rejection{{0, "body: empty"}},
		},
		{
			name:    "body too large: 413",
			body:    bigBody,
			status:  413,
			errText: "body larger than 131072 bytes",
		},
		{
			name:    "gzip body too large once decompressed: 413",
			body:    string(bomb),
			headers: map[string]string{"Content-Encoding": "gzip"},
			status:  413,
			errText: "body larger than 131072 bytes",
		},
		{
			name:    "no token: 401",
			body:    `{"type":"event","identity":"auth-0","name":"N"}`,
			headers: map[string]string{"Authorization": ""},
			status:  401,
			errText: "missing or invalid ingest token",
		},
		{
			name:    "wrong token: 401",
			body:    `{"type":"event","identity":"auth-1","name":"N"}`,
			headers: map[string]string{"Authorization": "Bearer tok-c"},
			status:  401,
			errText: "missing or invalid ingest token",
		},
		{
			name:    "token without the Bearer scheme: 401",
			body:    `{"type":"event","identity":"auth-2","name":"N"}`,
			headers: map[string]string{"Authorization": "tok-a"},
			status:  401,
			errText: "missing or invalid ingest token",
		},
		{
			name:     "second configured token: 200",
			body:     `{"type":"event","identity":"auth-3","name":"N"}`,
			headers:  map[string]string{"Authorization": "Bearer tok-b"},
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"auth-3", "N", kindEvent, normalize.FormatNative}},
		},
		{
			name:     "scheme is case-insensitive: 200",
			body:     `{"type":"event","identity":"auth-4","name":"N"}`,
			headers:  map[string]string{"Authorization": "bearer tok-a"},
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"auth-4", "N", kindEvent, normalize.FormatNative}},
		},
		{
			name:    "wrong Content-Type: 415",
			body:    `{"type":"event","identity":"ct-x","name":"N"}`,
			headers: map[string]string{"Content-Type": "application/xml"},
			status:  415,
			errText: "Content-Type application/xml is not accepted",
		},
		{
			name:    "form Content-Type (curl -d without -H): 415",
			body:    `{"type":"event","identity":"ct-y","name":"N"}`,
			headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
			status:  415,
			errText: "send application/json or application/x-ndjson",
		},
		{
			name:    "malformed Content-Type: 415",
			body:    `{"type":"event","identity":"ct-z","name":"N"}`,
			headers: map[string]string{"Content-Type": "application/json; charset"},
			status:  415,
			errText: "bad Content-Type",
		},
		{
			name:     "Content-Type with charset: 200",
			body:     `{"type":"event","identity":"ct-ok-1","name":"N"}`,
			headers:  map[string]string{"Content-Type": "application/json; charset=utf-8"},
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"ct-ok-1", "N", kindEvent, normalize.FormatNative}},
		},
		{
			name:     "no Content-Type: 200",
			body:     `{"type":"event","identity":"ct-ok-2","name":"N"}`,
			headers:  map[string]string{"Content-Type": ""},
			status:   200,
			accepted: 1,
			events:   []wantEvent{{"ct-ok-2", "N", kindEvent, normalize.FormatNative}},
		},
		{
			name:    "unsupported Content-Encoding: 415",
			body:    `{"type":"event","identity":"enc-1","name":"N"}`,
			headers: map[string]string{"Content-Encoding": "br"},
			status:  415,
			errText: "Content-Encoding br is not accepted",
		},
		{
			name:    "body is not gzip: 400",
			body:    `{"type":"event","identity":"gzbad-1","name":"N"}`,
			headers: map[string]string{"Content-Encoding": "gzip"},
			status:  400,
			errText: "body is not valid gzip",
		},
		{
			name:    "truncated gzip: 400",
			body:    string(validGzip[:len(validGzip)-12]),
			headers: map[string]string{"Content-Encoding": "gzip"},
			status:  400,
			errText: "reading body: unexpected EOF",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/events", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer tok-a")
			req.Header.Set("Content-Type", "application/json")
			for k, v := range tt.headers {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			res, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(res.Body)
			res.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %s", res.StatusCode, tt.status, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("answer Content-Type %q, want application/json", ct)
			}
			checkAnswer(t, body, tt.status, tt.accepted, tt.rejected, tt.errText)
			if tt.status == http.StatusUnauthorized {
				if got := res.Header.Get("WWW-Authenticate"); got != `Bearer realm="hookstream"` {
					t.Errorf("WWW-Authenticate %q, want Bearer realm=\"hookstream\"", got)
				}
			}
			recs := events.readNew()
			checkEvents(t, recs, tt.events)
			for _, r := range recs {
				if got, _ := header(r, "traceparent"); got != tt.headers["traceparent"] {
					t.Errorf("%s: traceparent header %q, want the request's %q", pos(r), got, tt.headers["traceparent"])
				}
			}
		})
	}
}

func checkAnswer(t *testing.T, body []byte, status, accepted int, rejected []Rejection, errText string) {
	t.Helper()
	if errText != "" {
		var e struct{ Error string }
		if err := json.Unmarshal(body, &e); err != nil || !strings.Contains(e.Error, errText) {
			t.Errorf("answer %s: want {\"error\": \"...%s...\"}", body, errText)
		}
		return
	}
	var got struct {
		Accepted *int             `json:"accepted"`
		Rejected *json.RawMessage `json:"rejected"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.Accepted == nil || got.Rejected == nil {
		t.Fatalf("answer %s: want {\"accepted\": N, \"rejected\": [...]} (err %v)", body, err)
	}
	var rej []Rejection
	if err := json.Unmarshal(*got.Rejected, &rej); err != nil || rej == nil {
		t.Fatalf("answer %s: rejected is not a list (err %v)", body, err)
	}
	if *got.Accepted != accepted || !slices.Equal(rej, rejected) && !(len(rej) == 0 && len(rejected) == 0) {
		t.Errorf("answer %s\nwant accepted %d, rejected %+v", body, accepted, rejected)
	}
}

// checkEvents compares the records read from the events topic with want,
// in any order (records of different identities land on different
// partitions).
func checkEvents(t *testing.T, recs []*kgo.Record, want []wantEvent) {
	t.Helper()
	var got []wantEvent
	for _, r := range recs {
		ev := decodeEvent(t, r)
		if !keyedByIdentity(r, ev) {
			t.Errorf("%s: key %q, identity %q: want key = identity", pos(r), r.Key, ev.GetIdentity())
		}
		got = append(got, wantEvent{ev.GetIdentity(), ev.GetName(), ev.GetKind(), ev.GetSourceFormat()})
		if ev.GetId() == "" || ev.GetTsMs() <= 0 || ev.GetIngestedMs() <= 0 || !json.Valid(ev.GetPropertiesJson()) {
			t.Errorf("%s: incomplete event %v", pos(r), ev)
		}
	}
	cmp := func(a, b wantEvent) int {
		return strings.Compare(a.identity+"\x00"+a.name, b.identity+"\x00"+b.name)
	}
	slices.SortFunc(got, cmp)
	want = slices.Clone(want)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Errorf("events topic got\n  %+v\nwant\n  %+v", got, want)
	}
}
