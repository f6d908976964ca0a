package dispatcher

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
	"github.com/hookstream/hookstream/services/timer"
)

// TestDispatcher is the suite: every scenario runs against miniredis and
// a real redis-server, each on its own broker, Redis, timer service and
// dispatcher.
func TestDispatcher(t *testing.T) {
	scenarios := []struct {
		name string
		run  func(*testing.T, redistest.Backend)
	}{
		{"basics", testBasics},
		{"suppressions", testSuppressions},
		{"quiet hours delay", testQuietHoursDelay},
		{"throttle and rate limit delay", testThrottleDelay},
		{"retry classes", testRetryClasses},
		{"dlq and replay", testDLQAndReplay},
		{"gone disables the webhook", testGone},
		{"batching", testBatching},
		{"linked content", testLinkedContent},
		{"ssrf guard", testSSRF},
		{"a hanging endpoint does not delay a fast one", testIsolation},
		{"circuit breaker", testCircuitBreaker},
		{"test send", testTestSend},
		{"graceful stop", testGracefulStop},
	}
	for _, b := range redistest.Backends {
		t.Run(string(b), func(t *testing.T) {
			for _, s := range scenarios {
				t.Run(s.name, func(t *testing.T) { s.run(t, b) })
			}
		})
	}
}

func TestTimerHeaderAgrees(t *testing.T) {
	if timerIDHeader != timer.HeaderTimerID {
		t.Fatalf("timerIDHeader %q, timer service writes %q", timerIDHeader, timer.HeaderTimerID)
	}
}

// verify checks a Standard Webhooks signature, written from the spec text:
// HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed by the base64 part of
// the whsec_ secret, compared with each space-separated "v1,{base64}".
func verify(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "." + string(body)))
	want := m.Sum(nil)
	for _, part := range strings.Fields(h.Get("webhook-signature")) {
		if v, sig, ok := strings.Cut(part, ","); ok && v == "v1" {
			if got, err := base64.StdEncoding.DecodeString(sig); err == nil && hmac.Equal(got, want) {
				return true
			}
		}
	}
	return false
}

func byID(ds []*hookstreamv1.Delivery) map[string][]string {
	out := map[string][]string{}
	for _, d := range ds {
		out[d.WebhookId] = append(out[d.WebhookId], status(d))
	}
	return out
}

func testBasics(t *testing.T, b redistest.Backend) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a-very-secret-key-of-32-bytes!!!"))
	t.Setenv("TEST_SIGNING_SECRET", secret)
	ok, refusing := newReceiver(t, 200), newReceiver(t, 400)
	e := newEnv(t, b, envOptions{manifest: webhookYAML("ok", ok.URL, `signing: {secretRef: {env: TEST_SIGNING_SECRET}}, headers: {X-Source: hookstream}`) +
		webhookYAML("refusing", refusing.URL, "") +
		campaignYAML("good", "ok", `what: {query: {src: "a b&c"}, keyValues: {PromoCode: MT50}, payload: {profileVariables: [Identity, Email, Phone]}}`) +
		campaignYAML("bad", "refusing")})
	control := trig("t2", "good", "u-2")
	control.Control = true
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.sendWith([]kgo.RecordHeader{{Key: "traceparent", Value: []byte(tp)}}, trig("t1", "good", "u-1"), control, trig("t3", "bad", "u-3"))
	e.waitRecords("good", 2)
	e.waitRecords("bad", 1)
	e.eventually("t1 marked done", func() bool { return e.rdb.Get(context.Background(), keyPrefix+"t1").Val() == doneValue })
	e.send(trig("t1", "good", "u-1"))
	good := byID(e.waitRecords("good", 3))

	want := map[string][]string{"t1": {"DELIVERED", "SUPPRESSED:duplicate"}, "t2": {"SUPPRESSED:control"}}
	for id, w := range want {
		if fmt.Sprint(good[id]) != fmt.Sprint(w) {
			t.Errorf("%s: %v, want %v", id, good[id], w)
		}
	}
	bad := e.of("bad")
	if len(bad) != 1 || bad[0].Status != hookstreamv1.Delivery_STATUS_FAILED || bad[0].HttpStatus != 400 || bad[0].ResponseExcerpt != "answer 400" {
		t.Errorf("bad: %v, want one FAILED with 400 and the body excerpt", bad)
	}
	e.eventually("the failed delivery on the DLQ", func() bool { return len(e.dlqOf("bad")) == 1 })
	if d := e.dlqOf("bad")[0]; d.Request == nil || d.Request.WebhookId != "t3" || d.HttpStatus != 400 {
		t.Errorf("DLQ record %v, want the request of t3 with the last status", d)
	}

	got := ok.requests()
	if len(got) != 1 {
		t.Fatalf("healthy receiver got %d requests, want 1", len(got))
	}
	r := got[0]
	if !verify(secret, r.header, r.body) {
		t.Error("signature does not verify per Standard Webhooks")
	}
	for h, v := range map[string]string{"webhook-id": "t1", "traceparent": tp, "X-Source": "hookstream", "Content-Type": "application/json"} {
		if r.header.Get(h) != v {
			t.Errorf("header %s = %q, want %q", h, r.header.Get(h), v)
		}
	}
	if !strings.HasPrefix(r.header.Get("User-Agent"), "hookstream/") {
		t.Errorf("User-Agent %q", r.header.Get("User-Agent"))
	}
	if !strings.Contains(r.url, "src=a+b%26c") {
		t.Errorf("query not escaped: %s", r.url)
	}
	if want := `"key_values":{"PromoCode":"MT50"},"profiles":[{"Email":"u-1@example.com","Identity":"u-1"}]`; !bytes.Contains(r.body, []byte(want)) {
		t.Errorf("body %s\nwant it to contain %s (Phone is missing: omitted)", r.body, want)
	}
}

func testSuppressions(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	now := time.Now().UTC()
	night := fmt.Sprintf("quietHours: {from: %q, to: %q, action: discard}", now.Add(-3*time.Hour).Format("15:04"), now.Add(3*time.Hour).Format("15:04"))
	e := newEnv(t, b, envOptions{
		cfg: func(c *Config) { c.ThrottleMaxDelay.Set("30s") }, //nolint:errcheck // constant
		manifest: webhookYAML("ok", rcv.URL, "") +
			campaignYAML("capped", "ok", "limits: {frequencyCap: {count: 1, per: 1h}}") +
			campaignYAML("few", "ok", "who: {maxUsers: 1}") +
			campaignYAML("daily", "ok", "limits: {maxPerDay: 1}") +
			campaignYAML("night", "ok", night) +
			campaignYAML("slow", "ok", "limits: {throttle: {perMinute: 1}}"),
	})
	steps := []struct {
		campaign, id, user string
		control            bool
		advance            time.Duration
		want               string
	}{
		{campaign: "night", id: "n1", user: "u-1", want: "SUPPRESSED:quiet_hours"},
		{campaign: "capped", id: "c0", user: "u-1", control: true, want: "SUPPRESSED:control"},
		{campaign: "capped", id: "c1", user: "u-1", want: "DELIVERED"},
		{campaign: "capped", id: "c2", user: "u-1", want: "SUPPRESSED:frequency_cap"},
		{campaign: "capped", id: "c3", user: "u-2", want: "DELIVERED"},
		{campaign: "few", id: "f1", user: "u-a", want: "DELIVERED"},
		{campaign: "few", id: "f2", user: "u-b", want: "SUPPRESSED:max_users"},
		{campaign: "few", id: "f3", user: "u-a", want: "DELIVERED"},
		{campaign: "daily", id: "d1", user: "u-a", want: "DELIVERED"},
		{campaign: "daily", id: "d2", user: "u-b", want: "SUPPRESSED:max_per_day"},
		{campaign: "slow", id: "s1", user: "u-a", want: "DELIVERED"},
		{campaign: "slow", id: "s2", user: "u-b", want: "SUPPRESSED:throttled"},
		// The frequency window slides: an hour later u-1 may get one again.
		{campaign: "capped", id: "c4", user: "u-1", advance: 61 * time.Minute, want: "DELIVERED"},
		// A new day resets maxPerDay.
		{campaign: "daily", id: "d3", user: "u-c", advance: 24 * time.Hour, want: "DELIVERED"},
	}
	for _, s := range steps {
		e.clock.Advance(s.advance)
		tr := trig(s.id, s.campaign, s.user)
		tr.Control = s.control
		n := len(e.of(s.campaign))
		e.send(tr)
		recs := e.waitRecords(s.campaign, n+1)
		if got := status(recs[n]); recs[n].WebhookId != s.id || got != s.want {
			t.Errorf("%s/%s: %s %s, want %s", s.campaign, s.id, recs[n].WebhookId, got, s.want)
		}
	}
	want := []string{"c1", "c3", "f1", "f3", "d1", "s1", "c4", "d3"}
	if got := rcv.ids(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("receiver got %v, want %v", got, want)
	}
}

func testQuietHoursDelay(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	local := time.Now().In(tokyo)
	from, to := local.Add(-time.Hour).Format("15:04"), local.Add(time.Hour).Format("15:04")
	e := newEnv(t, b, envOptions{manifest: webhookYAML("ok", rcv.URL, "") +
		campaignYAML("nightly", "ok", fmt.Sprintf("quietHours: {from: %q, to: %q}", from, to))})
	// Night in Tokyo (the user's zone); mid-day twelve hours away in São
	// Paulo; nine hours away in UTC, the zone of a user without one (a
	// triggered campaign has no zone of its own).
	e.send(
		withProfile(trig("q-tokyo", "nightly", "u-tokyo"), `{"Timezone":"Asia/Tokyo"}`),
		withProfile(trig("q-none", "nightly", "u-none"), `{}`),
		withProfile(trig("q-sp", "nightly", "u-sp"), `{"Timezone":"America/Sao_Paulo"}`),
	)
	e.waitRecords("nightly", 2)
	e.eventually("a quiet-hours timer", func() bool { return len(e.timersFor("quiet:")) == 1 })
	got := rcv.ids()
	sort.Strings(got)
	if fmt.Sprint(got) != "[q-none q-sp]" {
		t.Fatalf("sent at once: %v, want [q-none q-sp]", got)
	}
	end := time.Date(local.Year(), local.Month(), local.Day(), local.Add(time.Hour).Hour(), local.Add(time.Hour).Minute(), 0, 0, tokyo)
	if !end.After(local) {
		end = end.AddDate(0, 0, 1)
	}
	c := e.timersFor("quiet:")[0]
	if due := time.UnixMilli(c.DueMs); !due.Equal(end) || !strings.HasPrefix(c.Id, "quiet:q-tokyo:") {
		t.Errorf("timer %s due %s, want q-tokyo at the end of its quiet hours %s", c.Id, due, end)
	}
	if c.DestinationTopic != e.kcfg.Topics().DispatchRetry {
		t.Errorf("timer %s goes to %s", c.Id, c.DestinationTopic)
	}
	e.clock.Advance(2 * time.Hour)
	e.waitRecords("nightly", 3)
	if ids := rcv.ids(); ids[len(ids)-1] != "q-tokyo" {
		t.Errorf("after quiet hours the receiver got %v", ids)
	}
	for _, d := range e.of("nightly") {
		if d.Status != hookstreamv1.Delivery_STATUS_DELIVERED || d.Attempt != 1 {
			t.Errorf("%s: %s attempt %d", d.WebhookId, d.Status, d.Attempt)
		}
	}
}

func testThrottleDelay(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	e := newEnv(t, b, envOptions{manifest: webhookYAML("ok", rcv.URL, "") + webhookYAML("limited", rcv.URL, "rateLimit: {perSecond: 0.1}") +
		campaignYAML("paced", "ok", "limits: {throttle: {perMinute: 6}}") + // one every 10s
		campaignYAML("metered", "limited")}) // one request every 10s
	e.send(trig("p1", "paced", "u-1"), trig("p2", "paced", "u-1"), trig("p3", "paced", "u-1"),
		trig("m1", "metered", "u-2"), trig("m2", "metered", "u-2"))
	e.waitRecords("paced", 1)
	e.waitRecords("metered", 1)
	e.eventually("throttle and rate timers", func() bool {
		return len(e.timersFor("throttle:")) == 2 && len(e.timersFor("rate:")) == 1
	})
	first := e.of("paced")[0]
	paced := e.timersFor("throttle:")
	sort.Slice(paced, func(a, b int) bool { return paced[a].DueMs < paced[b].DueMs })
	for i, c := range paced {
		want := time.UnixMilli(first.TsMs).Add(time.Duration(10*(i+1)) * time.Second)
		if due := time.UnixMilli(c.DueMs); due.Sub(want).Abs() > 500*time.Millisecond {
			t.Errorf("throttle timer %s due %s, want about %s", c.Id, due, want)
		}
	}
	if got := len(rcv.requests()); got != 2 {
		t.Errorf("receiver got %d requests before the delays ended, want 2", got)
	}
	e.clock.Advance(30 * time.Second)
	e.waitRecords("paced", 3)
	e.waitRecords("metered", 2)
	for _, d := range append(e.of("paced"), e.of("metered")...) {
		if d.Status != hookstreamv1.Delivery_STATUS_DELIVERED {
			t.Errorf("%s: %s", d.WebhookId, status(d))
		}
	}
}

func testRetryClasses(t *testing.T, b redistest.Backend) {
	type class struct {
		name      string
		status    int
		headers   map[string]string
		extra     string // webhook spec
		setup     func(*receiver)
		retry     time.Duration // 0: final
		wantHTTP  int32
		wantError string
	}
	classes := []class{
		{name: "e500", status: 500, retry: 10 * time.Second, wantHTTP: 500},
		{name: "e503", status: 503, headers: map[string]string{"Retry-After": "120"}, retry: 120 * time.Second, wantHTTP: 503},
		{name: "e429", status: 429, headers: map[string]string{"Retry-After": "40"}, retry: 40 * time.Second, wantHTTP: 429},
		{name: "e408", status: 408, retry: 10 * time.Second, wantHTTP: 408},
		{name: "timeout", status: 200, extra: "timeout: 200ms", setup: func(r *receiver) { r.delay = 2 * time.Second }, retry: 10 * time.Second, wantError: "timeout"},
		{name: "refused", status: 200, setup: func(r *receiver) { r.Close() }, retry: 10 * time.Second, wantError: "connect"},
		{name: "e400", status: 400, wantHTTP: 400},
		{name: "e404", status: 404, wantHTTP: 404},
		{name: "e302", status: 302, headers: map[string]string{"Location": "http://example.com/"}, wantHTTP: 302, wantError: "redirect"},
	}
	var docs strings.Builder
	rcvs := map[string]*receiver{}
	for _, c := range classes {
		r := newReceiver(t, c.status)
		r.headers = c.headers
		rcvs[c.name] = r
		docs.WriteString(webhookYAML("w-"+c.name, r.URL, c.extra) + campaignYAML(c.name, "w-"+c.name))
	}
	for _, c := range classes {
		if c.setup != nil {
			c.setup(rcvs[c.name])
		}
	}
	e := newEnv(t, b, envOptions{manifest: docs.String()})
	for i, c := range classes {
		e.send(trig("r-"+c.name, c.name, fmt.Sprintf("u-%d", i)))
	}
	for _, c := range classes {
		t.Run(c.name, func(t *testing.T) {
			d := e.waitRecords(c.name, 1)[0]
			if c.retry == 0 {
				if d.Status != hookstreamv1.Delivery_STATUS_FAILED || d.HttpStatus != c.wantHTTP || !strings.Contains(d.Error, c.wantError) {
					t.Errorf("%s attempt 1: %s http %d %q, want FAILED with %d", c.name, status(d), d.HttpStatus, d.Error, c.wantHTTP)
				}
				e.eventually("DLQ record of "+c.name, func() bool { return len(e.dlqOf(c.name)) == 1 })
				return
			}
			if d.Status != hookstreamv1.Delivery_STATUS_RETRYING || d.HttpStatus != c.wantHTTP || !strings.Contains(d.Error, c.wantError) {
				t.Errorf("%s attempt 1: %s http %d %q, want RETRYING http %d %q", c.name, status(d), d.HttpStatus, d.Error, c.wantHTTP, c.wantError)
			}
			e.eventually("retry timer of "+c.name, func() bool { return len(e.timersFor("retry:r-"+c.name+":")) == 1 })
			tm := e.timersFor("retry:r-" + c.name + ":")[0]
			if !strings.HasSuffix(tm.Id, ":2") || tm.DestinationTopic != e.kcfg.Topics().DispatchRetry {
				t.Errorf("retry timer %s to %s", tm.Id, tm.DestinationTopic)
			}
			if got := time.UnixMilli(tm.DueMs).Sub(time.UnixMilli(d.TsMs)); (got - c.retry).Abs() > 200*time.Millisecond {
				t.Errorf("retry in %s, want %s (schedule or Retry-After)", got, c.retry)
			}
		})
	}
	// Every endpoint recovers except the one that is gone; retries go out
	// with the same webhook-id and attempt 2.
	for _, c := range classes {
		rcvs[c.name].set(200, nil)
		rcvs[c.name].mu.Lock()
		rcvs[c.name].delay = 0
		rcvs[c.name].mu.Unlock()
	}
	e.clock.Advance(150 * time.Second)
	for _, c := range classes {
		if c.retry == 0 || c.name == "refused" {
			continue
		}
		recs := e.waitRecords(c.name, 2)
		if recs[1].Status != hookstreamv1.Delivery_STATUS_DELIVERED || recs[1].Attempt != 2 || recs[1].WebhookId != "r-"+c.name {
			t.Errorf("%s retry: %s attempt %d id %s", c.name, status(recs[1]), recs[1].Attempt, recs[1].WebhookId)
		}
		if ids := rcvs[c.name].ids(); ids[len(ids)-1] != "r-"+c.name {
			t.Errorf("%s: retry sent with webhook-id %s", c.name, ids[len(ids)-1])
		}
	}
	// The closed endpoint: attempt 2 retries at +20s, attempt 3 is the last
	// of the schedule [10s, 20s]: failed, on the DLQ.
	e.waitRecords("refused", 2)
	e.clock.Advance(30 * time.Second)
	recs := e.waitRecords("refused", 3)
	if got := []string{status(recs[0]), status(recs[1]), status(recs[2])}; fmt.Sprint(got) != "[RETRYING RETRYING FAILED]" || recs[2].Attempt != 3 {
		t.Errorf("refused: %v (last attempt %d), want RETRYING RETRYING FAILED", got, recs[2].Attempt)
	}
	e.eventually("refused on the DLQ", func() bool { return len(e.dlqOf("refused")) == 1 })
}

func testDLQAndReplay(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 500)
	e := newEnv(t, b, envOptions{manifest: webhookYAML("w", rcv.URL, "") + // schedule [10s, 20s]
		"---\napiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: aged}\nspec: {url: \"" + rcv.URL + "/aged\", retry: {schedule: [1s, 1h], maxAge: 30m}}\n" +
		campaignYAML("fails", "w") + campaignYAML("ages", "aged")})
	e.send(trig("x1", "fails", "u-1"), trig("x2", "ages", "u-2"))
	e.waitRecords("fails", 1)
	e.waitRecords("ages", 1)
	e.clock.Advance(12 * time.Second)
	e.waitRecords("fails", 2)
	e.waitRecords("ages", 2)
	e.clock.Advance(25 * time.Second)
	recs := e.waitRecords("fails", 3)
	if got := fmt.Sprint(status(recs[0]), status(recs[1]), status(recs[2])); got != "RETRYINGRETRYINGFAILED" {
		t.Fatalf("fails: %s", got)
	}
	if ages := e.of("ages"); ages[1].Status != hookstreamv1.Delivery_STATUS_FAILED || !strings.Contains(ages[1].Error, "maxAge") {
		t.Errorf("ages attempt 2: %s %q, want FAILED past maxAge (the next try would be an hour away)", status(ages[1]), ages[1].Error)
	}
	e.eventually("the DLQ record", func() bool { return len(e.dlqOf("fails")) == 1 })
	dl := e.dlqOf("fails")[0]
	if dl.HttpStatus != 500 || dl.ResponseExcerpt != "answer 500" || dl.Attempt != 3 || dl.Request.GetWebhookId() != "x1" || len(dl.Request.GetTriggers()) != 1 {
		t.Errorf("DLQ record: http %d excerpt %q attempt %d request %v", dl.HttpStatus, dl.ResponseExcerpt, dl.Attempt, dl.Request)
	}

	rcv.set(200, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := Replay(ctx, e.kcfg, testLogger(), ReplayOptions{Campaign: "fails", Since: time.Now().Add(time.Hour)})
	if err != nil || res.Matched != 0 || res.Scanned != 2 {
		t.Fatalf("replay since an hour from now: %+v %v, want nothing matched of 2", res, err)
	}
	res, err = Replay(ctx, e.kcfg, testLogger(), ReplayOptions{Campaign: "fails"})
	if err != nil || res.Replayed != 1 || fmt.Sprint(res.WebhookIDs) != "[x1]" {
		t.Fatalf("replay: %+v %v", res, err)
	}
	recs = e.waitRecords("fails", 4)
	if recs[3].Status != hookstreamv1.Delivery_STATUS_DELIVERED || recs[3].WebhookId != "x1" {
		t.Errorf("replayed: %s %s", status(recs[3]), recs[3].WebhookId)
	}
	if ids := rcv.ids(); ids[len(ids)-1] != "x1" {
		t.Errorf("replay sent webhook-id %s, want the original x1", ids[len(ids)-1])
	}
	// The delivered replay resolves x1 on the DLQ: replaying again sends
	// nothing.
	e.eventually("the replay's resolution on the DLQ", func() bool { return len(e.dlqOf("fails")) == 2 })
	res, err = Replay(ctx, e.kcfg, testLogger(), ReplayOptions{Campaign: "fails"})
	if err != nil || res.Replayed != 0 || res.Resolved != 1 || len(res.WebhookIDs) != 0 {
		t.Fatalf("second replay: %+v %v, want nothing replayed and x1 resolved", res, err)
	}
}

func testGone(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 410)
	e := newEnv(t, b, envOptions{manifest: webhookYAML("old", rcv.URL, "") + campaignYAML("c", "old")})
	e.send(trig("g1", "c", "u-1"))
	if d := e.waitRecords("c", 1)[0]; d.Status != hookstreamv1.Delivery_STATUS_FAILED || d.HttpStatus != 410 || !strings.Contains(d.Error, "disabled") {
		t.Fatalf("410: %s %d %q", status(d), d.HttpStatus, d.Error)
	}
	e.send(trig("g2", "c", "u-2"))
	if d := e.waitRecords("c", 2)[1]; status(d) != "SUPPRESSED:webhook_disabled" {
		t.Fatalf("after 410: %s, want held (webhook_disabled)", status(d))
	}
	e.eventually("both on the DLQ", func() bool { return len(e.dlqOf("c")) == 2 })
	if n := len(rcv.requests()); n != 1 {
		t.Errorf("a disabled webhook got %d requests, want 1", n)
	}
	if g, err := e.rdb.HGet(context.Background(), disabledKey, "old").Result(); err != nil || g != "1" {
		t.Errorf("disabled flag in Redis: %q %v", g, err)
	}
	// The endpoint is fixed and the webhook applied again: new deliveries
	// go, and the held ones are replayed with their ids.
	rcv.set(200, nil)
	e.cat.Apply(t, webhookYAML("old", rcv.URL, "headers: {X-Fixed: yes}"))
	e.send(trig("g3", "c", "u-3"))
	e.waitRecords("c", 3)
	res, err := Replay(context.Background(), e.kcfg, testLogger(), ReplayOptions{Campaign: "c"})
	if err != nil || res.Replayed != 2 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	e.waitRecords("c", 5)
	got := rcv.ids()
	sort.Strings(got)
	if fmt.Sprint(got) != "[g1 g1 g2 g3]" {
		t.Errorf("receiver got %v", got)
	}
}

func testBatching(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	e := newEnv(t, b, envOptions{manifest: webhookYAML("ok", rcv.URL, "") +
		campaignYAML("bulk", "ok", "what: {keyValues: {K: V}, payload: {profileVariables: [Identity]}, batch: {maxProfiles: 3, linger: 300ms}}") +
		campaignYAML("personal", "ok", `what: {keyValues: {U: "{{ profile.Identity }}"}, payload: {profileVariables: [Identity]}, batch: {maxProfiles: 3}}`)})
	ids := map[string]string{} // identity → trigger id
	var trs []*hookstreamv1.Trigger
	for i := range 7 {
		u := fmt.Sprintf("u-%d", i)
		ids[u] = fmt.Sprintf("b%d", i)
		trs = append(trs, trig(ids[u], "bulk", u), trig(fmt.Sprintf("p%d", i), "personal", u))
	}
	e.send(trs...)
	e.eventually("7 profiles delivered in batches", func() bool {
		n := 0
		for _, d := range e.of("bulk") {
			n += len(d.Identities)
		}
		return n == 7
	})
	e.waitRecords("personal", 7)
	bulk := e.of("bulk")
	if len(bulk) < 3 || len(bulk) >= 7 {
		t.Errorf("%d batched requests for 7 profiles of at most 3", len(bulk))
	}
	seen := map[string]bool{}
	for _, d := range bulk {
		if len(d.Identities) > 3 || d.Status != hookstreamv1.Delivery_STATUS_DELIVERED {
			t.Errorf("batch %s: %d profiles, %s", d.WebhookId, len(d.Identities), status(d))
		}
		var members []*hookstreamv1.Trigger
		for _, u := range d.Identities {
			members = append(members, &hookstreamv1.Trigger{Id: ids[u]})
			seen[u] = true
		}
		if want := batchID(members); d.WebhookId != want {
			t.Errorf("batch webhook-id %s, want the digest of its trigger ids %s", d.WebhookId, want)
		}
	}
	if len(seen) != 7 {
		t.Errorf("profiles delivered: %v", seen)
	}
	var bodies, personal int
	for _, r := range rcv.requests() {
		var body struct {
			Profiles  []map[string]any  `json:"profiles"`
			KeyValues map[string]string `json:"key_values"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("body %s: %v", r.body, err)
		}
		if u := body.KeyValues["U"]; u != "" {
			personal++
			if len(body.Profiles) != 1 || body.Profiles[0]["Identity"] != u {
				t.Errorf("personal request %s", r.body)
			}
			continue
		}
		bodies += len(body.Profiles)
		if body.KeyValues["K"] != "V" || !strings.HasPrefix(r.header.Get("webhook-id"), "msg_") {
			t.Errorf("batch request %s %s", r.header.Get("webhook-id"), r.body)
		}
	}
	if bodies != 7 || personal != 7 {
		t.Errorf("receiver got %d batched profiles and %d personal requests, want 7 and 7", bodies, personal)
	}
	// A lone profile goes when its linger ends.
	e.send(trig("b-lone", "bulk", "u-lone"))
	e.eventually("the lone profile's batch", func() bool {
		for _, d := range e.of("bulk") {
			if len(d.Identities) == 1 && d.Identities[0] == "u-lone" && d.Status == hookstreamv1.Delivery_STATUS_DELIVERED {
				return true
			}
		}
		return false
	})
}

func testLinkedContent(t *testing.T, b redistest.Backend) {
	var mu sync.Mutex
	hits := map[string]int{}
	linked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path+"?"+r.URL.Query().Get("city")]++
		mu.Unlock()
		switch r.URL.Path {
		case "/weather":
			json.NewEncoder(w).Encode(map[string]any{"temp": 21, "city": r.URL.Query().Get("city")}) //nolint:errcheck
		case "/slow":
			time.Sleep(time.Second)
		default:
			w.WriteHeader(500)
		}
	}))
	t.Cleanup(linked.Close)
	rcv := newReceiver(t, 200)
	lc := func(name, path, opts, body string) string {
		return campaignYAML(name, "ok", "what:",
			"  linkedContent:",
			fmt.Sprintf("    - {name: weather, url: \"%s%s?city={{ profile.City | url_encode }}\"%s}", linked.URL, path, opts),
			fmt.Sprintf("  payload: {body: '%s'}", body))
	}
	e := newEnv(t, b, envOptions{manifest: webhookYAML("ok", rcv.URL, "") +
		lc("lc-ok", "/weather", ", cacheTTL: 10m", `{"c":"{{ linked.weather.city }}","t":{{ linked.weather.temp }}}`) +
		lc("lc-timeout", "/slow", ", timeout: 100ms, onError: abort", `{}`) +
		lc("lc-abort", "/broken", ", onError: abort", `{}`) +
		lc("lc-skip", "/broken", ", onError: skip", `{"has":"{{ linked.weather }}"}`)})
	e.send(withProfile(trig("l1", "lc-ok", "u-1"), `{"City":"São Paulo"}`))
	e.waitRecords("lc-ok", 1)
	e.send(withProfile(trig("l2", "lc-ok", "u-2"), `{"City":"São Paulo"}`),
		withProfile(trig("l3", "lc-timeout", "u-3"), `{"City":"Paris"}`),
		withProfile(trig("l4", "lc-abort", "u-4"), `{"City":"Paris"}`),
		withProfile(trig("l5", "lc-skip", "u-5"), `{"City":"Paris"}`))
	for campaign, want := range map[string][]string{
		"lc-ok": {"DELIVERED", "DELIVERED"}, "lc-timeout": {"SUPPRESSED:linked_content"},
		"lc-abort": {"SUPPRESSED:linked_content"}, "lc-skip": {"DELIVERED"},
	} {
		recs := e.waitRecords(campaign, len(want))
		var got []string
		for _, d := range recs {
			got = append(got, status(d))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %v, want %v", campaign, got, want)
		}
	}
	if d := e.of("lc-timeout")[0]; !strings.Contains(d.Error, "deadline") && !strings.Contains(d.Error, "Timeout") {
		t.Errorf("timeout reason: %q", d.Error)
	}
	bodies := map[string]string{}
	for _, r := range rcv.requests() {
		bodies[r.header.Get("webhook-id")] = string(r.body)
	}
	for id, want := range map[string]string{"l1": `{"c":"São Paulo","t":21}`, "l2": `{"c":"São Paulo","t":21}`, "l5": `{"has":""}`} {
		if bodies[id] != want {
			t.Errorf("%s body %s, want %s", id, bodies[id], want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if n := hits["/weather?São Paulo"]; n != 1 {
		t.Errorf("linked content fetched %d times for one URL within cacheTTL, want 1 (cached)", n)
	}
}

func testSSRF(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	port := rcv.URL[strings.LastIndex(rcv.URL, ":")+1:]
	e := newEnv(t, b, envOptions{
		cfg: func(c *Config) { c.AllowPrivateNetworks = false },
		manifest: webhookYAML("by-name", "http://localhost:"+port, "") + webhookYAML("by-ip", rcv.URL, "") +
			webhookYAML("metadata", "http://169.254.169.254/latest", "") +
			campaignYAML("name", "by-name") + campaignYAML("ip", "by-ip") + campaignYAML("meta", "metadata") +
			campaignYAML("linked", "by-ip", "what:",
				"  linkedContent: [{name: x, url: \""+rcv.URL+"/x\", onError: abort}]",
				"  payload: {body: '{}'}"),
	})
	e.send(trig("s1", "name", "u-1"), trig("s2", "ip", "u-2"), trig("s3", "meta", "u-3"), trig("s4", "linked", "u-4"))
	for _, c := range []string{"name", "ip", "meta"} {
		d := e.waitRecords(c, 1)[0]
		if d.Status != hookstreamv1.Delivery_STATUS_FAILED || !strings.Contains(d.Error, "refusing") {
			t.Errorf("%s: %s %q, want FAILED by the SSRF guard, not retried", c, status(d), d.Error)
		}
	}
	if d := e.waitRecords("linked", 1)[0]; status(d) != "SUPPRESSED:linked_content" || !strings.Contains(d.Error, "refusing") {
		t.Errorf("linked content to loopback: %s %q", status(d), d.Error)
	}
	if n := len(rcv.requests()); n != 0 {
		t.Errorf("the loopback receiver got %d requests", n)
	}
	if n := len(e.timersFor("retry:")); n != 0 {
		t.Errorf("%d retries of refused addresses", n)
	}
}

func testIsolation(t *testing.T, b redistest.Backend) {
	hanging, fast := newReceiver(t, 200), newReceiver(t, 200)
	hanging.hang()
	e := newEnv(t, b, envOptions{manifest: webhookYAML("hanging", hanging.URL, "timeout: 30s, maxInFlight: 2") +
		webhookYAML("fast", fast.URL, "") + campaignYAML("slow", "hanging") + campaignYAML("quick", "fast")})
	// One user, so one partition: the hanging webhook's records come
	// first and the fast one's after them in the same partition.
	var trs []*hookstreamv1.Trigger
	for i := range 6 {
		trs = append(trs, trig(fmt.Sprintf("h%d", i), "slow", "u-1"))
	}
	e.send(trs...)
	e.eventually("the hanging endpoint to hold 2 requests", func() bool { return len(hanging.requests()) == 2 })
	trs = nil
	for i := range 20 {
		trs = append(trs, trig(fmt.Sprintf("f%d", i), "quick", "u-1"))
	}
	e.send(trs...)
	// All 20 are delivered while the hanging endpoint still holds its
	// requests: had they waited behind it, this would time out.
	recs := e.waitRecords("quick", 20)
	for _, d := range recs {
		if d.Status != hookstreamv1.Delivery_STATUS_DELIVERED {
			t.Errorf("%s: %s", d.WebhookId, status(d))
		}
	}
	if n := len(hanging.requests()); n != 2 {
		t.Errorf("the hanging endpoint got %d requests at once, want its maxInFlight 2", n)
	}
	if n := len(e.of("slow")); n != 0 {
		t.Errorf("%d outcomes of the hanging endpoint before it answered", n)
	}
	hanging.release()
	e.eventually("the hanging endpoint's deliveries", func() bool {
		e.clock.Advance(5 * time.Second) // fires any that were handed to the timer as busy
		n := 0
		for _, d := range e.of("slow") {
			if d.Status == hookstreamv1.Delivery_STATUS_DELIVERED {
				n++
			}
		}
		return n == 6
	})
}

func testCircuitBreaker(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 500)
	e := newEnv(t, b, envOptions{
		cfg: func(c *Config) {
			c.CircuitFailures = 2
			c.CircuitCooldown.Set("10s") //nolint:errcheck // constant
		},
		manifest: "---\napiVersion: hookstream.dev/v1\nkind: Webhook\nmetadata: {name: flaky}\nspec: {url: \"" + rcv.URL + "\", retry: {schedule: [1h], maxAge: 2h}}\n" +
			campaignYAML("c", "flaky"),
	})
	e.send(trig("k1", "c", "u-1"))
	e.waitRecords("c", 1)
	e.send(trig("k2", "c", "u-1"))
	e.waitRecords("c", 2)
	// Two consecutive failures: the circuit is open, k3 waits for the
	// cool-down through the timer service rather than hitting the endpoint.
	e.send(trig("k3", "c", "u-1"))
	e.eventually("k3 held while the circuit is open", func() bool { return len(e.timersFor("hold:k3:")) == 1 })
	if n := len(rcv.requests()); n != 2 {
		t.Errorf("endpoint got %d requests with the circuit open, want 2", n)
	}
	held := e.timersFor("hold:k3:")[0]
	if wait := time.UnixMilli(held.DueMs).Sub(e.clock.Now()); wait < 8*time.Second || wait > 13*time.Second {
		t.Errorf("held for %s, want about the 10s cool-down", wait)
	}
	rcv.set(200, nil)
	e.clock.Advance(15 * time.Second)
	recs := e.waitRecords("c", 3)
	if recs[2].WebhookId != "k3" || recs[2].Status != hookstreamv1.Delivery_STATUS_DELIVERED {
		t.Errorf("probe: %s %s", recs[2].WebhookId, status(recs[2]))
	}
	e.send(trig("k4", "c", "u-1"))
	if d := e.waitRecords("c", 4)[3]; d.Status != hookstreamv1.Delivery_STATUS_DELIVERED {
		t.Errorf("after the probe: %s", status(d))
	}
}

func testTestSend(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 202)
	e := newEnv(t, b, envOptions{noTimer: true, manifest: webhookYAML("ok", rcv.URL, "") + campaignYAML("c", "ok") +
		campaignYAML("liquid", "ok", `what: {payload: {body: '{"email":"{{ profile.Email }}"}'}}`)})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/campaigns/{name}/test", e.d.Tester().Handler())
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	for _, tc := range []struct {
		campaign, body string
		status         int
		want           string // in the request the receiver got
	}{
		{"c", `{"profile":{"Identity":"u-9","Email":"nine@example.com"}}`, 200, `"profiles":[{"Email":"nine@example.com","Identity":"u-9"}],"is_test":true`},
		{"c", ``, 200, `"Identity":"test-user"`},
		{"liquid", `{"profile":{"Email":"x@example.com"}}`, 200, `{"is_test":true,"email":"x@example.com"}`},
		{"missing", ``, 404, ""},
		{"c", `{"profile":`, 400, ""},
	} {
		n := len(rcv.requests())
		resp, err := http.Post(api.URL+"/v1/campaigns/"+tc.campaign+"/test", "application/json", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: HTTP %d %s, want %d", tc.campaign, tc.body, resp.StatusCode, raw, tc.status)
			continue
		}
		if tc.status != 200 {
			continue
		}
		var res TestResult
		if err := json.Unmarshal(raw, &res); err != nil || res.Status != 202 || res.Body != "answer 202" {
			t.Errorf("%s: result %s (%v), want the endpoint's 202 and body", tc.campaign, raw, err)
		}
		got := rcv.requests()
		if len(got) != n+1 || !strings.Contains(string(got[n].body), tc.want) {
			t.Errorf("%s: receiver got %d requests, last %s, want it to contain %s", tc.campaign, len(got)-n, got[len(got)-1].body, tc.want)
		}
	}
	if n := len(e.of("c")); n != 0 {
		t.Errorf("test sends wrote %d delivery records", n)
	}
}

func testGracefulStop(t *testing.T, b redistest.Backend) {
	rcv := newReceiver(t, 200)
	rcv.delay = 500 * time.Millisecond
	e := newEnv(t, b, envOptions{noTimer: true, manifest: webhookYAML("ok", rcv.URL, "") + campaignYAML("c", "ok")})
	e.send(trig("s1", "c", "u-1"))
	e.eventually("the request in flight", func() bool { return len(rcv.requests()) == 1 })
	svc := e.svc
	svc.StopAsync()
	if err := svc.AwaitTerminated(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := e.waitRecords("c", 1)[0]; d.Status != hookstreamv1.Delivery_STATUS_DELIVERED {
		t.Errorf("in-flight delivery at stop: %s", status(d))
	}
	offs, err := kadm.NewClient(e.client).FetchOffsets(context.Background(), "hookstream-dispatcher")
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == e.kcfg.Topics().Triggers && o.At > 0 {
			committed += o.At
		}
	})
	if committed != 1 {
		t.Errorf("committed %d trigger records at stop, want 1", committed)
	}
}
