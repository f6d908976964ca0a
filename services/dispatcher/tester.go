package dispatcher

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/catalog"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// ErrUnknownCampaign is returned by Tester.Send for a campaign that does not
// exist.
var ErrUnknownCampaign = errors.New("campaign not found")

// Tester sends a campaign's webhook now, with a sample or given profile and
// "is_test": true in a JSON body, through the same linked content, render,
// signing and SSRF-guarded send code as real deliveries. It skips every
// cap, quiet hours and throttle, records nothing and never retries. Safe
// for concurrent use.
type Tester struct {
	sp  *sendPath
	cat *catalog.Catalog
	now func() time.Time
}

// NewTester returns a Tester for processes that serve the API without a
// dispatcher. rdb caches linked content and may be nil.
func NewTester(cfg Config, log *slog.Logger, cat *catalog.Catalog, rdb *redis.Client) (*Tester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Tester{sp: newSendPath(cfg, log.With("component", "dispatcher-test"), rdb), cat: cat, now: time.Now}, nil
}

// Tester returns a Tester sharing the dispatcher's clients and template
// cache.
func (d *Dispatcher) Tester() *Tester { return &Tester{sp: d.sp, cat: d.cat, now: d.now} }

// TestResult is the outcome of a test send; it is also the JSON body of
// POST /v1/campaigns/{name}/test.
type TestResult struct {
	Campaign  string `json:"campaign"`
	Webhook   string `json:"webhook"`
	WebhookID string `json:"webhook_id"`
	// Status is the endpoint's HTTP status, 0 when no response arrived.
	Status int `json:"status"`
	// Body is the start of the endpoint's response body (1 KiB).
	Body      string  `json:"body"`
	LatencyMs float64 `json:"latency_ms"`
	// Error says why the send failed (network, render, linked content).
	Error string `json:"error,omitempty"`
	// RequestBody is what was sent.
	RequestBody string `json:"request_body,omitempty"`
}

// SampleProfile is the profile of a test send when none is given.
var SampleProfile = map[string]any{
	"Identity": "test-user", "Email": "test@example.com", "Name": "Test User",
	"Country": "Canada", "City": "Toronto", "Timezone": "America/Toronto",
}

// Send sends a test webhook for campaign, with profile (nil: SampleProfile).
// It returns an error only when the campaign or its webhook does not
// exist; every other failure is in the result.
func (t *Tester) Send(ctx context.Context, campaign string, profile map[string]any) (*TestResult, error) {
	c, ok := t.cat.Campaign(campaign)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownCampaign, campaign)
	}
	wh, ok := t.cat.Webhook(c.Spec.Webhook)
	if !ok {
		return nil, fmt.Errorf("campaign %s: webhook %q does not exist", campaign, c.Spec.Webhook)
	}
	if profile == nil {
		profile = SampleProfile
	}
	pj, err := json.Marshal(profile)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	identity, _ := profile["Identity"].(string)
	if identity == "" {
		identity = "test-user"
	}
	event := "Test Event"
	if tr := c.Spec.Trigger; tr != nil && tr.Action != nil {
		event = tr.Action.Event
	}
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	now := t.now()
	trig := &hookstreamv1.Trigger{
		Id: "msg_test_" + hex.EncodeToString(rnd[:]), Campaign: campaign, CampaignGeneration: c.Metadata.Generation,
		Identity: identity, TsMs: now.UnixMilli(), CauseEventName: event, CauseEventTsMs: now.UnixMilli(),
		CauseEventPropertiesJson: []byte("{}"), ProfileJson: pj, IsTest: true,
	}
	res := &TestResult{Campaign: campaign, Webhook: wh.Metadata.Name, WebhookID: trig.Id}
	req, err := t.sp.prepare(ctx, c, []*hookstreamv1.Trigger{trig}, now)
	if err != nil {
		res.Error = err.Error()
		return res, nil
	}
	res.RequestBody = string(req.Body)
	out := t.sp.attempt(ctx, wh, trig.Id, now, req, "", nil, nil)
	res.Status, res.Body, res.LatencyMs = out.Status, out.Excerpt, float64(out.Latency.Microseconds())/1000
	if !out.OK() {
		res.Error = describe(out)
	}
	return res, nil
}

// Handler serves POST /v1/campaigns/{name}/test: the optional body is
// {"profile": {...}}; the answer is a TestResult (200 whenever the send was
// tried, whatever the endpoint said), 404 for an unknown campaign, 400 for
// a bad body. The caller mounts it behind the admin token.
func (t *Tester) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var in struct {
			Profile map[string]any `json:"profile"`
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10+1))
		if err != nil {
			app.WriteError(w, http.StatusBadRequest, "reading the body: "+err.Error())
			return
		}
		if len(body) > 64<<10 {
			app.WriteError(w, http.StatusRequestEntityTooLarge, "body larger than 64 KiB")
			return
		}
		if len(body) > 0 {
			if err := json.Unmarshal(body, &in); err != nil {
				app.WriteError(w, http.StatusBadRequest, `body must be {"profile": {...}}: `+err.Error())
				return
			}
		}
		res, err := t.Send(r.Context(), name, in.Profile)
		switch {
		case errors.Is(err, ErrUnknownCampaign):
			app.WriteError(w, http.StatusNotFound, err.Error())
		case err != nil:
			app.WriteError(w, http.StatusUnprocessableEntity, err.Error())
		default:
			app.WriteJSON(w, http.StatusOK, res)
		}
	})
}
