package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

func campaign() *manifest.Campaign {
	return &manifest.Campaign{
		Metadata: manifest.Metadata{Name: "cart-abandon", Generation: 1},
		Status:   &manifest.CampaignState{TargetID: 1472124953},
		Spec: manifest.CampaignSpec{What: manifest.What{
			KeyValues: map[string]string{"PromoCode": "MT50"},
			Payload:   manifest.Payload{ProfileVariables: []string{"Email", "Identity", "ObjectId", "ProfileData", "Event_properties", "Push_token"}},
		}},
	}
}

func trigger() *hookstreamv1.Trigger {
	return &hookstreamv1.Trigger{
		Id: "t-1", Campaign: "cart-abandon", Identity: "u-1",
		ProfileJson:              []byte(`{"Email":"jack@example.com","Country":"Canada","Last Score":308}`),
		CauseEventName:           "Added To Cart",
		CauseEventPropertiesJson: []byte(`{"Score":1200}`),
	}
}

func TestProfileBodyIsCleverTapShaped(t *testing.T) {
	req, err := NewRenderer().Render(campaign(), []*hookstreamv1.Trigger{trigger()}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"targetId":1472124953,"campaign":"cart-abandon","key_values":{"PromoCode":"MT50"},"profiles":[{"Email":"jack@example.com","Event_properties":{"Score":1200},"Identity":"u-1","ProfileData":{"Last Score":308}}]}`
	if string(req.Body) != want {
		t.Fatalf("body:\n got %s\nwant %s", req.Body, want)
	}
	if req.ContentType != "application/json" {
		t.Fatalf("content type %q", req.ContentType)
	}
}

func TestLiquidBodyAndQuery(t *testing.T) {
	c := campaign()
	c.Spec.What.Payload = manifest.Payload{Body: `{"user":"{{ profile.Identity }}","email":"{{ Profile.Email }}","promo":"{{ key_values.PromoCode }}","event":"{{ event.name }}"}`}
	c.Spec.What.Query = map[string]string{"country": "{{ profile.Country | downcase }}"}
	req, err := NewRenderer().Render(c, []*hookstreamv1.Trigger{trigger()}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := string(req.Body); got != `{"user":"u-1","email":"jack@example.com","promo":"MT50","event":"Added To Cart"}` {
		t.Fatalf("body %s", got)
	}
	if req.Query.Get("country") != "canada" {
		t.Fatalf("query %v", req.Query)
	}
	if !Personal(c) {
		t.Fatal("a Liquid body is personal")
	}
	c.Spec.What.Payload.Body = "{% if profile.Email %}never closed"
	if _, err := NewRenderer().Render(c, []*hookstreamv1.Trigger{trigger()}, nil, time.Now()); err == nil {
		t.Fatal("a broken template must fail the render")
	}
}

// verify is written from the Standard Webhooks spec text, not from Sign:
// the signed content is "{id}.{timestamp}.{body}", the key is the base64
// part of the whsec_ secret, and the header holds space-separated
// "v1,{base64 signature}" entries.
func verify(secret string, h http.Header, body []byte) bool {
	key, err := base64.StdEncoding.DecodeString(secret[len("whsec_"):])
	if err != nil {
		return false
	}
	content := h.Get("webhook-id") + "." + h.Get("webhook-timestamp") + "." + string(body)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(content))
	expected := m.Sum(nil)
	for _, part := range strings.Split(h.Get("webhook-signature"), " ") {
		ver, sig, ok := strings.Cut(part, ",")
		if !ok || ver != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, expected) {
			return true
		}
	}
	return false
}

func TestSendSignsAndSetsHeaders(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("a-very-secret-key-of-32-bytes!!!"))
	t.Setenv("TEST_SIGNING_SECRET", secret)
	t.Setenv("TEST_PASSWORD", "pw")
	type seen struct {
		h    http.Header
		body []byte
		url  string
	}
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), b, r.URL.String()}
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{
		URL:     srv.URL + "/hook?a=1",
		Signing: &manifest.Signing{SecretRef: manifest.SecretRef{Env: "TEST_SIGNING_SECRET"}},
		Auth:    &manifest.Auth{Basic: &manifest.BasicAuth{Username: "u", PasswordRef: manifest.SecretRef{Env: "TEST_PASSWORD"}}},
		Headers: map[string]string{"X-Source": "hookstream"},
	}}
	req, _ := NewRenderer().Render(campaign(), []*hookstreamv1.Trigger{trigger()}, nil, time.Now())
	req.Query.Set("source", "a b&c")
	res := NewSender(true).Send(context.Background(), wh, Attempt{ID: "t-1", Timestamp: time.Now(), Request: req})
	if res.Status != 429 || res.RetryAfter != 7*time.Second {
		t.Fatalf("result %+v", res)
	}
	s := <-got
	if !verify(secret, s.h, s.body) {
		t.Fatal("signature does not verify against the Standard Webhooks spec")
	}
	if s.h.Get("webhook-id") != "t-1" || !strings.HasPrefix(s.h.Get("User-Agent"), "hookstream/") || s.h.Get("X-Source") != "hookstream" {
		t.Fatalf("headers %v", s.h)
	}
	if u, p, _ := (&http.Request{Header: s.h}).BasicAuth(); u != "u" || p != "pw" {
		t.Fatal("basic auth missing")
	}
	if !strings.Contains(s.url, "a=1") || !strings.Contains(s.url, "source=a+b%26c") {
		t.Fatalf("query not appended with escaping: %s", s.url)
	}
	var body map[string]any
	if err := json.Unmarshal(s.body, &body); err != nil || body["campaign"] != "cart-abandon" {
		t.Fatalf("body %s", s.body)
	}
}

func TestSSRFGuardRefusesPrivateAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]
	for _, u := range []string{srv.URL, "http://localhost" + port, "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://100.64.0.1/", "http://[::1]" + port} {
		wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: u, Timeout: 0}}
		res := NewSender(false).Send(context.Background(), wh, Attempt{ID: "x", Timestamp: time.Now()})
		if !errors.Is(res.Err, ErrForbiddenAddress) {
			t.Errorf("%s: err = %v, want ErrForbiddenAddress", u, res.Err)
		}
	}
	if res := NewSender(true).Send(context.Background(), &manifest.Webhook{Spec: manifest.WebhookSpec{URL: srv.URL}}, Attempt{ID: "x", Timestamp: time.Now()}); !res.OK() {
		t.Fatalf("allowPrivate: %+v", res)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"120": 2 * time.Minute, "": 0, "-5": 0, "soon": 0,
		"Fri, 27 Nov 2026 10:01:00 GMT": time.Minute,
		"Fri, 27 Nov 2026 09:00:00 GMT": 0,
	} {
		if got := ParseRetryAfter(in, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestLiquidFilters(t *testing.T) {
	c := campaign()
	tr := trigger()
	tr.CauseEventPropertiesJson = []byte(`{"items":[{"sku":"a","qty":2,"price":1.5,"gift":true},{"sku":"b","qty":3,"price":2},{"sku":"c","qty":1,"price":10,"gift":false}],"total":12}`)
	for _, tc := range []struct {
		name, src, want string
	}{
		{"where by value", `{% assign a = event.properties.items | where: "sku", "b" %}{{ a[0].qty }}`, "3"},
		{"where truthy", `{{ event.properties.items | where: "gift" | map: "sku" | join: "," }}`, "a"},
		{"find", `{% assign f = event.properties.items | find: "sku", "c" %}{{ f.price }}`, "10"},
		{"sum of a property", `{{ event.properties.items | sum: "qty" }}`, "6"},
		{"sum of floats", `{{ event.properties.items | sum: "price" }}`, "13.5"},
		{"numbers compare as numbers", `{% if event.properties.total > 10 %}big{% endif %}`, "big"},
		{"base64 round trip", `{{ "user:pw" | base64_encode }} {{ "dXNlcjpwdw==" | base64_decode }}`, "dXNlcjpwdw== user:pw"},
		{"base64 url safe", `{{ "??>" | base64_url_safe_encode }}`, "Pz8-"},
		{"jsonify", `{{ profile.Email | jsonify }}`, `"jack@example.com"`},
		{"json of an object", `{{ event.properties.items[1] | json }}`, `{"price":2,"qty":3,"sku":"b"}`},
		{"url_encode", `{{ "a b&c" | url_encode }}`, "a+b%26c"},
		{"at_least and at_most", `{{ 4 | at_least: 5 }} {{ 4 | at_most: 3 }}`, "5 3"},
		{"sha256", `{{ "abc" | sha256 }}`, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"hmac_sha256", `{{ "msg" | hmac_sha256: "key" }}`, "2d93cbc1be167bcb1637a4a23cbff01a7878f0c50ee833954ea5221bb1b8c628"},
		{"md5", `{{ "abc" | md5 }}`, "900150983cd24fb0d6963f7d28e17f72"},
		{"standard append still works", `{{ "a" | append: "b" | prepend: "c" }}`, "cab"},
		{"key_values and campaign", `{{ key_values.PromoCode }} {{ campaign.name }} {{ campaign.id }}`, "MT50 cart-abandon 1472124953"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := NewRenderer()
			got, err := r.RenderTemplate(c, "test."+tc.name, tc.src, Bindings(c, tr, nil, time.Now()))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRenderLimits(t *testing.T) {
	c := campaign()
	for _, tc := range []struct {
		name, src string
	}{
		{"a silent endless loop", `{% for i in (1..1000000000) %}{% endfor %}`},
		{"nested loops", `{% for i in (1..1000) %}{% for j in (1..1000) %}{% endfor %}{% endfor %}`},
		{"a loop that writes too much", `{% for i in (1..100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}`},
		{"doubling by append", `{% assign s = "xxxxxxxxxxxxxxxx" %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}`},
		{"doubling by capture", `{% assign s = "xxxxxxxxxxxxxxxx" %}{% for i in (1..40) %}{% capture s %}{{ s }}{{ s }}{% endcapture %}{% endfor %}`},
		{"doubling arrays by concat", `{% assign a = "x,y" | split: "," %}{% for i in (1..40) %}{% assign a = a | concat: a %}{% endfor %}`},
		{"growth by replace", `{% assign s = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" %}{% for i in (1..10) %}{% assign s = s | replace: "a", "aaaaaaaaaa" %}{% endfor %}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *c
			c.Spec.What.Payload = manifest.Payload{Body: tc.src}
			start := time.Now()
			_, err := NewRenderer().Render(&c, []*hookstreamv1.Trigger{trigger()}, nil, time.Now())
			if !errors.Is(err, ErrRenderLimit) {
				t.Fatalf("err = %v, want ErrRenderLimit", err)
			}
			t.Logf("refused after %s: %v", time.Since(start), err)
		})
	}
	t.Run("include is refused", func(t *testing.T) {
		c := *c
		c.Spec.What.Payload = manifest.Payload{Body: `{% include "/etc/passwd" %}`}
		if _, err := NewRenderer().Render(&c, []*hookstreamv1.Trigger{trigger()}, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "include") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("a runtime error fails the render, not the process", func(t *testing.T) {
		c := *c
		c.Spec.What.Payload = manifest.Payload{Body: `{{ "%%%" | base64_decode }}`}
		if _, err := NewRenderer().Render(&c, []*hookstreamv1.Trigger{trigger()}, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "base64_decode") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRenderDetails(t *testing.T) {
	t.Run("missing profile variables are omitted, text content type", func(t *testing.T) {
		c := campaign()
		c.Spec.What.ContentType = "text"
		c.Spec.What.Payload.ProfileVariables = []string{"Identity", "Phone", "Push_token", "Email"}
		tr := trigger()
		tr.ProfileJson = []byte(`{"Email":"jack@example.com","Phone":null}`)
		req, err := NewRenderer().Render(c, []*hookstreamv1.Trigger{tr}, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if want := `"profiles":[{"Email":"jack@example.com","Identity":"u-1"}]`; !strings.Contains(string(req.Body), want) {
			t.Fatalf("body %s, want %s", req.Body, want)
		}
		if req.ContentType != "text/plain; charset=utf-8" {
			t.Fatalf("content type %q", req.ContentType)
		}
	})
	t.Run("is_test is added to a JSON Liquid body", func(t *testing.T) {
		c := campaign()
		tr := trigger()
		tr.IsTest = true
		for body, want := range map[string]string{
			`{"user":"{{ profile.Identity }}"}`: `{"is_test":true,"user":"u-1"}`,
			`{ }`:                               `{"is_test":true}`,
			`user {{ profile.Identity }}`:       `user u-1`,
		} {
			c.Spec.What.Payload = manifest.Payload{Body: body}
			req, err := NewRenderer().Render(c, []*hookstreamv1.Trigger{tr}, nil, time.Now())
			if err != nil || string(req.Body) != want {
				t.Errorf("%s: got %s (%v), want %s", body, req.Body, err, want)
			}
		}
		c.Spec.What.Payload = manifest.Payload{ProfileVariables: []string{"Identity"}}
		req, _ := NewRenderer().Render(c, []*hookstreamv1.Trigger{tr}, nil, time.Now())
		if !strings.Contains(string(req.Body), `"is_test":true`) {
			t.Errorf("profile body %s", req.Body)
		}
	})
	t.Run("linked content is bound", func(t *testing.T) {
		c := campaign()
		c.Spec.What.Payload = manifest.Payload{Body: `{{ linked.weather.temp }}`}
		req, err := NewRenderer().Render(c, []*hookstreamv1.Trigger{trigger()}, map[string]any{"weather": map[string]any{"temp": int64(21)}}, time.Now())
		if err != nil || string(req.Body) != "21" {
			t.Fatalf("%s %v", req.Body, err)
		}
	})
}

func TestResultClassification(t *testing.T) {
	for _, tc := range []struct {
		res       Result
		retryable bool
	}{
		{Result{Status: 200}, false},
		{Result{Status: 400}, false},
		{Result{Status: 404}, false},
		{Result{Status: 410}, false},
		{Result{Status: 302}, false},
		{Result{Status: 408}, true},
		{Result{Status: 429}, true},
		{Result{Status: 500}, true},
		{Result{Status: 503}, true},
		{Result{Err: context.DeadlineExceeded}, true},
		{Result{Err: errors.New("connection refused")}, true},
		{Result{Err: ErrForbiddenAddress}, false},
		{Result{Err: ErrRequest}, false},
	} {
		if got := tc.res.Retryable(); got != tc.retryable {
			t.Errorf("%+v: Retryable() = %v, want %v", tc.res, got, tc.retryable)
		}
	}
}

func TestForbidden(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "100.100.100.200": true, "0.0.0.0": true, "0.1.2.3": true, "::1": true, "fd00:ec2::254": true,
		"fe80::1": true, "::ffff:127.0.0.1": true, "64:ff9b::7f00:1": true, "224.0.0.1": true,
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700:4700::1111": false, "64:ff9b::808:808": false,
	} {
		if got := Forbidden(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Forbidden(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A redirect is not followed by default; when following is configured, the
// next hop is dialled through the guard too.
func TestRedirectsAndTheGuard(t *testing.T) {
	inner := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	inner.Listener = l
	inner.Start()
	defer inner.Close()
	outer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/hook", http.StatusFound)
	}))
	defer outer.Close()
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: outer.URL}}
	allowOuter := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

	res := NewSenderWithOptions(SenderOptions{AllowedNetworks: allowOuter}).Send(context.Background(), wh, Attempt{ID: "x", Timestamp: time.Now()})
	if res.Status != http.StatusFound || res.Retryable() || !strings.HasPrefix(res.Location, inner.URL) {
		t.Fatalf("not following: %+v", res)
	}
	res = NewSenderWithOptions(SenderOptions{AllowedNetworks: allowOuter, FollowRedirects: 3}).Send(context.Background(), wh, Attempt{ID: "x", Timestamp: time.Now()})
	if !errors.Is(res.Err, ErrForbiddenAddress) {
		t.Fatalf("following to 127.0.0.2: %+v, want ErrForbiddenAddress", res)
	}
}

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = io.WriteString(w, `{"temp":21}`)
		case "/big":
			_, _ = w.Write(make([]byte, 2048))
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	s := NewSender(true)
	if b, err := s.Fetch(context.Background(), srv.URL+"/ok", time.Second, 1024); err != nil || string(b) != `{"temp":21}` {
		t.Fatalf("ok: %s %v", b, err)
	}
	if _, err := s.Fetch(context.Background(), srv.URL+"/big", time.Second, 1024); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big: %v", err)
	}
	if _, err := s.Fetch(context.Background(), srv.URL+"/slow", 50*time.Millisecond, 1024); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v", err)
	}
	if _, err := s.Fetch(context.Background(), srv.URL+"/missing", time.Second, 1024); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing: %v", err)
	}
	if _, err := NewSender(false).Fetch(context.Background(), srv.URL+"/ok", time.Second, 1024); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("guard: %v", err)
	}
}

func TestMembers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
	}{
		{``, map[string]string{}},
		{` {} `, map[string]string{}},
		{`{"a":1,"b" : "x}y" ,"c":{"d":[1,{"e":"]"}]},"a\"q":true,"n":null,"f":-1.5e3}`,
			map[string]string{"a": "1", "b": `"x}y"`, "c": `{"d":[1,{"e":"]"}]}`, `a"q`: "true", "n": "null", "f": "-1.5e3"}},
		{"{\n\t\"k\": [ 1, 2 ]\n}", map[string]string{"k": "[ 1, 2 ]"}},
		{`{"a":1,"a":2}`, map[string]string{"a": "2"}},
		{`{"a":}`, map[string]string{}},
		{`{"a":1`, map[string]string{}},
		{`[1,2]`, map[string]string{}},
		{`{"a":"unterminated}`, map[string]string{}},
	} {
		got := map[string]string{}
		for _, m := range members([]byte(tc.in)).sorted() {
			got[m.key] = string(m.raw)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("members(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// A manifest cannot make the sender read files outside its secret
// directories, also through a symbolic link or "..".
func TestSecretFilesOnlyFromAllowedDirectories(t *testing.T) {
	allowed, other := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(allowed, "token"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "passwd"), []byte("root:x:0:0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "passwd"), filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	dirs := []string{allowed}
	for path, ok := range map[string]bool{
		filepath.Join(allowed, "token"):                              true,
		filepath.Join(other, "passwd"):                               false,
		filepath.Join(allowed, "..", filepath.Base(other), "passwd"): false,
		filepath.Join(allowed, "link"):                               false,
		"token":                                                      false,
		"/etc/passwd":                                                false,
	} {
		err := CheckSecretPath(path, dirs)
		if ok != (err == nil) {
			t.Errorf("CheckSecretPath(%s) = %v, want allowed=%v", path, err, ok)
		}
		if !ok && err != nil && !errors.Is(err, ErrSecretPath) && !os.IsNotExist(errors.Unwrap(err)) {
			t.Errorf("CheckSecretPath(%s): %v does not say why", path, err)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: srv.URL, Auth: &manifest.Auth{Bearer: &manifest.BearerAuth{TokenRef: manifest.SecretRef{File: filepath.Join(other, "passwd")}}}}}
	res := NewSenderWithOptions(SenderOptions{AllowPrivateNetworks: true, SecretDirs: dirs}).Send(context.Background(), wh, Attempt{ID: "x", Timestamp: time.Now()})
	if !errors.Is(res.Err, ErrSecretPath) {
		t.Fatalf("sending with a secret outside the allowed directories: %v", res.Err)
	}
}
