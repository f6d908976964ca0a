package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// benchCampaign is the dispatcher benchmark's campaign: a CleverTap body
// with two profile variables and a key-value.
func benchCampaign() *manifest.Campaign {
	return &manifest.Campaign{
		Metadata: manifest.Metadata{Name: "bench", Generation: 1},
		Spec: manifest.CampaignSpec{What: manifest.What{
			KeyValues: map[string]string{"PromoCode": "MT50"},
			Payload:   manifest.Payload{ProfileVariables: []string{"Identity", "Email"}},
		}},
	}
}

// BenchmarkRender renders one profile's CleverTap body, as the dispatcher
// does for every unbatched webhook.
func BenchmarkRender(b *testing.B) {
	r := NewRenderer()
	c := benchCampaign()
	trs := []*hookstreamv1.Trigger{{Id: "t-1", Campaign: "bench", Identity: "user-1", CauseEventName: "E", ProfileJson: []byte(`{"Email":"user-1@example.com"}`)}}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Render(c, trs, nil, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSend sends one signed-less attempt to a local receiver: the
// sender's own cost over the HTTP exchange.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	s := NewSender(true)
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: srv.URL + "/hook"}}
	a := Attempt{ID: "t-1", Timestamp: time.Now(), Request: Request{Body: []byte(`{"a":1}`), ContentType: "application/json"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if res := s.Send(ctx, wh, a); !res.OK() {
			b.Fatal(res)
		}
	}
}
