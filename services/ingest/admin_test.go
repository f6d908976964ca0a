package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/services/ingest"
)

const adminToken = "admin-secret"

var discard = slog.New(slog.DiscardHandler)

// followed starts a catalog kept in step with the campaigns topic, as every
// process has; it is loaded when this returns.
func followed(t *testing.T, cfg kafka.Config) *catalog.Catalog {
	t.Helper()
	cat := catalog.New(discard)
	f := catalog.NewFollower(cfg, discard, cat)
	if err := f.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.StopAsync(); _ = f.AwaitTerminated(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.AwaitRunning(ctx); err != nil {
		t.Fatal(err)
	}
	return cat
}

type adminEnv struct {
	cfg   kafka.Config
	cat   *catalog.Catalog
	admin *ingest.Admin
	srv   *httptest.Server
}

// newAdminEnv serves the admin API, next to POST /v1/events as the ingest
// module registers both, over a kfake broker.
func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	cfg := kafkatest.New(t).Config()
	cl, err := kafka.NewClient(cfg, discard, "topics")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	cat := followed(t, cfg)
	admin := ingest.NewAdmin(cat, ingest.KafkaWriter(cfg, discard, cat), []string{"other", adminToken}, discard)
	mux := http.NewServeMux()
	var icfg ingest.Config
	icfg.RegisterFlags(flag.NewFlagSet("ingest", flag.ContinueOnError))
	in, err := ingest.New(icfg, cfg, discard, noop.NewMeterProvider().Meter("t"))
	if err != nil {
		t.Fatal(err)
	}
	in.Register(mux)
	admin.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &adminEnv{cfg: cfg, cat: cat, admin: admin, srv: srv}
}

// call sends a request with the admin token and decodes the JSON answer.
func (e *adminEnv) call(t *testing.T, method, path, contentType, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", method, path, ct, raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %s", method, path, raw)
	}
	return resp.StatusCode, m
}

// results summarises an apply answer as "Kind/name action generation".
func results(t *testing.T, m map[string]any) []string {
	t.Helper()
	var out []string
	rs, _ := m["results"].([]any)
	for _, r := range rs {
		r := r.(map[string]any)
		s := r["kind"].(string) + "/" + r["name"].(string) + " " + r["action"].(string) + " " + jsonNumber(r["generation"])
		if ch, ok := r["changed"].([]any); ok {
			for _, c := range ch {
				s += " " + c.(string)
			}
		}
		out = append(out, s)
	}
	return out
}

func jsonNumber(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

const manifests = `apiVersion: hookstream.dev/v1
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
metadata: {name: cart}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart}
    inaction: {event: Charged}
    within: 30m
  who: {segment: canadians}
`

// Everything an operator does through the API, and what a second process
// sees of it.
func TestAdminLifecycle(t *testing.T) {
	e := newAdminEnv(t)
	other := followed(t, e.cfg) // another process's view
	within := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not visible in another process within 1s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	generation := func(c *catalog.Catalog) int64 {
		if cp, ok := c.Campaign("cart"); ok {
			return cp.Metadata.Generation
		}
		return 0
	}

	status, body := e.call(t, "POST", "/v1/apply", "application/yaml", manifests)
	if want := []string{"Webhook/crm created 1", "Segment/canadians created 1", "Campaign/cart created 1"}; status != 200 || !slices.Equal(results(t, body), want) {
		t.Fatalf("first apply: %d %v", status, body)
	}
	within("the created campaign", func() bool { return generation(other) == 1 })

	status, body = e.call(t, "POST", "/v1/apply", "", manifests)
	if want := []string{"Webhook/crm unchanged 1", "Segment/canadians unchanged 1", "Campaign/cart unchanged 1"}; status != 200 || !slices.Equal(results(t, body), want) {
		t.Fatalf("same apply again: %d %v", status, body)
	}

	edited := strings.Replace(manifests, "within: 30m", "within: 45m", 1)
	status, body = e.call(t, "POST", "/v1/apply?dryRun=true", "application/yaml", edited)
	if want := []string{"Webhook/crm unchanged 1", "Segment/canadians unchanged 1", "Campaign/cart configured 2 spec.trigger.within"}; status != 200 || !slices.Equal(results(t, body), want) || body["dryRun"] != true {
		t.Fatalf("dry run: %d %v", status, body)
	}
	if generation(e.cat) != 1 {
		t.Fatal("a dry run changed the campaign")
	}
	status, body = e.call(t, "POST", "/v1/apply", "application/yaml", edited)
	if want := "Campaign/cart configured 2 spec.trigger.within"; status != 200 || results(t, body)[2] != want {
		t.Fatalf("edit: %d %v", status, body)
	}
	within("the edit", func() bool { return generation(other) == 2 })

	// JSON works as well as YAML.
	status, body = e.call(t, "POST", "/v1/apply", "application/json",
		`[{"apiVersion":"hookstream.dev/v1","kind":"Webhook","metadata":{"name":"erp"},"spec":{"url":"https://erp.example.com/hook"}}]`)
	if want := []string{"Webhook/erp created 1"}; status != 200 || !slices.Equal(results(t, body), want) {
		t.Fatalf("JSON apply: %d %v", status, body)
	}

	status, body = e.call(t, "GET", "/v1/webhooks", "", "")
	if status != 200 || names(body["items"]) != "crm erp" || body["kind"] != "Webhook" {
		t.Fatalf("list webhooks: %d %v", status, body)
	}
	status, body = e.call(t, "GET", "/v1/segments", "", "")
	if status != 200 || names(body["items"]) != "canadians" {
		t.Fatalf("list segments: %d %v", status, body)
	}
	status, body = e.call(t, "GET", "/v1/campaigns/cart", "", "")
	if status != 200 || jsonNumber(body["status"].(map[string]any)["targetId"]) != jsonNumber(catalog.TargetID("cart")) ||
		body["spec"].(map[string]any)["state"] != "active" {
		t.Fatalf("get campaign: %d %v", status, body)
	}

	status, body = e.call(t, "POST", "/v1/campaigns/cart/pause", "", "")
	if status != 200 || body["action"] != "configured" || body["state"] != "paused" || jsonNumber(body["generation"]) != "3" {
		t.Fatalf("pause: %d %v", status, body)
	}
	within("the pause", func() bool {
		c, _ := other.Campaign("cart")
		return c.Spec.State == manifest.StatePaused
	})
	if status, body = e.call(t, "POST", "/v1/campaigns/cart/pause", "", ""); status != 200 || body["action"] != "unchanged" {
		t.Fatalf("pause again: %d %v", status, body)
	}
	if status, body = e.call(t, "POST", "/v1/campaigns/cart/resume", "", ""); status != 200 || body["state"] != "active" || jsonNumber(body["generation"]) != "4" {
		t.Fatalf("resume: %d %v", status, body)
	}
	if c, _ := e.cat.Campaign("cart"); c.Status.TargetID != catalog.TargetID("cart") || c.Spec.Trigger.Within.Std() != 45*time.Minute {
		t.Fatalf("pause/resume changed more than the state: %+v", c)
	}

	status, body = e.call(t, "DELETE", "/v1/webhooks/crm", "", "")
	if status != http.StatusConflict || body["error"] != `Webhook "crm" is used by campaigns cart: change or delete them first` {
		t.Fatalf("delete a used webhook: %d %v", status, body)
	}
	if status, body = e.call(t, "DELETE", "/v1/campaigns/cart", "", ""); status != 200 || body["action"] != "deleted" {
		t.Fatalf("delete: %d %v", status, body)
	}
	within("the delete", func() bool { _, ok := other.Campaign("cart"); return !ok })
	if status, _ = e.call(t, "DELETE", "/v1/campaigns/cart", "", ""); status != http.StatusNotFound {
		t.Fatalf("delete again: %d", status)
	}
	if status, _ = e.call(t, "DELETE", "/v1/webhooks/crm", "", ""); status != 200 {
		t.Fatalf("delete the webhook once unused: %d", status)
	}
}

func names(items any) string {
	var out []string
	list, _ := items.([]any)
	for _, it := range list {
		out = append(out, it.(map[string]any)["metadata"].(map[string]any)["name"].(string))
	}
	return strings.Join(out, " ")
}

// Every error is JSON {"error": ...} with a status that says what to do.
func TestAdminErrors(t *testing.T) {
	e := newAdminEnv(t)
	e.admin.MaxBodyBytes = 2048
	if status, body := e.call(t, "POST", "/v1/apply", "", manifests); status != 200 {
		t.Fatalf("setup: %d %v", status, body)
	}
	cases := []struct {
		name, method, path, contentType, body string
		token                                 string
		status                                int
		error                                 string
	}{
		{name: "no token", method: "GET", path: "/v1/campaigns", token: "-", status: 401, error: "missing or invalid admin token (Authorization: Bearer TOKEN)"},
		{name: "wrong token", method: "GET", path: "/v1/campaigns", token: "guess", status: 401, error: "missing or invalid admin token (Authorization: Bearer TOKEN)"},
		{name: "invalid manifest", method: "POST", path: "/v1/apply", body: "apiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: c}\nspec:\n  webhook: crm\n  delivery: {type: triggered}\n  trigger: {type: single_action, action: {event: E}, within: soon}\n  controlGroup: {percent: 300}\n",
			status: 400, error: "invalid manifests (2 problems):\nline 7: Campaign/c: spec.trigger.within: must be a duration like 30m, 36h, 3d or 2w, got \"soon\"\nline 8: Campaign/c: spec.controlGroup.percent: must be between 0 and 100, got 300"},
		{name: "missing reference", method: "POST", path: "/v1/apply", body: "apiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: c}\nspec:\n  webhook: nowhere\n  delivery: {type: triggered}\n  trigger: {type: single_action, action: {event: E}}\n",
			status: 400, error: "invalid manifests (1 problem):\nline 5: Campaign/c: spec.webhook: Webhook \"nowhere\" does not exist"},
		{name: "empty body", method: "POST", path: "/v1/apply", body: "# nothing\n", status: 400, error: "no manifests in the body"},
		{name: "bad dryRun", method: "POST", path: "/v1/apply?dryRun=perhaps", body: manifests, status: 400, error: `dryRun must be true or false, got "perhaps"`},
		{name: "body too large", method: "POST", path: "/v1/apply", body: manifests + strings.Repeat("# padding\n", 300), status: 413, error: "body larger than 2048 bytes: apply fewer manifests at a time"},
		{name: "unsupported media type", method: "POST", path: "/v1/apply", contentType: "text/html", body: manifests, status: 415, error: `Content-Type "text/html" is not accepted: send manifests as application/yaml or application/json`},
		{name: "apply is POST only", method: "PUT", path: "/v1/apply", body: manifests, status: 405, error: "PUT /v1/apply: method not allowed (use POST)"},
		{name: "get apply", method: "GET", path: "/v1/apply", status: 405, error: "GET /v1/apply: method not allowed (use POST)"},
		{name: "list is GET only", method: "POST", path: "/v1/campaigns", status: 405, error: "POST /v1/campaigns: method not allowed (use GET)"},
		{name: "object is GET or DELETE", method: "PATCH", path: "/v1/campaigns/cart", status: 405, error: "PATCH /v1/campaigns/cart: method not allowed (use GET, DELETE)"},
		{name: "pause is POST only", method: "GET", path: "/v1/campaigns/cart/pause", status: 405, error: "GET /v1/campaigns/cart/pause: method not allowed (use POST)"},
		{name: "unknown kind", method: "GET", path: "/v1/journeys", status: 404, error: `unknown kind "journeys": use webhooks, segments or campaigns`},
		{name: "unknown object", method: "GET", path: "/v1/segments/nobody", status: 404, error: `Segment "nobody" not found`},
		{name: "pause unknown campaign", method: "POST", path: "/v1/campaigns/nobody/pause", status: 404, error: `Campaign "nobody" not found`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, strings.NewReader(tc.body))
			switch tc.token {
			case "":
				req.Header.Set("Authorization", "Bearer "+adminToken)
			case "-":
			default:
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error    string            `json:"error"`
				Problems manifest.Problems `json:"problems"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tc.status || body.Error != tc.error {
				t.Fatalf("got %d %q\nwant %d %q", resp.StatusCode, body.Error, tc.status, tc.error)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if tc.status == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if tc.name == "invalid manifest" && (len(body.Problems) != 2 || body.Problems[0].Line != 7 || body.Problems[0].Path != "spec.trigger.within") {
				t.Errorf("problems: %+v", body.Problems)
			}
		})
	}
	if _, ok := e.cat.Campaign("c"); ok {
		t.Fatal("an invalid campaign was applied")
	}
}

// Until the catalog is loaded nothing is read or applied; a failing write
// is a 503 that says to try again.
func TestAdminNotReadyAndWriteFailure(t *testing.T) {
	cat := catalog.New(discard)
	admin := ingest.NewAdmin(cat, failingWriter{}, nil, discard)
	var ready atomic.Bool
	admin.Ready = ready.Load
	mux := http.NewServeMux()
	admin.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	post := func() (int, string) {
		resp, err := http.Post(srv.URL+"/v1/apply", "application/yaml", strings.NewReader("apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: crm}\nspec: {url: https://crm.example.com/hook}\n"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Error
	}
	if status, msg := post(); status != 503 || msg != "not ready: the catalog is still loading from Kafka, try again" {
		t.Fatalf("before ready: %d %q", status, msg)
	}
	ready.Store(true)
	if status, msg := post(); status != 503 || msg != "not applied, try again: broker unreachable" {
		t.Fatalf("write failure: %d %q", status, msg)
	}
}

type failingWriter struct{}

func (failingWriter) Apply(context.Context, []manifest.Object, bool) ([]catalog.Change, error) {
	return nil, errors.New("broker unreachable")
}

func (failingWriter) Delete(context.Context, string, string) (bool, error) {
	return false, errors.New("broker unreachable")
}
