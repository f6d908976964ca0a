package evaluator

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/condition"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// output collects what evaluating records produces.
type output struct {
	// ctx is the trace context of the record being evaluated; every output
	// continues it.
	ctx context.Context
	// triggers are records of the triggers topic, each a Trigger.
	triggers    []*kgo.Record
	timers      []*kgo.Record
	conversions []*hookstreamv1.Conversion
}

// span starts a decision span under the record being evaluated. Callers set
// its attributes only when it records: building them was a measurable share
// of a decision with tracing off.
//
// A decision continues the trace of its record. A record without one
// (tracing is off and the producer sent no trace context, or it was not
// consumed through the traced client), or with one that is not sampled,
// gets no decision span rather than a trace of its own or a span that does
// not record: with tracing off, or at 10 % sampling, that span was
// allocated for nothing on most triggers and timers.
//
// The span is the producer span of the one record the decision emits
// (pkg/kafka's hooks end it when the broker has the record, with where it
// went, instead of making a publish span under it): the caller does not end
// it, and produces exactly one record with the returned context.
func (e *engine) span(out *output, name string) (context.Context, trace.Span) {
	ctx := out.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() || !sc.IsSampled() {
		// No trace, or one that is not sampled: the outputs carry the
		// record's context on as it is, no span is made.
		return ctx, trace.SpanFromContext(ctx)
	}
	return e.tracer.Start(ctx, name, producerKind)
}

var producerKind = trace.WithSpanKind(trace.SpanKindProducer)

// engine makes the decisions. It holds no per-user state of its own: all of
// it is in the *user values it is given, so that the runtime can persist and
// changelog it. Not safe for concurrent use.
type engine struct {
	cfg    Config
	topics kafka.Topics
	cat    *catalog.Catalog
	now    func() time.Time
	log    *slog.Logger
	m      *metrics
	tracer trace.Tracer

	mu    sync.Mutex
	index *campaignIndex
	// triggerAttr caches the attributes of the triggers counter by
	// campaign, trigger type and control; emptied with the index.
	triggerAttr map[triggerAttrKey]metric.AddOption
	// scratch is reused while encoding timer commands.
	scratch []byte
	// ctx is the trace context of the record being applied, for logs.
	ctx context.Context
}

// logCtx is the context to log the current record's lines with.
func (e *engine) logCtx() context.Context {
	if e.ctx == nil {
		return context.Background()
	}
	return e.ctx
}

type metrics struct {
	records, triggers, skipped, conversions metric.Int64Counter
}

func newMetrics(meter metric.Meter) (*metrics, error) {
	var m metrics
	var err error
	if m.records, err = meter.Int64Counter("hookstream_evaluator_records_total", metric.WithDescription("Records of the events topic evaluated, by kind.")); err != nil {
		return nil, err
	}
	if m.triggers, err = meter.Int64Counter("hookstream_triggers_total", metric.WithDescription("Triggers emitted, by campaign, trigger type and control.")); err != nil {
		return nil, err
	}
	if m.skipped, err = meter.Int64Counter("hookstream_evaluator_skipped_total", metric.WithDescription("Records, decisions or state dropped, by reason.")); err != nil {
		return nil, err
	}
	if m.conversions, err = meter.Int64Counter("hookstream_conversions_total", metric.WithDescription("Goal events after an exposure, by campaign and group.")); err != nil {
		return nil, err
	}
	return &m, nil
}

func (e *engine) skip(reason string, campaign string) {
	attrs := []attribute.KeyValue{attribute.String("reason", reason)}
	if campaign != "" {
		attrs = append(attrs, attribute.String("campaign", campaign))
	}
	e.m.skipped.Add(context.Background(), 1, metric.WithAttributes(attrs...))
}

// campaignIndex finds the campaigns an event can concern without looking at
// every campaign. Rebuilt when the catalog's version changes.
type campaignIndex struct {
	version    int64
	byAction   map[string][]*manifest.Campaign // trigger action event names
	byInaction map[string][]*manifest.Campaign // inaction_within_time cancelling events
	byGoal     map[string][]*manifest.Campaign
	dtpEvent   map[string][]*manifest.Campaign
	dtpProfile []*manifest.Campaign
}

func (e *engine) campaigns() *campaignIndex {
	e.mu.Lock()
	defer e.mu.Unlock()
	v := e.cat.Version()
	if e.index != nil && e.index.version == v {
		return e.index
	}
	ix := &campaignIndex{version: v, byAction: map[string][]*manifest.Campaign{}, byInaction: map[string][]*manifest.Campaign{}, byGoal: map[string][]*manifest.Campaign{}, dtpEvent: map[string][]*manifest.Campaign{}}
	for _, c := range e.cat.Campaigns() {
		if g := c.Spec.Goal; g != nil && g.Event != "" {
			ix.byGoal[g.Event] = append(ix.byGoal[g.Event], c)
		}
		t := c.Spec.Trigger
		if t == nil || c.Spec.Delivery.Type != manifest.DeliveryTriggered {
			continue
		}
		seen := map[string]bool{}
		add := func(name string) {
			if name != "" && !seen[name] {
				seen[name] = true
				ix.byAction[name] = append(ix.byAction[name], c)
			}
		}
		switch t.Type {
		case manifest.TriggerActions:
			for _, a := range t.Actions {
				add(a.Event)
			}
		case manifest.TriggerDateTimeProperty:
			if p := t.Property; p != nil {
				if p.Source == "profile" {
					ix.dtpProfile = append(ix.dtpProfile, c)
				} else {
					ix.dtpEvent[p.Event] = append(ix.dtpEvent[p.Event], c)
				}
			}
		default:
			if t.Action != nil {
				add(t.Action.Event)
			}
		}
		if t.Type == manifest.TriggerInactionWithinTime && t.Inaction != nil {
			ix.byInaction[t.Inaction.Event] = append(ix.byInaction[t.Inaction.Event], c)
		}
	}
	e.index = ix
	e.triggerAttr = nil
	return ix
}

type triggerAttrKey struct {
	campaign, triggerType string
	control               bool
}

// triggerAttrs returns the attributes a trigger is counted with.
func (e *engine) triggerAttrs(c *manifest.Campaign, triggerType string, control bool) metric.AddOption {
	k := triggerAttrKey{c.Metadata.Name, triggerType, control}
	if o, ok := e.triggerAttr[k]; ok {
		return o
	}
	o := metric.WithAttributeSet(attribute.NewSet(attribute.String("campaign", k.campaign), attribute.String("trigger_type", triggerType), attribute.Bool("control", control)))
	if e.triggerAttr == nil {
		e.triggerAttr = map[triggerAttrKey]metric.AddOption{}
	}
	e.triggerAttr[k] = o
	return o
}

// apply evaluates one record of the events topic for its user. firedMs is
// when a timer fired (from the timer service's header), 0 otherwise.
func (e *engine) apply(u *user, ev *hookstreamv1.Event, out *output) error {
	e.ctx = out.ctx
	switch ev.Kind {
	case hookstreamv1.Event_KIND_PROFILE:
		return e.onProfile(u, ev, out)
	case hookstreamv1.Event_KIND_EVENT:
		return e.onEvent(u, ev, out)
	case hookstreamv1.Event_KIND_TIMER_FIRED:
		return e.onTimer(u, ev, out)
	default:
		e.skip("unhandled_kind", "")
		return nil
	}
}

func (e *engine) onProfile(u *user, ev *hookstreamv1.Event, out *output) error {
	props := decodeObject(ev.PropertiesJson)
	prof := u.Profile()
	changed := map[string]bool{}
	for k, v := range props {
		if v == nil {
			if _, ok := prof[k]; ok {
				delete(prof, k)
				changed[k] = true
			}
			continue
		}
		if _, ok := prof[k]; !ok && len(prof) >= e.cfg.MaxProfileProperties {
			e.skip("profile_full", "")
			continue
		}
		prof[k] = v
		changed[k] = true
	}
	if len(changed) == 0 {
		return nil
	}
	if err := u.setProfile(prof); err != nil {
		return err
	}
	// date_time_property over a profile property: (re)schedule or cancel.
	for _, c := range e.campaigns().dtpProfile {
		if name := c.Spec.Trigger.Property.Name; changed[name] {
			e.scheduleDate(u, c, prof[name], ev, out)
		}
	}
	return nil
}

func (e *engine) onEvent(u *user, ev *hookstreamv1.Event, out *output) error {
	if u.hasRecent(ev.Name, ev.Id) {
		e.skip("duplicate_event", "")
		return nil
	}
	ix := e.campaigns()
	// The event's properties are decoded only if a condition reads them.
	props := newLazyProps(ev.PropertiesJson)
	at := time.UnixMilli(ev.TsMs)

	// Conversions first: the event that triggers a campaign again must not
	// count as the conversion of the exposure it replaces.
	for _, c := range ix.byGoal[ev.Name] {
		e.convert(u, c, ev, out)
	}
	// An inaction event cancels pending inaction_within_time timers it
	// matches, if it is not earlier than their action.
	for _, c := range ix.byInaction[ev.Name] {
		e.cancelInaction(u, c, ev, &props, out)
	}
	// inaction looks at history before this event: "has not done B" must
	// not see the A being evaluated when A and B are the same event.
	notDone := map[string]bool{}
	for _, c := range ix.byAction[ev.Name] {
		if t := c.Spec.Trigger; t.Type == manifest.TriggerInaction {
			from := int64(0)
			if t.Lookback > 0 {
				from = ev.TsMs - t.Lookback.Std().Milliseconds()
			}
			notDone[c.Metadata.Name] = !u.did(t.Inaction, from, ev.TsMs)
		}
	}
	if !u.record(&e.cfg, ev, e.now().UnixMilli()) {
		e.skip("event_names_full", "")
		e.log.DebugContext(e.logCtx(), "user has too many event names; event not remembered", "max", e.cfg.MaxEventNames)
	}
	for _, c := range ix.dtpEvent[ev.Name] {
		if v := condition.Lookup(props.get(), c.Spec.Trigger.Property.Name); v != nil {
			e.scheduleDate(u, c, v, ev, out)
		}
	}
	for _, c := range ix.byAction[ev.Name] {
		if c.Spec.State == manifest.StatePaused || !inWindow(c.Spec.Active, at) {
			continue
		}
		t := c.Spec.Trigger
		switch t.Type {
		case manifest.TriggerSingleAction:
			if e.where(c, t.Action.Where, &props, u, at) {
				e.fire(u, c, ev.Id, ev, at, out)
			}
		case manifest.TriggerActionsWithUserProperties:
			if e.where(c, t.Action.Where, &props, u, at) && e.where(c, t.Profile, &u.prof, u, at) {
				e.fire(u, c, ev.Id, ev, at, out)
			}
		case manifest.TriggerInaction:
			if notDone[c.Metadata.Name] && e.where(c, t.Action.Where, &props, u, at) {
				e.fire(u, c, ev.Id, ev, at, out)
			}
		case manifest.TriggerActions:
			e.onActions(u, c, ev, &props, at, out)
		case manifest.TriggerInactionWithinTime:
			if e.where(c, t.Action.Where, &props, u, at) {
				e.startInaction(u, c, ev, &props, out)
			}
		}
	}
	return nil
}

// where evaluates conditions against props, with the user's profile and
// history available to event conditions.
func (e *engine) where(c *manifest.Campaign, cs []manifest.Condition, props *lazyProps, u *user, at time.Time) bool {
	if len(cs) == 0 {
		return true
	}
	env := u.env(cs, props, true)
	env.History, env.Now = u, at
	ok, err := condition.MatchAll(cs, env)
	return e.matched(c, ok, err)
}

// whereOne is where for one condition.
func (e *engine) whereOne(c *manifest.Campaign, cond *manifest.Condition, props *lazyProps, u *user, at time.Time) bool {
	env := u.envReading(readsOfOne(cond), props, true)
	env.History, env.Now = u, at
	ok, err := condition.Match(cond, env)
	return e.matched(c, ok, err)
}

func (e *engine) matched(c *manifest.Campaign, ok bool, err error) bool {
	if err != nil {
		e.skip("condition_error", c.Metadata.Name)
		e.log.WarnContext(e.logCtx(), "condition failed", "campaign", c.Metadata.Name, "err", err)
		return false
	}
	return ok
}

// eligible re-checks what every trigger is filtered by: campaign state, the
// active window and who, at decision time at.
func (e *engine) eligible(u *user, c *manifest.Campaign, at time.Time) bool {
	if c.Spec.State == manifest.StatePaused || !inWindow(c.Spec.Active, at) {
		return false
	}
	who := c.Spec.Who
	if who == nil {
		return true
	}
	// Segments and who.where read the profile as their properties.
	if who.Segment != "" {
		seg, ok := e.cat.Segment(who.Segment)
		if !ok {
			e.skip("missing_segment", c.Metadata.Name)
			return false
		}
		if !e.whereOne(c, &seg.Spec, &u.prof, u, at) {
			return false
		}
	}
	return who.Where == nil || e.whereOne(c, who.Where, &u.prof, u, at)
}

// fire emits a trigger for u if it is eligible, with a deterministic id.
func (e *engine) fire(u *user, c *manifest.Campaign, cause string, ev *hookstreamv1.Event, at time.Time, out *output) {
	if !e.eligible(u, c, at) {
		return
	}
	id := TriggerID(c.Metadata.Name, cause)
	tr := hookstreamv1.Trigger{
		Id:                       id,
		Campaign:                 c.Metadata.Name,
		CampaignGeneration:       c.Metadata.Generation,
		TriggerType:              triggerType(c),
		Identity:                 u.identity,
		TsMs:                     at.UnixMilli(),
		CauseEventId:             ev.GetId(),
		CauseEventName:           ev.GetName(),
		CauseEventTsMs:           ev.GetTsMs(),
		CauseEventPropertiesJson: ev.GetPropertiesJson(),
		ProfileJson:              u.profileJSON(),
		Control:                  InControlGroup(c, u.identity),
	}
	if len(tr.ProfileJson) == 0 {
		tr.ProfileJson = emptyObject
	}
	if c.Spec.Goal != nil {
		u.memory(c.Metadata.Name).exposure = &hookstreamv1.Exposure{TriggerId: id, TsMs: tr.TsMs, Control: tr.Control}
		u.dirty = true
	}
	e.m.triggers.Add(context.Background(), 1, e.triggerAttrs(c, tr.TriggerType, tr.Control))
	ctx, span := e.span(out, "evaluator.trigger")
	if span.IsRecording() {
		a := spanattr.Get()
		*a = append(*a, attribute.String("campaign", c.Metadata.Name), attribute.String("trigger_type", tr.TriggerType),
			attribute.String("webhook_id", id), attribute.Bool("control", tr.Control))
		ctx = spanattr.Defer(ctx, a) // set with where the trigger went, by the Kafka hook
	}
	out.triggers = append(out.triggers, &kgo.Record{Topic: e.topics.Triggers, Key: u.identityKey(), Value: triggerValue(&tr), Context: ctx})
}

var emptyObject = []byte("{}")

func triggerType(c *manifest.Campaign) string {
	if c.Spec.Trigger == nil {
		return "scheduled"
	}
	return c.Spec.Trigger.Type
}

// convert records a conversion when ev is the campaign's goal and follows
// an exposure within goal.within.
func (e *engine) convert(u *user, c *manifest.Campaign, ev *hookstreamv1.Event, out *output) {
	if m := u.memoryOf(c.Metadata.Name); m == nil || m.exposure == nil || ev.TsMs < m.exposure.TsMs {
		return
	}
	m := u.updateMemory(c.Metadata.Name)
	if w := c.Spec.Goal.Within.Std(); w > 0 && ev.TsMs-m.exposure.TsMs > w.Milliseconds() {
		m.exposure = nil
		u.dropEmptyMemory(c.Metadata.Name)
		u.dirty = true
		return
	}
	x := m.exposure
	out.conversions = append(out.conversions, &hookstreamv1.Conversion{
		Id: hashID("cv_", "conversion", x.TriggerId), Campaign: c.Metadata.Name, Identity: u.identity, Control: x.Control,
		TriggerId: x.TriggerId, ExposureTsMs: x.TsMs, TsMs: ev.TsMs, GoalEvent: ev.Name,
	})
	group := "test"
	if x.Control {
		group = "control"
	}
	e.m.conversions.Add(context.Background(), 1, metric.WithAttributes(attribute.String("campaign", c.Metadata.Name), attribute.String("group", group)))
	m.exposure = nil
	u.dropEmptyMemory(c.Metadata.Name)
	u.dirty = true
}

// onActions tracks the listed actions; the event that completes the set
// within the window (in order when asked) fires, once per completion.
func (e *engine) onActions(u *user, c *manifest.Campaign, ev *hookstreamv1.Event, props *lazyProps, at time.Time, out *output) {
	t := c.Spec.Trigger
	m := u.memory(c.Metadata.Name)
	if len(m.actionMs) != len(t.Actions) {
		m.actionMs = make([]int64, len(t.Actions)) // new or edited campaign: start over
	}
	hit := false
	for i := range t.Actions {
		if a := &t.Actions[i]; a.Event == ev.Name && e.where(c, a.Where, props, u, at) {
			m.actionMs[i] = max(m.actionMs[i], ev.TsMs)
			hit = true
			if t.Ordered {
				break // one occurrence fills one step
			}
		}
	}
	if !hit {
		u.dropEmptyMemory(c.Metadata.Name)
		return
	}
	u.dirty = true
	lo, hi := m.actionMs[0], m.actionMs[0]
	for i, v := range m.actionMs {
		if v == 0 {
			return
		}
		lo, hi = min(lo, v), max(hi, v)
		if t.Ordered && i > 0 && v < m.actionMs[i-1] {
			return
		}
	}
	if w := t.Within.Std(); w > 0 && hi-lo > w.Milliseconds() {
		return
	}
	clear(m.actionMs)
	u.dropEmptyMemory(c.Metadata.Name)
	e.fire(u, c, ev.Id, ev, at, out)
}

// matchKey is the value of the matchOn properties, identifying one pending
// inaction timer per (campaign, user, values).
func matchKey(matchOn []string, props *lazyProps) string {
	if len(matchOn) == 0 {
		return ""
	}
	parts := make([]string, len(matchOn))
	for i, p := range matchOn {
		b, _ := json.Marshal(condition.Lookup(props.get(), p))
		parts[i] = string(b)
	}
	return strings.Join(parts, "\x1f")
}

// startInaction (re)schedules the timer of an inaction_within_time trigger
// at the action's time + within; a repeated action moves it forward.
func (e *engine) startInaction(u *user, c *manifest.Campaign, ev *hookstreamv1.Event, props *lazyProps, out *output) {
	t := c.Spec.Trigger
	due := ev.TsMs + t.Within.Std().Milliseconds()
	// An inaction event that arrived before this action but happened after
	// it (out of order) already cancels it.
	if e.inactionSeen(u, c, props, ev.TsMs, due) {
		return
	}
	p := &hookstreamv1.PendingTimer{DueMs: due, CauseId: ev.Id, CauseTsMs: ev.TsMs, CauseName: ev.Name, CausePropertiesJson: ev.PropertiesJson, CampaignGeneration: c.Metadata.Generation}
	e.schedule(u, c, matchKey(t.MatchOn, props), p, out)
}

// inactionSeen reports a cancelling event in [from, to] among the recent
// occurrences, matching the inaction's where and the matchOn values.
func (e *engine) inactionSeen(u *user, c *manifest.Campaign, actionProps *lazyProps, from, to int64) bool {
	t := c.Spec.Trigger
	es := u.stats(t.Inaction.Event)
	if es == nil {
		return false
	}
	key := matchKey(t.MatchOn, actionProps)
	for i := range es.recent {
		o := &es.recent[i]
		if o.tsMs < from || o.tsMs > to {
			continue
		}
		if matchKey(t.MatchOn, &o.props) != key {
			continue
		}
		if ok, _ := condition.MatchAll(t.Inaction.Where, u.env(t.Inaction.Where, &o.props, true)); ok {
			return true
		}
	}
	return false
}

func (e *engine) cancelInaction(u *user, c *manifest.Campaign, ev *hookstreamv1.Event, props *lazyProps, out *output) {
	t := c.Spec.Trigger
	m := u.memoryOf(c.Metadata.Name)
	if m == nil || len(m.pending) == 0 {
		return
	}
	if ok, _ := condition.MatchAll(t.Inaction.Where, u.env(t.Inaction.Where, props, true)); !ok {
		return
	}
	key := matchKey(t.MatchOn, props)
	p := m.pendingTimer(key)
	if p == nil || ev.TsMs < p.CauseTsMs || ev.TsMs > p.DueMs {
		return // earlier than its action, or after the window: no cancel
	}
	e.cancel(u, c, key, out)
}

// scheduleDate (re)schedules a date_time_property timer from a property
// value; a missing value cancels it.
func (e *engine) scheduleDate(u *user, c *manifest.Campaign, value any, ev *hookstreamv1.Event, out *output) {
	if value == nil {
		if m := u.memoryOf(c.Metadata.Name); m != nil && m.pendingTimer("") != nil {
			e.cancel(u, c, "", out)
		}
		return
	}
	due, err := dateDue(c.Spec.Trigger, value, u.Profile())
	if err != nil {
		e.skip("bad_date_property", c.Metadata.Name)
		e.log.DebugContext(e.logCtx(), "date property not usable", "campaign", c.Metadata.Name, "err", err)
		return
	}
	if m := u.memoryOf(c.Metadata.Name); m != nil && m.pendingTimer("") != nil && m.pendingTimer("").DueMs == due.UnixMilli() {
		return // unchanged
	}
	p := &hookstreamv1.PendingTimer{DueMs: due.UnixMilli(), CauseId: ev.Id, CauseTsMs: ev.TsMs, CauseName: ev.Name, CausePropertiesJson: ev.PropertiesJson, CampaignGeneration: c.Metadata.Generation}
	e.schedule(u, c, "", p, out)
}

// dateDue is the property's time + offset, optionally moved to a local time
// of day in the trigger's zone, else the user's Timezone, else UTC.
func dateDue(t *manifest.Trigger, value any, profile map[string]any) (time.Time, error) {
	loc := time.UTC
	if t.Timezone != "" {
		if l, err := time.LoadLocation(t.Timezone); err == nil {
			loc = l
		}
	} else if tz, ok := profile["Timezone"].(string); ok {
		if l, err := time.LoadLocation(tz); err == nil {
			loc = l
		}
	}
	var base time.Time
	if s, ok := value.(string); ok && len(s) == len("2006-01-02") {
		d, err := time.ParseInLocation("2006-01-02", s, loc) // a date is a local date
		if err != nil {
			return time.Time{}, err
		}
		base = d
	} else {
		b, ok := condition.AsTime(value)
		if !ok {
			return time.Time{}, fmt.Errorf("%v is not a date or time", value)
		}
		base = b
	}
	due := base.Add(t.Offset.Std())
	if t.At != "" {
		hm, err := time.Parse("15:04", t.At)
		if err != nil {
			return time.Time{}, err
		}
		d := due.In(loc)
		due = time.Date(d.Year(), d.Month(), d.Day(), hm.Hour(), hm.Minute(), 0, 0, loc)
		if due.Hour() != hm.Hour() || due.Minute() != hm.Minute() {
			// The wall time does not exist (a DST gap, e.g. 02:30 when
			// clocks jump from 02:00 to 03:00): fire when the gap ends.
			_, end := due.ZoneBounds()
			due = end
		}
		// A wall time that happens twice (clocks going back) is taken at
		// its first occurrence, which is what time.Date returns.
	}
	return due, nil
}

// timerID names an evaluator timer: one per (campaign, user, key). It is
// the timer record's key, hence bytes.
func timerID(campaign, identity, key string) []byte {
	var out [3 + 32]byte
	return append([]byte(nil), appendHashID(out[:0], "ev_", campaign, identity, key)...)
}

// hashID is prefix (at most 8 bytes) + the hex of the first 16 bytes of the
// SHA-256 of parts joined by NUL bytes. Ids made this way must never change:
// re-processing after an upgrade must yield the ids emitted before it.
func hashID(prefix string, parts ...string) string {
	var out [8 + 32]byte
	return string(appendHashID(out[:0], prefix, parts...))
}

func appendHashID(dst []byte, prefix string, parts ...string) []byte {
	var in [128]byte
	b := in[:0]
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	h := sha256.Sum256(b)
	dst = append(dst, prefix...)
	return hex.AppendEncode(dst, h[:16])
}

// schedule remembers a pending timer and asks the timer service for it, or
// fires at once when it is already due (unless later than the lateness).
func (e *engine) schedule(u *user, c *manifest.Campaign, key string, p *hookstreamv1.PendingTimer, out *output) {
	now := e.now().UnixMilli()
	name := c.Metadata.Name
	m := u.memory(name)
	if p.DueMs <= now && now-p.DueMs > e.cfg.Lateness.Std().Milliseconds() {
		if had := m.pendingTimer(key) != nil; had {
			e.cancel(u, c, key, out)
		}
		e.skip("late", name)
		u.dropEmptyMemory(name)
		return
	}
	// A timer that is already due (the evaluator is behind, or the action
	// arrived late) still goes through the timer service rather than firing
	// here: its firing is appended to the user's events partition, behind
	// every event already queued there, so that an inaction event that
	// happened within the window but has not been read yet cancels it.
	m.setPending(key, p)
	id := timerID(name, u.identity, key)
	ctx, span := e.span(out, "evaluator.schedule_timer")
	if span.IsRecording() {
		a := spanattr.Get()
		*a = append(*a, attribute.String("campaign", name), attribute.String("trigger_type", triggerType(c)),
			attribute.String("timer_id", string(id)), attribute.Int64("due_ms", p.DueMs))
		ctx = spanattr.Defer(ctx, a) // set with where the command went, by the Kafka hook
	}
	// The propagators (W3C trace context and baggage) write nothing
	// without a span context or baggage; the map is not made for nothing.
	var carrier propagation.MapCarrier
	if trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0 {
		carrier = propagation.MapCarrier{}
		otel.GetTextMapPropagator().Inject(ctx, carrier)
	}
	var cmd []byte
	cmd, e.scratch = timerCommand(e.scratch, id, e.topics.Events, u.identity, name, key, p.DueMs, now, carrier)
	out.timers = append(out.timers, &kgo.Record{Topic: e.topics.Timers, Key: id, Value: cmd, Context: ctx})
}

func (e *engine) cancel(u *user, c *manifest.Campaign, key string, out *output) {
	if m := u.memoryOf(c.Metadata.Name); m == nil || m.pendingTimer(key) == nil {
		return
	}
	u.updateMemory(c.Metadata.Name).deletePending(key)
	u.dropEmptyMemory(c.Metadata.Name)
	u.dirty = true
	out.timers = append(out.timers, &kgo.Record{Topic: e.topics.Timers, Key: timerID(c.Metadata.Name, u.identity, key)})
}

// onTimer handles a fired evaluator timer: it fires only if the timer is
// still pending as scheduled (a cancelling event processed before wins) and
// the campaign still wants it.
func (e *engine) onTimer(u *user, ev *hookstreamv1.Event, out *output) error {
	var t hookstreamv1.EvaluatorTimer
	if err := proto.Unmarshal(ev.GetTimer().GetPayload(), &t); err != nil {
		e.skip("bad_timer", "")
		return nil
	}
	if m := u.memoryOf(t.Campaign); m == nil || m.pendingTimer(t.Key) == nil || m.pendingTimer(t.Key).DueMs != t.DueMs {
		e.skip("stale_timer", t.Campaign)
		return nil
	}
	m := u.updateMemory(t.Campaign)
	p := m.pendingTimer(t.Key)
	m.deletePending(t.Key)
	u.dirty = true
	c, ok := e.cat.Campaign(t.Campaign)
	if !ok || c.Spec.Trigger == nil {
		u.dropEmptyMemory(t.Campaign)
		e.skip("campaign_gone", t.Campaign)
		return nil
	}
	e.fireTimer(u, c, t.Key, p, out)
	u.dropEmptyMemory(t.Campaign)
	return nil
}

func (e *engine) fireTimer(u *user, c *manifest.Campaign, key string, p *hookstreamv1.PendingTimer, out *output) {
	cause := &hookstreamv1.Event{Id: p.CauseId, Name: p.CauseName, TsMs: p.CauseTsMs, PropertiesJson: p.CausePropertiesJson}
	id := "timer:" + p.CauseId
	if c.Spec.Trigger.Type == manifest.TriggerDateTimeProperty {
		id = fmt.Sprintf("date:%s:%d", u.identity, p.DueMs)
	}
	e.fire(u, c, id, cause, time.UnixMilli(p.DueMs), out)
}

// scheduledRun evaluates one user for one run of a scheduled campaign:
// who, and the trigger read over past behaviour. Idempotent per (campaign,
// run, user): the trigger id says so.
func (e *engine) scheduledRun(u *user, c *manifest.Campaign, runMs int64, out *output) {
	at := time.UnixMilli(runMs)
	t := c.Spec.Trigger
	if t != nil {
		from := func(a *manifest.Action, d time.Duration) int64 {
			if a != nil && a.In > 0 {
				return runMs - a.In.Std().Milliseconds()
			}
			if d > 0 {
				return runMs - d.Milliseconds()
			}
			return 0
		}
		switch t.Type {
		case manifest.TriggerSingleAction:
			if !u.did(t.Action, from(t.Action, 0), runMs) {
				return
			}
		case manifest.TriggerActionsWithUserProperties:
			if !u.did(t.Action, from(t.Action, 0), runMs) || !e.where(c, t.Profile, &u.prof, u, at) {
				return
			}
		case manifest.TriggerInaction:
			lastA := u.last(t.Action, from(t.Action, 0), runMs)
			if lastA == 0 || u.did(t.Inaction, lastA, runMs) {
				return
			}
		case manifest.TriggerActions:
			for i := range t.Actions {
				if !u.did(&t.Actions[i], from(&t.Actions[i], t.Within.Std()), runMs) {
					return
				}
			}
		default:
			return
		}
	}
	run := &hookstreamv1.Event{Id: fmt.Sprintf("run:%s:%d", c.Metadata.Name, runMs), TsMs: runMs}
	e.fire(u, c, fmt.Sprintf("run:%d:%s", runMs, u.identity), run, at, out)
}

func inWindow(w *manifest.ActiveWindow, at time.Time) bool {
	if w == nil {
		return true
	}
	if w.From != nil && at.Before(*w.From) {
		return false
	}
	if w.Until != nil && !at.Before(*w.Until) {
		return false
	}
	return true
}

// TriggerID is the deterministic id of the trigger that cause caused for
// campaign: re-evaluating the same input yields the same id, which the
// dispatcher deduplicates on and the receiver sees as webhook-id.
func TriggerID(campaign, cause string) string {
	return hashID("msg_", campaign, cause)
}

// InControlGroup assigns a user to a campaign's control group by a
// deterministic hash of (campaign, user) against controlGroup.percent.
func InControlGroup(c *manifest.Campaign, identity string) bool {
	if c.Spec.ControlGroup == nil || c.Spec.ControlGroup.Percent <= 0 {
		return false
	}
	h := sha256.Sum256([]byte(c.Metadata.Name + "\x00" + identity))
	bucket := float64(binary.BigEndian.Uint64(h[:8])%10000) / 100 // 0.00 .. 99.99
	return bucket < c.Spec.ControlGroup.Percent
}
