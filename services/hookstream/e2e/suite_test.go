package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
)

// signingSecret is the Standard Webhooks secret of the suite's webhooks.
var signingSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("suite-signing-secret-0123456789!"))

// suiteReceiver records webhooks by path, verifies signatures, fails on
// demand and serves linked content.
type suiteReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     map[string][]receivedHook
	fail    map[string]int // path → how many more requests to answer 500
	badSigs int
}

func newSuiteReceiver(t *testing.T) *suiteReceiver {
	r := &suiteReceiver{got: map[string][]receivedHook{}, fail: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/linked/") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"temp_c": 31, "city": %q}`, req.URL.Query().Get("city"))
			return
		}
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if !verifySignature(req.Header, body) {
			r.badSigs++
		}
		r.got[req.URL.Path] = append(r.got[req.URL.Path], receivedHook{req.Header.Clone(), body, req.URL.String()})
		if r.fail[req.URL.Path] > 0 {
			r.fail[req.URL.Path]--
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.Close)
	return r
}

// verifySignature checks a Standard Webhooks signature, written from the
// spec: HMAC-SHA256 over "id.timestamp.body" with the base64 key.
func verifySignature(h http.Header, body []byte) bool {
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(signingSecret, "whsec_"))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return true
		}
	}
	return false
}

func (r *suiteReceiver) hooks(path string) []receivedHook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedHook(nil), r.got[path]...)
}

func (r *suiteReceiver) wait(t *testing.T, path string, n int, timeout time.Duration) []receivedHook {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := r.hooks(path)
		if len(h) >= n {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d webhooks after %v, want %d", path, len(h), timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// suiteManifests is one campaign per scenario; every webhook is signed.
func suiteManifests(url string, now time.Time) string {
	var b strings.Builder
	hook := func(name string, extra string) {
		fmt.Fprintf(&b, "---\napiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: %s}\nspec:\n  url: %s/%s\n  signing: {secretRef: {env: SUITE_SIGNING_SECRET}}\n%s", name, url, name, extra)
	}
	campaign := func(name, hookName, spec string) {
		fmt.Fprintf(&b, "---\napiVersion: hookstream.dev/v1\nkind: Campaign\nmetadata: {name: %s}\nspec:\n  webhook: %s\n%s", name, hookName, spec)
	}
	for _, n := range []string{"single", "actions", "iwt", "inaction", "dtp", "awup", "capped", "control", "linked", "quiet", "scheduled"} {
		hook(n, "")
	}
	hook("flaky", "  retry: {schedule: [1s, 1s], maxAge: 1m}\n")
	trig := "  delivery: {type: triggered}\n"
	pv := "  what: {payload: {profileVariables: [Identity, Email, Event_properties]}}\n"
	campaign("single", "single", trig+"  trigger: {type: single_action, action: {event: Purchased, where: [{property: total, op: gte, value: 10}]}}\n  goal: {event: Reviewed, within: 1h}\n"+pv)
	campaign("actions", "actions", trig+"  trigger: {type: actions, actions: [{event: Viewed}, {event: Wishlisted}], within: 1h, ordered: true}\n"+pv)
	campaign("iwt", "iwt", trig+"  trigger: {type: inaction_within_time, action: {event: Carted}, inaction: {event: Bought}, matchOn: [sku], within: 3s}\n"+pv)
	campaign("inaction", "inaction", trig+"  trigger: {type: inaction, action: {event: Launched}, inaction: {event: Bought}, lookback: 30d}\n"+pv)
	campaign("dtp", "dtp", trig+"  trigger: {type: date_time_property, property: {source: event, event: Shipped, name: eta}, offset: 0s}\n"+pv)
	campaign("awup", "awup", trig+"  trigger: {type: actions_with_user_properties, action: {event: Paid}, profile: [{property: Country, op: eq, value: Canada}]}\n"+pv)
	campaign("capped", "capped", trig+"  trigger: {type: single_action, action: {event: Pinged}}\n  limits: {frequencyCap: {count: 1, per: 1h}}\n"+pv)
	campaign("control", "control", trig+"  trigger: {type: single_action, action: {event: Offered}}\n  controlGroup: {percent: 100}\n  goal: {event: Redeemed, within: 1h}\n"+pv)
	campaign("linked", "linked", trig+"  trigger: {type: single_action, action: {event: Asked}}\n  what:\n    linkedContent:\n      - {name: weather, url: \""+url+"/linked/now?city={{ profile.City | url_encode }}\", timeout: 2s, cacheTTL: 1m, onError: abort}\n    payload: {body: '{\"user\":\"{{ profile.Identity }}\",\"temp\":{{ linked.weather.temp_c }}}'}\n")
	campaign("flaky", "flaky", trig+"  trigger: {type: single_action, action: {event: Flaked}}\n"+pv)
	qFrom, qTo := now.Add(-time.Hour).Format("15:04"), now.Add(time.Hour).Format("15:04")
	campaign("quiet", "quiet", trig+"  trigger: {type: single_action, action: {event: Nudged}}\n  quietHours: {from: \""+qFrom+"\", to: \""+qTo+"\", action: discard}\n"+pv)
	at := now.Add(90 * time.Second).Truncate(time.Minute).Add(time.Minute)
	campaign("scheduled", "scheduled", fmt.Sprintf("  delivery: {type: scheduled, recurring: {every: day, time: \"%s\", timezone: UTC}}\n  trigger: {type: single_action, action: {event: Launched, in: 1d}}\n", at.Format("15:04"))+pv)
	return b.String()
}

// deployment is where the suite sends events and reads the API.
type deployment struct {
	kafka string
	api   string
}

// allInOne runs `hookstream dev` with the manifests.
func allInOne(t *testing.T, manifests string) deployment {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SUITE_SIGNING_SECRET", signingSecret)
	d := startDev(t, devOptions{dataDir: t.TempDir(), manifests: dir})
	return deployment{kafka: d.kafkaAddr, api: "http://" + d.httpAddr}
}

// distributed runs the four services as separate processes on a broker in
// this process and a real redis-server, and applies the manifests with
// `hookstream apply` through the API.
func distributed(t *testing.T, manifests string) deployment {
	kc := kafkatest.New(t)
	redis := redistest.StartReal(t)
	t.Setenv("SUITE_SIGNING_SECRET", signingSecret)
	base := t.TempDir()
	extra := []string{"-redis.addr=" + redis, "-dispatcher.allow-private-networks=true"}
	var api string
	for _, target := range []string{"ingest", "evaluator", "timer", "dispatcher"} {
		p := startServeWith(t, target, kc.Addr(), filepath.Join(base, target), "", extra...)
		if target == "ingest" {
			api = "http://" + p.http
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(manifests), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "apply", "-f", dir, "--server", api).CombinedOutput()
	if err != nil {
		t.Fatalf("hookstream apply: %v\n%s", err, out)
	}
	time.Sleep(time.Second) // every service's catalog follows the topic within its poll
	return deployment{kafka: kc.Addr(), api: api}
}

func TestSuite(t *testing.T) {
	deployments := []struct {
		name  string
		start func(*testing.T, string) deployment
	}{{"all-in-one", allInOne}, {"distributed", distributed}}
	for _, dep := range deployments {
		t.Run(dep.name, func(t *testing.T) {
			if testing.Short() && dep.name == "distributed" {
				t.Skip("-short runs the all-in-one deployment only; CI runs both")
			}
			runSuite(t, dep.start)
		})
	}
}

func runSuite(t *testing.T, start func(*testing.T, string) deployment) {
	recv := newSuiteReceiver(t)
	recv.fail["/flaky"] = 100 // fails until it is fixed below
	now := time.Now().UTC()
	d := start(t, suiteManifests(recv.URL, now))
	iso := func(dt time.Duration) string { return now.Add(dt).Format(time.RFC3339Nano) }
	kcatProduce(t, d.kafka, "hookstream.events.raw", []string{
		// profiles: native, Segment identify, CleverTap upload
		`ca|{"type":"profile","identity":"ca","properties":{"Email":"ca@example.com","Country":"Canada","City":"Toronto"}}`,
		`in|{"type":"identify","userId":"in","traits":{"email":"in@example.com","Country":"India","address":{"city":"Pune"}}}`,
		`cl|{"d":[{"identity":"cl","type":"profile","profileData":{"Email":"cl@example.com","Country":"Canada","Timezone":"UTC"}}]}`,
		// actions (Segment track)
		`in|{"type":"track","userId":"in","event":"Viewed","properties":{"sku":"a"},"messageId":"a-1"}`,
		`in|{"type":"track","userId":"in","event":"Wishlisted","properties":{"sku":"a"},"messageId":"a-2"}`,
		// inaction_within_time (CleverTap): a abandoned, b bought
		fmt.Sprintf(`cl|{"d":[{"identity":"cl","ts":%d,"type":"event","evtName":"Carted","evtData":{"sku":"a"}},{"identity":"cl","ts":%d,"type":"event","evtName":"Carted","evtData":{"sku":"b"}},{"identity":"cl","ts":%d,"type":"event","evtName":"Bought","evtData":{"sku":"b"}}]}`, now.Unix(), now.Unix(), now.Unix()+1),
		// inaction
		`in|{"type":"event","identity":"in","name":"Launched","id":"i-1"}`,
		`ca|{"type":"event","identity":"ca","name":"Bought","properties":{"sku":"z"},"id":"i-2"}`,
		`ca|{"type":"event","identity":"ca","name":"Launched","id":"i-3"}`,
		// date_time_property: eta in 3s
		fmt.Sprintf(`in|{"type":"event","identity":"in","name":"Shipped","properties":{"eta":"%s"},"id":"d-1"}`, iso(3*time.Second)),
		// actions_with_user_properties: only the Canadian
		`ca|{"type":"event","identity":"ca","name":"Paid","id":"w-1"}`,
		`in|{"type":"event","identity":"in","name":"Paid","id":"w-2"}`,
		// frequency cap: two pings, one webhook
		`ca|{"type":"event","identity":"ca","name":"Pinged","id":"c-1"}`,
		`ca|{"type":"event","identity":"ca","name":"Pinged","id":"c-2"}`,
		// control group and its conversion
		`ca|{"type":"event","identity":"ca","name":"Offered","id":"g-1"}`,
		// linked content
		`ca|{"type":"event","identity":"ca","name":"Asked","id":"l-1"}`,
		// retries then DLQ
		`ca|{"type":"event","identity":"ca","name":"Flaked","id":"f-1"}`,
		// quiet hours (discard) in cl's UTC
		`cl|{"type":"event","identity":"cl","name":"Nudged","id":"q-1"}`,
	})
	// single_action (native), from a traced producer: with tracing off (as
	// here) its trace context is passed through to the webhook.
	const producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	kcatProduce(t, d.kafka, "hookstream.events.raw", []string{
		`ca|{"type":"event","identity":"ca","name":"Purchased","properties":{"total":50},"id":"s-1"}`,
		`ca|{"type":"event","identity":"ca","name":"Purchased","properties":{"total":5},"id":"s-2"}`,
	}, "traceparent=00-"+producerTrace+"-00f067aa0ba902b7-01")

	// check waits for n webhooks on path and checks each as a receiver
	// would (CONTRACT.md section 3): headers, and for a profileVariables
	// payload (identity set) the body's campaign, targetId and profile.
	targetIDs := map[int64]string{}
	check := func(path string, n int, identity string) []receivedHook {
		t.Helper()
		hs := recv.wait(t, path, n, 60*time.Second)
		campaign := strings.TrimPrefix(path, "/")
		for _, h := range hs {
			if h.Header.Get("webhook-id") == "" || !strings.HasPrefix(h.Header.Get("User-Agent"), "hookstream/") {
				t.Errorf("%s: headers %v", path, h.Header)
			}
			if ct := h.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q, want application/json", path, ct)
			}
			if ts, err := strconv.ParseInt(h.Header.Get("webhook-timestamp"), 10, 64); err != nil || time.Since(time.Unix(ts, 0)).Abs() > 5*time.Minute {
				t.Errorf("%s: webhook-timestamp %q is not the attempt's time in Unix seconds", path, h.Header.Get("webhook-timestamp"))
			}
			// Without tracing, only a traced producer's context reaches
			// the webhook (docs/dispatcher.md); whatever comes must be
			// valid W3C trace context.
			if tp := h.Header.Get("traceparent"); (tp != "" || path == "/single") && !traceparentRE.MatchString(tp) {
				t.Errorf("%s: traceparent %q is not W3C trace context", path, tp)
			} else if path == "/single" && !strings.Contains(tp, "-"+producerTrace+"-") {
				t.Errorf("%s: traceparent %q is not in the producer's trace %s", path, tp, producerTrace)
			}
			if identity == "" {
				continue
			}
			var body struct {
				TargetID json.Number `json:"targetId"`
				Campaign string      `json:"campaign"`
				Profiles []struct {
					Identity string `json:"Identity"`
				} `json:"profiles"`
			}
			dec := json.NewDecoder(bytes.NewReader(h.Body))
			dec.UseNumber()
			if err := dec.Decode(&body); err != nil {
				t.Errorf("%s: body is not JSON: %v: %s", path, err, h.Body)
				continue
			}
			id, err := body.TargetID.Int64()
			if err != nil || id <= 0 || body.Campaign != campaign || len(body.Profiles) != 1 || body.Profiles[0].Identity != identity {
				t.Errorf("%s: body %s, want a positive targetId, campaign %q and the one profile %q", path, h.Body, campaign, identity)
			}
			if other, ok := targetIDs[id]; ok && other != campaign {
				t.Errorf("campaigns %s and %s share targetId %d", other, campaign, id)
			}
			targetIDs[id] = campaign
			if want := targetID(t, d.api, campaign); want != id {
				t.Errorf("%s: targetId %d, the API says %d", path, id, want)
			}
		}
		return hs
	}
	check("/single", 1, "ca")
	// A conversion of a user who was sent the webhook: the test group's.
	kcatProduce(t, d.kafka, "hookstream.events.raw", []string{`ca|{"type":"event","identity":"ca","name":"Reviewed","id":"s-3"}`})
	check("/actions", 1, "in")
	check("/inaction", 1, "in")
	check("/awup", 1, "ca")
	check("/capped", 1, "ca")
	linked := check("/linked", 1, "")
	if got := string(linked[0].Body); got != `{"user":"ca","temp":31}` {
		t.Errorf("linked content body %s", got)
	}
	iwt := check("/iwt", 1, "cl")
	if !strings.Contains(string(iwt[0].Body), `"sku":"a"`) {
		t.Errorf("inaction_within_time fired for %s, want the abandoned sku a", iwt[0].Body)
	}
	check("/dtp", 1, "in")
	lastPositive := time.Now()

	// Retries to the DLQ, then a replay with the original webhook-id.
	flaky := recv.wait(t, "/flaky", 3, 60*time.Second)
	id := flaky[0].Header.Get("webhook-id")
	for _, h := range flaky {
		if h.Header.Get("webhook-id") != id {
			t.Fatalf("retries changed the webhook-id: %s vs %s", h.Header.Get("webhook-id"), id)
		}
	}
	waitStats(t, d.api, "flaky", func(s map[string]any) bool { return num(s["failed"]) == 1 })
	flakyBefore := deliveryCountsOf(t, d.api, "flaky")
	if want := (deliveryCounts{triggered: 1, sent: 1, delivered: 0, failed: 1, retries: 2}); flakyBefore != want {
		t.Errorf("flaky before the replay: %+v, want %+v", flakyBefore, want)
	}
	recv.mu.Lock()
	recv.fail["/flaky"] = 0
	recv.mu.Unlock()
	out, err := exec.Command(binary, "replay", "--campaign", "flaky", "--kafka.brokers", d.kafka).CombinedOutput()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	replayed := recv.wait(t, "/flaky", 4, 60*time.Second)
	if got := replayed[3].Header.Get("webhook-id"); got != id {
		t.Errorf("replayed webhook-id %s, want the original %s", got, id)
	}
	// The replay is the same trigger: not a new trigger or send; its users
	// move from failed to delivered.
	waitStats(t, d.api, "flaky", func(s map[string]any) bool { return num(s["delivered"]) == 1 })
	if got, want := deliveryCountsOf(t, d.api, "flaky"), (deliveryCounts{triggered: 1, sent: 1, delivered: 1, failed: 0, retries: 2}); got != want {
		t.Errorf("flaky after the replay: %+v, want %+v", got, want)
	}
	waitStats(t, d.api, "single", func(s map[string]any) bool {
		conv, _ := s["conversions"].(map[string]any)
		rate, _ := s["conversion_rate"].(map[string]any)
		return num(conv["test"]) == 1 && num(conv["control"]) == 0 && num(rate["test"]) == 1
	})

	// Control group: no webhook; the goal counts as a control conversion.
	kcatProduce(t, d.kafka, "hookstream.events.raw", []string{`ca|{"type":"event","identity":"ca","name":"Redeemed","id":"g-2"}`})
	waitStats(t, d.api, "control", func(s map[string]any) bool {
		sup, _ := s["suppressed"].(map[string]any)
		conv, _ := s["conversions"].(map[string]any)
		return num(sup["control"]) == 1 && num(conv["control"]) == 1
	})
	waitStats(t, d.api, "capped", func(s map[string]any) bool {
		sup, _ := s["suppressed"].(map[string]any)
		return num(sup["frequency_cap"]) == 1 && num(s["delivered"]) == 1
	})
	waitStats(t, d.api, "quiet", func(s map[string]any) bool {
		sup, _ := s["suppressed"].(map[string]any)
		return num(s["triggered"]) == 1 && num(s["sent"]) == 0 && num(sup["quiet_hours"]) == 1
	})

	// What must not fire: given time to (the inaction_within_time window
	// is 3s, and every other trigger is immediate), none came.
	time.Sleep(time.Until(lastPositive.Add(5 * time.Second)))
	for _, c := range []struct {
		path string
		want int
		why  string
	}{
		{"/control", 0, "the control group is held back"},
		{"/quiet", 0, "quiet hours discard"},
		{"/single", 1, "the Purchased of total 5 does not match the where"},
		{"/awup", 1, "in is not in Canada"},
		{"/inaction", 1, "ca bought before launching, so ca must not get an inaction webhook"},
		{"/iwt", 1, "sku b was bought within the window and must not fire"},
		{"/capped", 1, "the frequency cap allows one"},
		{"/actions", 1, "one ordered sequence"},
		{"/dtp", 1, "one eta"},
		{"/linked", 1, "one question"},
	} {
		if n := len(recv.hooks(c.path)); n != c.want {
			t.Errorf("%s received %d webhooks, want %d: %s", c.path, n, c.want, c.why)
		}
	}

	// The scheduled recurring campaign: its run at the next whole minute
	// targets everyone who launched in the last day.
	if !testing.Short() {
		hs := recv.wait(t, "/scheduled", 2, 4*time.Minute)
		users := map[string]bool{}
		for _, h := range hs {
			for _, u := range []string{"in", "ca"} {
				if strings.Contains(string(h.Body), `"`+u+`"`) {
					users[u] = true
				}
			}
		}
		if !users["in"] || !users["ca"] {
			t.Errorf("scheduled run reached %v, want in and ca", users)
		}
	}
	recv.mu.Lock()
	bad := recv.badSigs
	recv.mu.Unlock()
	if bad > 0 {
		t.Errorf("%d webhooks with a signature that does not verify", bad)
	}
}

// traceparentRE is a W3C traceparent of version 00.
var traceparentRE = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)

// targetID is the targetId the API gives campaign.
func targetID(t *testing.T, api, campaign string) int64 {
	t.Helper()
	resp, err := http.Get(api + "/v1/campaigns/" + campaign)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c struct {
		Status struct {
			TargetID int64 `json:"targetId"`
		} `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatalf("GET campaign %s: %v", campaign, err)
	}
	return c.Status.TargetID
}

// deliveryCounts are the delivery counters of a campaign's stats.
type deliveryCounts struct{ triggered, sent, delivered, failed, retries float64 }

func deliveryCountsOf(t *testing.T, api, campaign string) deliveryCounts {
	t.Helper()
	var s map[string]any
	waitStats(t, api, campaign, func(m map[string]any) bool { s = m; return true })
	return deliveryCounts{num(s["triggered"]), num(s["sent"]), num(s["delivered"]), num(s["failed"]), num(s["retries"])}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

func waitStats(t *testing.T, api, campaign string, ok func(map[string]any) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		resp, err := http.Get(api + "/v1/campaigns/" + campaign + "/stats")
		if err == nil {
			last = map[string]any{}
			_ = json.NewDecoder(resp.Body).Decode(&last)
			resp.Body.Close()
			if ok(last) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("stats of %s never matched: %v", campaign, last)
}
