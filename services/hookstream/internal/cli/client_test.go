package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/services/ingest"
)

const testToken = "s3cret"

var quietLog = slog.New(slog.DiscardHandler)

// apiServer runs what the ingest target serves, the admin API and POST
// /v1/events, over a kfake broker, and points the CLI at it through
// HOOKSTREAM_SERVER and HOOKSTREAM_TOKEN.
func apiServer(t *testing.T) *catalog.Catalog {
	t.Helper()
	cfg := kafkatest.New(t).Config()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kafka.NewClient(cfg, quietLog, "topics")
	if err != nil {
		t.Fatal(err)
	}
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	cl.Close()

	cat := catalog.New(quietLog)
	follower := catalog.NewFollower(cfg, quietLog, cat)
	var icfg ingest.Config
	icfg.RegisterFlags(flag.NewFlagSet("ingest", flag.ContinueOnError))
	icfg.Tokens = []string{testToken}
	in, err := ingest.New(icfg, cfg, quietLog, noop.NewMeterProvider().Meter("t"))
	if err != nil {
		t.Fatal(err)
	}
	consumer := in.Service()
	for _, s := range []interface {
		StartAsync(context.Context) error
		AwaitRunning(context.Context) error
	}{follower, consumer} {
		if err := s.StartAsync(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.AwaitRunning(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		consumer.StopAsync()
		_ = consumer.AwaitTerminated(context.Background())
		follower.StopAsync()
		_ = follower.AwaitTerminated(context.Background())
	})
	mux := http.NewServeMux()
	in.Register(mux)
	ingest.NewAdmin(cat, ingest.KafkaWriter(cfg, quietLog, cat), []string{testToken}, quietLog).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	t.Setenv(EnvServer, srv.URL)
	t.Setenv(EnvToken, testToken)
	return cat
}

type result struct {
	code           int
	stdout, stderr string
}

// hookstream runs the command line as a user would, with in as stdin.
func hookstream(t *testing.T, in string, args ...string) result {
	t.Helper()
	stdin = strings.NewReader(in)
	t.Cleanup(func() { stdin = os.Stdin })
	var out, errOut bytes.Buffer
	code := Main(args, &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func (r result) ok(t *testing.T, wantStdout string) {
	t.Helper()
	if r.code != 0 || r.stdout != wantStdout {
		t.Fatalf("exit %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s", r.code, r.stdout, wantStdout, r.stderr)
	}
}

func (r result) fails(t *testing.T, wantStderr ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("exit 0, want a failure\nstdout:\n%s", r.stdout)
	}
	for _, w := range wantStderr {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("stderr does not say %q:\n%s", w, r.stderr)
		}
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const examples = "../../../../examples"

// The everyday loop: apply the examples, look at them, change one, pause,
// resume and delete, as a user at a terminal sees it.
func TestManifestCommands(t *testing.T) {
	cat := apiServer(t)

	objs, err := manifest.ParsePath(examples)
	if err != nil {
		t.Fatal(err)
	}
	var created, unchanged strings.Builder
	for _, o := range objs {
		created.WriteString(ref(o.GetKind(), o.GetMetadata().Name) + " created\n")
		unchanged.WriteString(ref(o.GetKind(), o.GetMetadata().Name) + " unchanged\n")
	}
	hookstream(t, "", "apply", "-f", examples).ok(t, created.String())
	hookstream(t, "", "apply", "-f", examples).ok(t, unchanged.String())
	if got := len(cat.Campaigns()); got != 7 {
		t.Fatalf("%d campaigns applied, want 7", got)
	}

	// A change, first as a dry run.
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(examples, "inaction-within-time.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	changed := writeFile(t, dir, "cart.yaml", strings.Replace(string(data), "within: 30m", "within: 45m", 1))
	hookstream(t, "", "apply", "-f", changed, "--dry-run").ok(t,
		"webhook/call-center unchanged (dry run)\nsegment/canadians unchanged (dry run)\ncampaign/cart-abandon-callback configured (dry run): spec.trigger.within\n")
	hookstream(t, "", "apply", "--server", os.Getenv(EnvServer), "-f", changed).ok(t,
		"webhook/call-center unchanged\nsegment/canadians unchanged\ncampaign/cart-abandon-callback configured\n")

	// get: tables, YAML that applies back unchanged, JSON.
	r := hookstream(t, "", "get")
	for _, want := range []string{"WEBHOOK", "call-center", "http://127.0.0.1:8080/dev/receiver/call-center", "SEGMENT", "canadians", "CAMPAIGN", "TARGET-ID", "cart-abandon-callback", "inaction_within_time", "scheduled (every week)"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("get does not show %q:\n%s", want, r.stdout)
		}
	}
	r = hookstream(t, "", "get", "campaigns", "-o", "yaml")
	back := writeFile(t, dir, "back.yaml", r.stdout)
	r = hookstream(t, "", "apply", "-f", back)
	if r.code != 0 || strings.Count(r.stdout, " unchanged\n") != 7 {
		t.Fatalf("get -o yaml does not apply back unchanged:\n%s\n%s", r.stdout, r.stderr)
	}
	r = hookstream(t, "", "get", "campaign/cart-abandon-callback", "-o", "json")
	var c manifest.Campaign
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil || c.Status.TargetID != catalog.TargetID("cart-abandon-callback") || c.Metadata.Generation != 2 {
		t.Fatalf("get -o json: %v\n%s", err, r.stdout)
	}

	hookstream(t, "", "pause", "cart-abandon-callback").ok(t, "campaign/cart-abandon-callback paused\n")
	hookstream(t, "", "pause", "cart-abandon-callback").ok(t, "campaign/cart-abandon-callback unchanged (already paused)\n")
	if got, _ := cat.Campaign("cart-abandon-callback"); got.Spec.State != manifest.StatePaused {
		t.Fatal("pause did not pause")
	}
	hookstream(t, "", "resume", "cart-abandon-callback").ok(t, "campaign/cart-abandon-callback resumed\n")

	hookstream(t, "", "delete", "webhook", "call-center").fails(t, `Webhook "call-center" is used by campaigns cart-abandon-callback`, "HTTP 409")
	hookstream(t, "", "delete", "campaign/cart-abandon-callback").ok(t, "campaign/cart-abandon-callback deleted\n")
	hookstream(t, "", "delete", "campaigns", "cart-abandon-callback").fails(t, `Campaign "cart-abandon-callback" not found (HTTP 404)`)
	hookstream(t, "", "get", "campaign", "cart-abandon-callback").fails(t, "not found")
	hookstream(t, "", "delete", "journeys", "x").fails(t, `unknown kind "journeys"`)

	// stdin.
	hookstream(t, "apiVersion: hookstream.dev/v1\nkind: Segment\nmetadata: {name: vips}\nspec: {profile: {property: Tier, op: eq, value: vip}}\n",
		"apply", "-f", "-").ok(t, "segment/vips created\n")
	hookstream(t, "", "get", "segments").ok(t, "SEGMENT     GENERATION\ncanadians   1\nvips        1\n")
}

// Problems name the file and line, whether the CLI finds them offline or
// the server finds them (a webhook that does not exist), and nothing is
// applied.
func TestApplyProblems(t *testing.T) {
	cat := apiServer(t)
	dir := t.TempDir()
	hook := writeFile(t, dir, "a-hook.yaml", "apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: crm}\nspec: {url: https://crm.example.com/hook}\n")
	bad := writeFile(t, dir, "b-bad.yaml", `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart}
spec:
  webhook: crm
  delivery: {type: triggered}
  trigger:
    type: inaction_within_time
    action: {event: Added To Cart}
    inaction: {event: Charged}
    within: half an hour
  controlGroup: {percent: 120}
`)
	hookstream(t, "", "apply", "-f", hook, "-f", bad).fails(t,
		bad+`:11: Campaign/cart: spec.trigger.within: must be a duration like 30m, 36h, 3d or 2w, got "half an hour"`,
		bad+":12: Campaign/cart: spec.controlGroup.percent: must be between 0 and 100, got 120")
	hookstream(t, "", "validate", "-f", dir).fails(t, bad+":11: Campaign/cart: spec.trigger.within: must be a duration like 30m")
	// validate is offline: a valid set is reported object by object, from
	// files and from stdin, with no server running.
	hookstream(t, "", "validate", "-f", hook).ok(t, "Webhook/crm valid\n")
	hookstream(t, "apiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: a}\nspec: {url: https://a.example.com}\n---\n"+
		"apiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: c}\nspec:\n  webhook: a\n  delivery: {type: triggered}\n  trigger: {type: single_action, action: {event: E}}\n",
		"validate", "-f", "-").ok(t, "Webhook/a valid\nCampaign/c valid\n")
	hookstream(t, "# nothing here\n", "validate", "-f", "-").fails(t, "validate: no manifests in -")

	ghost := writeFile(t, dir, "b-bad.yaml", "# refers to a webhook that nobody applied\napiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: cart}\nspec:\n  webhook: ghost\n  delivery: {type: triggered}\n  trigger: {type: single_action, action: {event: E}}\n")
	hookstream(t, "", "apply", "-f", dir).fails(t, ghost+`:6: Campaign/cart: spec.webhook: Webhook "ghost" does not exist`)
	if len(cat.List(manifest.KindWebhook)) != 0 {
		t.Fatal("an invalid set was partly applied")
	}
	hookstream(t, "", "apply").fails(t, "usage: hookstream apply -f FILE|DIR|-")
	hookstream(t, "", "apply", "-f", filepath.Join(dir, "missing.yaml")).fails(t, "no such file")
}

func TestServerAndToken(t *testing.T) {
	apiServer(t)
	hookstream(t, "", "get", "--token", "guess").fails(t, "missing or invalid admin token (Authorization: Bearer TOKEN) (give a token with --token or HOOKSTREAM_TOKEN) (HTTP 401)")
	t.Setenv(EnvToken, "")
	hookstream(t, "", "get", "campaigns").fails(t, "HTTP 401")
	hookstream(t, "", "get", "--token", testToken, "campaigns").ok(t, "")

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	hookstream(t, "", "get", "--server", closed.URL).fails(t, "is Hookstream running there? set --server or HOOKSTREAM_SERVER")
	hookstream(t, "", "get", "-o", "xml").fails(t, `-o must be table, yaml or json, got "xml"`)
}

// send publishes events in batches and reports every rejected record with
// its line, failing when any was rejected.
func TestSend(t *testing.T) {
	apiServer(t)
	dir := t.TempDir()
	events := writeFile(t, dir, "events.ndjson", `{"type":"profile","identity":"u-1","properties":{"Email":"jack@example.com"}}
{"type":"event","identity":"u-1","name":"Charged","properties":{"Amount":10}}

{"type":"event","name":"Charged","properties":{"Amount":10}}
{"type":"track","userId":"u-2","event":"Order Completed","properties":{"total":27.5}}
not json at all
`)
	r := hookstream(t, "", "send", "-f", events, "--batch", "2")
	r.fails(t, "2 of the records were rejected")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "rejected line 4: ") || !strings.HasPrefix(lines[1], "rejected line 6: ") || lines[2] != "3 accepted, 2 rejected" {
		t.Fatalf("send output:\n%s", r.stdout)
	}

	good := `[{"type":"event","identity":"u-1","name":"A"},{"type":"event","identity":"u-2","name":"B"},{"type":"event","identity":"u-3","name":"C"}]`
	hookstream(t, good, "send", "-f", "-", "--batch", "2").ok(t, "3 accepted, 0 rejected\n")
	upload := `{"d":[{"identity":"u-1","ts":1764237600,"type":"event","evtName":"Charged","evtData":{}},{"type":"event","evtName":"Charged"}]}`
	r = hookstream(t, upload, "send", "-f", "-")
	r.fails(t, "1 of the records were rejected")
	if !strings.HasPrefix(r.stdout, "rejected d[1]: ") || !strings.HasSuffix(r.stdout, "1 accepted, 1 rejected\n") {
		t.Fatalf("upload output:\n%s", r.stdout)
	}
	hookstream(t, "", "send", "-f", events, "--token", "wrong").fails(t, "records 1 to 5 not sent (0 accepted before)", "HTTP 401")
	hookstream(t, "  \n", "send", "-f", "-").fails(t, "no records in the input")
}

func TestConcat(t *testing.T) {
	body, at := concat([]source{{name: "a", data: []byte("x: 1\ny: 2\n")}, {name: "b", data: []byte("z: 3")}, {name: "c", data: []byte("w: 4\n")}})
	if string(body) != "x: 1\ny: 2\n---\nz: 3\n---\nw: 4\n" {
		t.Fatalf("body %q", body)
	}
	for line, want := range map[int]string{1: "a:1", 2: "a:2", 4: "b:1", 6: "c:1"} {
		if name, l := at(line); name+":"+strconv.Itoa(l) != want {
			t.Errorf("line %d is %s:%d, want %s", line, name, l, want)
		}
	}
}
