package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
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
