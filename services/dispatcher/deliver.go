package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
	"github.com/hookstream/hookstream/pkg/webhook"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// sendPath is the code between a request and its endpoint's answer, shared
// by the dispatcher and the Tester so that a test send is exactly a real
// one: linked content, rendering, signing and the SSRF-guarded attempt.
type sendPath struct {
	cfg      Config
	log      *slog.Logger
	rdb      *redis.Client // linked content cache; nil: none
	renderer *webhook.Renderer
	sender   *webhook.Sender
}

func newSendPath(cfg Config, log *slog.Logger, rdb *redis.Client) *sendPath {
	allowed, _ := cfg.allowedNetworks()
	return &sendPath{
		cfg: cfg, log: log, rdb: rdb,
		renderer: webhook.NewRendererWithLimits(webhook.RenderLimits{Timeout: cfg.RenderTimeout.Std()}),
		sender: webhook.NewSenderWithOptions(webhook.SenderOptions{
			AllowPrivateNetworks: cfg.AllowPrivateNetworks, AllowedNetworks: allowed, FollowRedirects: cfg.FollowRedirects,
			SecretDirs: cfg.SecretDirs,
		}),
	}
}

// errLinkedAbort is wrapped by prepare's error when linked content failed
// and the campaign says onError: abort.
var errLinkedAbort = errors.New("linked content failed")

// prepare renders the request of triggers (fetching linked content for a
// single profile first). It fails with errLinkedAbort (the delivery is
// skipped) or with the render error (the delivery fails).
func (p *sendPath) prepare(ctx context.Context, c *manifest.Campaign, triggers []*hookstreamv1.Trigger, now time.Time) (webhook.Request, error) {
	var linked map[string]any
	if len(c.Spec.What.LinkedContent) > 0 && len(triggers) == 1 {
		var err error
		if linked, err = p.linkedContent(ctx, c, triggers[0], now); err != nil {
			return webhook.Request{}, err
		}
	}
	req, err := p.renderer.Render(c, triggers, linked, now)
	if err != nil {
		return webhook.Request{}, fmt.Errorf("render: %w", err)
	}
	return req, nil
}

// attempt sends one request, with the webhook's timeout capped at
// MaxTimeout.
// span, when it records, is the attempt's client span, on which the HTTP
// exchange is recorded (see webhook.Attempt.Span); nil makes the sender
// record it on a child span of ctx's, if that one records.
func (p *sendPath) attempt(ctx context.Context, wh *manifest.Webhook, id string, ts time.Time, req webhook.Request, traceparent string, span trace.Span, attrs *[]attribute.KeyValue) webhook.Result {
	if m := p.cfg.MaxTimeout; m > 0 && wh.Spec.Timeout > m {
		capped := *wh
		capped.Spec.Timeout = m
		wh = &capped
	}
	return p.sender.Send(ctx, wh, webhook.Attempt{ID: id, Timestamp: ts, Request: req, Traceparent: traceparent, Span: span, Attrs: attrs})
}

// deliver makes j's attempt: it reports the outcome to record, the
// endpoint's answer, and whether a request was sent at all.
func (d *Dispatcher) deliver(j *job) (*outcome, webhook.Result, bool) {
	ctx := context.Background() // a stop never cuts an attempt short; timeouts bound it
	now := d.now()
	c, ok := d.cat.Campaign(j.req.Campaign)
	if !ok {
		return d.failed(j, fmt.Sprintf("campaign %q no longer exists", j.req.Campaign), nil), webhook.Result{}, false
	}
	wh, ok := d.cat.Webhook(c.Spec.Webhook)
	if !ok {
		return d.failed(j, fmt.Sprintf("webhook %q does not exist", c.Spec.Webhook), nil), webhook.Result{}, false
	}
	if d.isDisabled(wh.Metadata.Name, wh.Metadata.Generation) {
		return d.suppressed(j, reasonWebhookDisabled, fmt.Sprintf("webhook %q answered 410 Gone and is disabled until its manifest changes", wh.Metadata.Name)), webhook.Result{}, false
	}
	if j.req.FirstAttemptMs == 0 {
		j.req.FirstAttemptMs = now.UnixMilli()
	}
	// The attempt continues the trigger's trace: a child of its record's
	// publish span (or of its traceparent). Its span is the HTTP client
	// span of the request too (the exchange is recorded on it, and it is
	// the webhook's traceparent); linked-content fetches are its children.
	var parent context.Context
	if j.span.IsValid() {
		parent = trace.ContextWithSpanContext(ctx, j.span)
	} else {
		parent = traceContext(ctx, j.trace)
	}
	var span trace.Span
	if sc := trace.SpanContextFromContext(parent); sc.IsValid() && !sc.IsSampled() {
		// A trace that is not sampled: no span (it would not record);
		// the webhook gets the trigger's traceparent as it is.
		ctx, span = parent, trace.SpanFromContext(parent)
	} else {
		ctx, span = d.tracer.Start(parent, "dispatcher.deliver", webhook.ClientKind)
		j.attempt = span.SpanContext()
	}
	defer span.End()
	// Attributes only for a span that records (building them was a
	// measurable share of an attempt with tracing off), and set at once
	// when the outcome is known: each call grows the span's attributes.
	recording := span.IsRecording()
	spanAttrs := func(extra ...attribute.KeyValue) *[]attribute.KeyValue {
		a := spanattr.Get()
		*a = append(*a, attribute.String("campaign", j.req.Campaign), attribute.String("webhook", wh.Metadata.Name),
			attribute.String("webhook_id", j.req.WebhookId), attribute.Int("attempt", int(j.req.Attempt)))
		*a = append(*a, extra...)
		return a
	}
	req, err := d.sp.prepare(ctx, c, j.req.Triggers, now)
	if err != nil && recording {
		// The reason is in the Delivery record: it may quote the profile.
		spanattr.Set(span, spanAttrs(attribute.String("outcome", "not_sent")))
		span.SetStatus(codes.Error, "request not prepared")
	}
	if errors.Is(err, errLinkedAbort) {
		return d.suppressed(j, reasonLinkedContent, err.Error()), webhook.Result{}, false
	}
	if errors.Is(err, webhook.ErrRenderTimeout) {
		// The render time limit is on the wall clock, which a starved CPU
		// spends too: retried on the webhook's schedule like a failed
		// attempt (the last one goes to the DLQ), not failed at once.
		return d.attempted(j, wh, webhook.Result{Err: err}, d.now()), webhook.Result{}, false
	}
	if err != nil {
		return d.failed(j, err.Error(), nil), webhook.Result{}, false
	}
	// The outcome is the sender's http.response.status_code or error.type,
	// set on the span with these, in one call.
	var attrs *[]attribute.KeyValue
	if recording {
		attrs = spanAttrs()
	}
	res := d.sp.attempt(ctx, wh, j.req.WebhookId, now, req, j.trace, span, attrs)
	return d.attempted(j, wh, res, d.now()), res, true
}

// Linked content: one GET per entry (its url rendered with Liquid for the
// profile), through the same SSRF-guarded client; the JSON response is
// bound as linked.NAME. Responses are cached in Redis for cacheTTL (all
// entries looked up in one round trip).
const (
	linkedLimit   = 1 << 20
	linkedTimeout = 2 * time.Second
)

func linkedKey(url string) string {
	sum := sha256.Sum256([]byte(url))
	return "hookstream:linked:" + hex.EncodeToString(sum[:])
}

func (p *sendPath) linkedContent(ctx context.Context, c *manifest.Campaign, t *hookstreamv1.Trigger, now time.Time) (map[string]any, error) {
	items := c.Spec.What.LinkedContent
	bind := p.renderer.WithBudget(webhook.Bindings(c, t, nil, now))
	urls := make([]string, len(items))
	errs := make([]error, len(items))
	for i, lc := range items {
		urls[i], errs[i] = p.renderer.RenderTemplate(c, fmt.Sprintf("spec.what.linkedContent[%d].url", i), lc.URL, bind)
	}
	cached := make([]any, len(items))
	if p.rdb != nil {
		var keys []string
		var idx []int
		for i, lc := range items {
			if errs[i] == nil && lc.CacheTTL > 0 {
				keys = append(keys, linkedKey(urls[i]))
				idx = append(idx, i)
			}
		}
		if len(keys) > 0 {
			vals, err := p.rdb.MGet(ctx, keys...).Result()
			if err != nil {
				p.log.Warn("linked content cache unavailable", "err", err)
			} else {
				for k, v := range vals {
					cached[idx[k]] = v
				}
			}
		}
	}
	linked := map[string]any{}
	var store []any
	for i, lc := range items {
		var body []byte
		err := errs[i]
		if err == nil {
			if s, ok := cached[i].(string); ok {
				body = []byte(s)
			} else {
				timeout := lc.Timeout.Std()
				if timeout <= 0 {
					timeout = linkedTimeout
				}
				if body, err = p.sender.Fetch(ctx, urls[i], timeout, linkedLimit); err == nil && lc.CacheTTL > 0 {
					store = append(store, linkedKey(urls[i]), string(body), lc.CacheTTL.Std())
				}
			}
		}
		var v any
		if err == nil {
			if v, err = webhook.DecodeJSON(body); err != nil {
				err = fmt.Errorf("response is not JSON: %w", err)
			}
		}
		if err != nil {
			if lc.OnError == "skip" {
				p.log.Debug("linked content skipped", "campaign", c.Metadata.Name, "name", lc.Name, "err", err)
				continue
			}
			return nil, fmt.Errorf("%w: %s: %w", errLinkedAbort, lc.Name, err)
		}
		linked[lc.Name] = v
	}
	if len(store) > 0 && p.rdb != nil {
		pipe := p.rdb.Pipeline()
		for i := 0; i < len(store); i += 3 {
			pipe.Set(ctx, store[i].(string), store[i+1], store[i+2].(time.Duration))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			p.log.Warn("caching linked content failed", "err", err)
		}
	}
	return linked, nil
}
