package manifest

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

var (
	dnsLabel   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// Weekdays are the values of spec.delivery.recurring.weekday.
var Weekdays = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}

// Resolver tells whether an object exists outside the set being validated
// (for example already applied).
type Resolver func(kind, name string) bool

// Validate checks objs as one set and returns every problem, each as
// "path: reason" with its source and line when the object was parsed from
// text. References (a campaign's webhook and segment) resolve within the set
// or through exists, which may be nil (then only the set counts). Validate
// does not change objs.
func Validate(objs []Object, exists Resolver) Problems {
	first := map[string]*origin{}
	inSet := map[string]bool{}
	var probs Problems
	for _, o := range objs {
		k := Key(o)
		if inSet[k] && o.GetMetadata().Name != "" {
			v := newValidator(o)
			where := ""
			if src := first[k]; src != nil {
				where = fmt.Sprintf(" (first at %s)", position(src))
			}
			v.add("metadata.name", "%s is defined more than once%s", objectName(o.GetKind(), o.GetMetadata().Name), where)
			probs = append(probs, v.probs...)
			continue
		}
		inSet[k] = true
		first[k] = originOf(o)
	}
	has := func(kind, name string) bool {
		return inSet[kind+"/"+name] || (exists != nil && exists(kind, name))
	}
	for _, o := range objs {
		v := newValidator(o)
		v.meta(o)
		switch o := o.(type) {
		case *Webhook:
			v.webhook(&o.Spec)
		case *Segment:
			v.condition("spec", &o.Spec)
		case *Campaign:
			v.campaign(&o.Spec, has)
		}
		if len(v.probs) == 0 {
			if _, err := json.Marshal(o); err != nil {
				v.add("", "cannot be stored: %v", err)
			}
		}
		sort.SliceStable(v.probs, func(i, j int) bool { return v.probs[i].Line < v.probs[j].Line })
		probs = append(probs, v.probs...)
	}
	return probs
}

func position(src *origin) string {
	if src.source == "" {
		return fmt.Sprintf("line %d", src.node.Line)
	}
	return fmt.Sprintf("%s:%d", src.source, src.node.Line)
}

type validator struct {
	object string
	src    *origin
	probs  Problems
}

func newValidator(o Object) *validator {
	return &validator{object: objectName(o.GetKind(), o.GetMetadata().Name), src: originOf(o)}
}

// add records a problem at path, with its line when the object was parsed.
// A problem on a path that already had a structural problem (and so was
// left empty) is not reported twice.
func (v *validator) add(path, format string, args ...any) {
	p := Problem{Object: v.object, Path: path, Reason: fmt.Sprintf(format, args...)}
	if v.src != nil {
		for _, b := range v.src.bad {
			if related(b, path) {
				return
			}
		}
		p.Source = v.src.source
		p.Line = lineOf(v.src.node, path)
	}
	v.probs = append(v.probs, p)
}

// related reports whether one path is the other or lies below it.
func related(a, b string) bool {
	if a == "" || b == "" {
		return a == b
	}
	below := func(x, y string) bool {
		return strings.HasPrefix(x, y) && len(x) > len(y) && (x[len(y)] == '.' || x[len(y)] == '[')
	}
	return a == b || below(a, b) || below(b, a)
}

func (v *validator) meta(o Object) {
	tm := typeMeta(o)
	switch tm.APIVersion {
	case APIVersion:
	case "":
		v.add("apiVersion", "is required (%s)", APIVersion)
	default:
		v.add("apiVersion", "must be %s, got %q", APIVersion, tm.APIVersion)
	}
	switch n := o.GetMetadata().Name; {
	case n == "":
		v.add("metadata.name", "is required")
	case !dnsLabel.MatchString(n):
		v.add("metadata.name", "must be a DNS label (lowercase letters, digits and '-', at most 63), got %q", n)
	}
}

func typeMeta(o Object) TypeMeta {
	switch o := o.(type) {
	case *Webhook:
		return o.TypeMeta
	case *Segment:
		return o.TypeMeta
	case *Campaign:
		return o.TypeMeta
	}
	return TypeMeta{}
}

// Headers a webhook may not set: Hookstream sets them (and signs them), or
// they carry credentials, which belong in spec.auth as secret references.
var (
	reservedHeaders   = []string{"content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature", "traceparent", "content-length", "host"}
	credentialHeaders = []string{"authorization", "proxy-authorization"}
)

func (v *validator) webhook(s *WebhookSpec) {
	v.url("spec.url", s.URL, false)
	if s.Method != "" && s.Method != "POST" && s.Method != "PUT" {
		v.add("spec.method", "must be POST or PUT, got %q", s.Method)
	}
	v.positive("spec.timeout", s.Timeout)
	if s.MaxInFlight < 0 {
		v.add("spec.maxInFlight", "must be at least 1, got %d", s.MaxInFlight)
	}
	if s.Auth != nil {
		switch {
		case s.Auth.Basic != nil && s.Auth.Bearer != nil:
			v.add("spec.auth", "must have basic or bearer, not both")
		case s.Auth.Basic == nil && s.Auth.Bearer == nil:
			v.add("spec.auth", "must have basic or bearer")
		}
		if b := s.Auth.Basic; b != nil {
			if b.Username == "" {
				v.add("spec.auth.basic.username", "is required")
			}
			v.secretRef("spec.auth.basic.passwordRef", b.PasswordRef)
		}
		if b := s.Auth.Bearer; b != nil {
			v.secretRef("spec.auth.bearer.tokenRef", b.TokenRef)
		}
	}
	for _, name := range sortedKeys(s.Headers) {
		path := "spec.headers." + name
		lower := strings.ToLower(name)
		switch {
		case !headerName.MatchString(name):
			v.add(path, "is not a valid HTTP header name")
		case slices.Contains(credentialHeaders, lower):
			v.add(path, "credentials are never written in manifests: use spec.auth (basic or bearer) with a secret reference")
		case slices.Contains(reservedHeaders, lower):
			v.add(path, "is set by Hookstream and cannot be overridden")
		}
	}
	if s.Signing != nil {
		v.secretRef("spec.signing.secretRef", s.Signing.SecretRef)
	}
	if s.RateLimit != nil && !(s.RateLimit.PerSecond > 0 && !math.IsInf(s.RateLimit.PerSecond, 0)) {
		v.add("spec.rateLimit.perSecond", "must be a positive number, got %v", s.RateLimit.PerSecond)
	}
	if r := s.Retry; r != nil {
		for i, d := range r.Schedule {
			if d <= 0 {
				v.add(fmt.Sprintf("spec.retry.schedule[%d]", i), "must be a positive duration, got %s", d)
			}
		}
		if len(r.Schedule) > 50 {
			v.add("spec.retry.schedule", "has %d retries: at most 50", len(r.Schedule))
		}
		v.positive("spec.retry.maxAge", r.MaxAge)
	}
}

// url checks an http(s) URL. A templated URL (linked content) may hold
// Liquid anywhere after its literal scheme.
func (v *validator) url(path, s string, templated bool) {
	if s == "" {
		v.add(path, "is required")
		return
	}
	check := s
	if templated {
		check = liquidTag.ReplaceAllString(s, "x")
	} else if IsTemplate(s) {
		v.add(path, "must be a fixed URL: Liquid is allowed in spec.what.query, not here")
		return
	}
	u, err := url.Parse(check)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(path, "must be an http(s) URL, got %q", s)
		return
	}
	if u.User != nil {
		v.add(path, "must not carry credentials (user:password@): use spec.auth with a secret reference")
	}
}

func (v *validator) secretRef(path string, r SecretRef) {
	switch {
	case r.Env != "" && r.File != "":
		v.add(path, "must have env or file, not both")
	case r.Env == "" && r.File == "":
		v.add(path, "must reference a secret as {env: NAME} or {file: PATH}, never a literal value")
	case r.Env != "" && !envName.MatchString(r.Env):
		v.add(path+".env", "must be an environment variable name (letters, digits and _), got %q", r.Env)
	}
}

// positive checks an optional duration: unset (0) is fine, negative is not.
func (v *validator) positive(path string, d duration.Duration) {
	if d < 0 {
		v.add(path, "must be a positive duration, got %s", d)
	}
}

// condition checks one condition of a Segment, who.where or a trigger.
func (v *validator) condition(path string, c *Condition) {
	forms := 0
	if c.Property != "" || c.Op != "" || c.Value != nil {
		forms++
		if c.Property == "" {
			v.add(path+".property", "is required")
		}
		v.op(path, c.Op, c.Value)
	}
	if c.Profile != nil {
		forms++
		if c.Profile.Property == "" {
			v.add(path+".profile.property", "is required")
		}
		v.op(path+".profile", c.Profile.Op, c.Profile.Value)
	}
	if e := c.Event; e != nil {
		forms++
		if e.Name == "" {
			v.add(path+".event.name", "is required")
		}
		for i := range e.Where {
			v.condition(fmt.Sprintf("%s.event.where[%d]", path, i), &e.Where[i])
		}
		if n := e.Count; n != nil {
			for op, b := range map[string]*int{"eq": n.Eq, "gt": n.Gt, "gte": n.Gte, "lt": n.Lt, "lte": n.Lte} {
				if b != nil && *b < 0 {
					v.add(path+".event.count."+op, "must not be negative, got %d", *b)
				}
			}
		}
		v.positive(path+".event.in", e.In)
	}
	for _, g := range []struct {
		name string
		list []Condition
	}{{"all", c.All}, {"any", c.Any}} {
		if g.list == nil {
			continue
		}
		forms++
		if len(g.list) == 0 {
			v.add(path+"."+g.name, "must hold at least one condition")
		}
		for i := range g.list {
			v.condition(fmt.Sprintf("%s.%s[%d]", path, g.name, i), &g.list[i])
		}
	}
	if c.Not != nil {
		forms++
		v.condition(path+".not", c.Not)
	}
	switch {
	case forms == 0:
		v.add(path, "must be a condition: {property, op, value}, profile, event, all, any or not")
	case forms > 1:
		v.add(path, "must be exactly one of a property condition, profile, event, all, any or not")
	}
}

// op checks an operator and its value.
func (v *validator) op(path, op string, value any) {
	if op == "" {
		v.add(path+".op", "is required (one of %s)", strings.Join(Operators, " "))
		return
	}
	if !slices.Contains(Operators, op) {
		v.add(path+".op", "unknown operator %q (one of %s)", op, strings.Join(Operators, " "))
		return
	}
	if _, err := json.Marshal(value); err != nil {
		v.add(path+".value", "must be a plain value (string, number, boolean, or a list of them)")
		return
	}
	list, isList := value.([]any)
	switch op {
	case "exists", "not_exists":
		if value != nil {
			v.add(path+".value", "is not used by op %s", op)
		}
	case "in", "nin":
		if !isList {
			v.add(path+".value", "must be a list for op %s", op)
		}
	case "between":
		if !isList || len(list) != 2 {
			v.add(path+".value", "must be a list of two values [low, high] for op between")
		}
	default:
		switch value.(type) {
		case nil:
			v.add(path+".value", "is required for op %s", op)
		case []any, map[string]any:
			v.add(path+".value", "must be a single value for op %s", op)
		}
	}
}

func (v *validator) campaign(s *CampaignSpec, has func(kind, name string) bool) {
	if s.Webhook == "" {
		v.add("spec.webhook", "is required")
	} else if !has(KindWebhook, s.Webhook) {
		v.add("spec.webhook", "Webhook %q does not exist", s.Webhook)
	}
	if s.State != "" && s.State != StateActive && s.State != StatePaused {
		v.add("spec.state", "must be active or paused, got %q", s.State)
	}
	scheduled := false
	switch s.Delivery.Type {
	case DeliveryTriggered:
		if s.Trigger == nil {
			v.add("spec.trigger", "is required for a triggered campaign")
		}
		d := s.Delivery
		for _, f := range []struct{ name, val string }{{"at", d.At}, {"timezone", d.Timezone}} {
			if f.val != "" {
				v.add("spec.delivery."+f.name, "is only used by scheduled campaigns")
			}
		}
		if d.Recurring != nil {
			v.add("spec.delivery.recurring", "is only used by scheduled campaigns")
		}
	case DeliveryScheduled:
		scheduled = true
		v.scheduled(&s.Delivery)
		if s.Trigger != nil && (s.Trigger.Type == TriggerInactionWithinTime || s.Trigger.Type == TriggerDateTimeProperty) {
			v.add("spec.trigger.type", "%s is for triggered campaigns only (a scheduled campaign reads past behaviour)", s.Trigger.Type)
		}
		if s.Trigger == nil && (s.Who == nil || (s.Who.Segment == "" && s.Who.Where == nil)) {
			v.add("spec.who", "a scheduled campaign without a trigger needs who.segment or who.where (it would target every user)")
		}
	case "":
		v.add("spec.delivery.type", "is required: triggered or scheduled")
	default:
		v.add("spec.delivery.type", "must be triggered or scheduled, got %q", s.Delivery.Type)
	}
	if s.Trigger != nil {
		v.trigger(s.Trigger, scheduled)
	}
	if w := s.Who; w != nil {
		if w.Segment != "" && !has(KindSegment, w.Segment) {
			v.add("spec.who.segment", "Segment %q does not exist", w.Segment)
		}
		if w.Where != nil {
			v.condition("spec.who.where", w.Where)
		}
		if w.MaxUsers < 0 {
			v.add("spec.who.maxUsers", "must not be negative, got %d", w.MaxUsers)
		}
	}
	v.what(&s.What)
	if l := s.Limits; l != nil {
		if fc := l.FrequencyCap; fc != nil {
			if fc.Count < 1 {
				v.add("spec.limits.frequencyCap.count", "must be at least 1, got %d", fc.Count)
			}
			if fc.Per <= 0 {
				v.add("spec.limits.frequencyCap.per", "must be a positive duration like 24h")
			}
		}
		if l.Throttle != nil && l.Throttle.PerMinute < 1 {
			v.add("spec.limits.throttle.perMinute", "must be at least 1, got %d", l.Throttle.PerMinute)
		}
		if l.MaxPerDay < 0 {
			v.add("spec.limits.maxPerDay", "must not be negative, got %d", l.MaxPerDay)
		}
	}
	if q := s.QuietHours; q != nil {
		v.clock("spec.quietHours.from", q.From)
		v.clock("spec.quietHours.to", q.To)
		if q.From != "" && q.From == q.To {
			v.add("spec.quietHours.to", "must differ from spec.quietHours.from")
		}
		if a := q.Action; a != "" && a != "delay" && a != "discard" {
			v.add("spec.quietHours.action", "must be delay or discard, got %q", a)
		}
	}
	if cg := s.ControlGroup; cg != nil && !(cg.Percent >= 0 && cg.Percent <= 100) {
		v.add("spec.controlGroup.percent", "must be between 0 and 100, got %v", cg.Percent)
	}
	if g := s.Goal; g != nil {
		if g.Event == "" {
			v.add("spec.goal.event", "is required")
		}
		v.positive("spec.goal.within", g.Within)
	}
	if a := s.Active; a != nil && a.From != nil && a.Until != nil && !a.Until.After(*a.From) {
		v.add("spec.active.until", "must be after spec.active.from")
	}
}

func (v *validator) what(w *What) {
	if ct := w.ContentType; ct != "" && ct != "json" && ct != "text" {
		v.add("spec.what.contentType", "must be json or text, got %q", ct)
	}
	p := w.Payload
	switch {
	case len(p.ProfileVariables) > 0 && p.Body != "":
		v.add("spec.what.payload", "must have profileVariables or body, not both")
	case p.Body != "":
		if err := CheckLiquid(p.Body); err != nil {
			v.add("spec.what.payload.body", "Liquid does not compile: %v", err)
		}
	default:
		if w.ContentType == "text" {
			v.add("spec.what.contentType", "text needs a payload.body: a profileVariables payload is JSON")
		}
	}
	seen := map[string]bool{}
	for i, pv := range p.ProfileVariables {
		path := fmt.Sprintf("spec.what.payload.profileVariables[%d]", i)
		switch {
		case pv == "":
			v.add(path, "must not be empty")
		case seen[pv]:
			v.add(path, "%s is listed twice", pv)
		}
		seen[pv] = true
	}
	for _, m := range []struct {
		name string
		m    map[string]string
	}{{"query", w.Query}, {"keyValues", w.KeyValues}} {
		for _, k := range sortedKeys(m.m) {
			path := "spec.what." + m.name + "." + k
			if k == "" {
				v.add(path, "names must not be empty")
			}
			if err := CheckLiquid(m.m[k]); err != nil {
				v.add(path, "Liquid does not compile: %v", err)
			}
		}
	}
	if b := w.Batch; b != nil {
		if p.Body != "" {
			v.add("spec.what.batch", "is only for profileVariables payloads (a Liquid body is sent one profile per request)")
		}
		if b.MaxProfiles < 1 || b.MaxProfiles > 1000 {
			v.add("spec.what.batch.maxProfiles", "must be 1 to 1000, got %d", b.MaxProfiles)
		}
		v.positive("spec.what.batch.linger", b.Linger)
	}
	names := map[string]bool{}
	for i, lc := range w.LinkedContent {
		path := fmt.Sprintf("spec.what.linkedContent[%d]", i)
		switch {
		case lc.Name == "":
			v.add(path+".name", "is required")
		case !identifier.MatchString(lc.Name):
			v.add(path+".name", "must be letters, digits and _ (it is read as linked.%s in Liquid), got %q", lc.Name, lc.Name)
		case names[lc.Name]:
			v.add(path+".name", "%q is used twice", lc.Name)
		}
		names[lc.Name] = true
		v.url(path+".url", lc.URL, true)
		if err := CheckLiquid(lc.URL); err != nil {
			v.add(path+".url", "Liquid does not compile: %v", err)
		}
		v.positive(path+".timeout", lc.Timeout)
		v.positive(path+".cacheTTL", lc.CacheTTL)
		if lc.OnError != "" && lc.OnError != "abort" && lc.OnError != "skip" {
			v.add(path+".onError", "must be abort or skip, got %q", lc.OnError)
		}
	}
}

func (v *validator) scheduled(d *Delivery) {
	if d.Timezone != "" {
		v.zone("spec.delivery.timezone", d.Timezone)
	}
	switch {
	case d.At != "" && d.Recurring != nil:
		v.add("spec.delivery", "must have at or recurring, not both")
	case d.At != "":
		if _, ok := parseLocal(d.At); !ok {
			v.add("spec.delivery.at", "must be a local time like 2026-12-07T09:00:00 or RFC 3339, got %q", d.At)
		}
	case d.Recurring != nil:
		r := d.Recurring
		switch r.Every {
		case "day":
		case "week":
			if !slices.Contains(Weekdays, r.Weekday) {
				v.add("spec.delivery.recurring.weekday", "must be one of %s for every: week, got %q", strings.Join(Weekdays, " "), r.Weekday)
			}
		case "month":
			if r.Day < 1 || r.Day > 31 {
				v.add("spec.delivery.recurring.day", "must be 1 to 31 for every: month, got %d", r.Day)
			}
		case "":
			v.add("spec.delivery.recurring.every", "is required: day, week or month")
		default:
			v.add("spec.delivery.recurring.every", "must be day, week or month, got %q", r.Every)
		}
		if r.Weekday != "" && r.Every != "week" {
			v.add("spec.delivery.recurring.weekday", "is only used with every: week")
		}
		if r.Day != 0 && r.Every != "month" {
			v.add("spec.delivery.recurring.day", "is only used with every: month")
		}
		v.clock("spec.delivery.recurring.time", r.Time)
		if r.Timezone != "" {
			v.zone("spec.delivery.recurring.timezone", r.Timezone)
		}
		start, okStart := parseLocal(r.Start)
		if r.Start != "" && !okStart {
			v.add("spec.delivery.recurring.start", "must be a date like 2026-12-01 or a time like 2026-12-01T09:00:00, got %q", r.Start)
		}
		end, okEnd := parseLocal(r.End)
		if r.End != "" && !okEnd {
			v.add("spec.delivery.recurring.end", "must be a date like 2026-12-31 or a time like 2026-12-31T09:00:00, got %q", r.End)
		}
		if okStart && okEnd && !end.After(start) {
			v.add("spec.delivery.recurring.end", "must be after spec.delivery.recurring.start")
		}
	default:
		v.add("spec.delivery", "a scheduled campaign needs at (one time) or recurring")
	}
}

// parseLocal reads a date, a local date-time or an RFC 3339 time.
func parseLocal(s string) (time.Time, bool) {
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// triggerFields are the fields each trigger type uses besides type.
var triggerFields = map[string][]string{
	TriggerSingleAction:              {"action"},
	TriggerActions:                   {"actions", "within", "ordered"},
	TriggerInactionWithinTime:        {"action", "inaction", "within", "matchOn"},
	TriggerInaction:                  {"action", "inaction", "lookback"},
	TriggerDateTimeProperty:          {"property", "offset", "at", "timezone"},
	TriggerActionsWithUserProperties: {"action", "profile"},
}

func (v *validator) trigger(t *Trigger, scheduled bool) {
	used, known := triggerFields[t.Type]
	switch {
	case t.Type == "":
		v.add("spec.trigger.type", "is required (one of %s)", strings.Join(TriggerTypes, " "))
		return
	case !known:
		v.add("spec.trigger.type", "unknown trigger type %q (one of %s)", t.Type, strings.Join(TriggerTypes, " "))
		return
	}
	set := map[string]bool{
		"action": t.Action != nil, "actions": t.Actions != nil, "inaction": t.Inaction != nil,
		"within": t.Within != 0, "ordered": t.Ordered, "matchOn": t.MatchOn != nil,
		"lookback": t.Lookback != 0, "property": t.Property != nil, "offset": t.Offset != 0,
		"at": t.At != "", "timezone": t.Timezone != "", "profile": t.Profile != nil,
	}
	for _, f := range sortedKeys(set) {
		if set[f] && !slices.Contains(used, f) {
			v.add("spec.trigger."+f, "is not used by trigger type %s", t.Type)
		}
	}
	need := func(path string, ok bool) {
		if !ok {
			v.add("spec.trigger."+path, "is required for trigger type %s", t.Type)
		}
	}
	action := func(path string, a *Action) {
		if a == nil {
			need(path, false)
			return
		}
		if a.Event == "" {
			v.add("spec.trigger."+path+".event", "is required")
		}
		for i := range a.Where {
			v.condition(fmt.Sprintf("spec.trigger.%s.where[%d]", path, i), &a.Where[i])
		}
		v.positive("spec.trigger."+path+".in", a.In)
		if a.In != 0 && !scheduled {
			v.add("spec.trigger."+path+".in", "is only used by scheduled campaigns (it bounds the past behaviour they read)")
		}
	}
	switch t.Type {
	case TriggerSingleAction:
		action("action", t.Action)
	case TriggerActions:
		if len(t.Actions) < 2 {
			v.add("spec.trigger.actions", "needs at least two actions (use single_action for one)")
		}
		for i := range t.Actions {
			action(fmt.Sprintf("actions[%d]", i), &t.Actions[i])
		}
		v.positive("spec.trigger.within", t.Within)
		if !scheduled {
			need("within", t.Within != 0)
		}
	case TriggerInactionWithinTime:
		action("action", t.Action)
		action("inaction", t.Inaction)
		v.positive("spec.trigger.within", t.Within)
		need("within", t.Within != 0)
		seen := map[string]bool{}
		for i, p := range t.MatchOn {
			path := fmt.Sprintf("spec.trigger.matchOn[%d]", i)
			switch {
			case p == "":
				v.add(path, "must not be empty")
			case seen[p]:
				v.add(path, "%s is listed twice", p)
			}
			seen[p] = true
		}
	case TriggerInaction:
		action("action", t.Action)
		action("inaction", t.Inaction)
		v.positive("spec.trigger.lookback", t.Lookback)
	case TriggerDateTimeProperty:
		p := t.Property
		if p == nil {
			need("property", false)
			break
		}
		if p.Name == "" {
			v.add("spec.trigger.property.name", "is required")
		}
		switch p.Source {
		case "event":
			if p.Event == "" {
				v.add("spec.trigger.property.event", "is required for source: event")
			}
		case "profile":
			if p.Event != "" {
				v.add("spec.trigger.property.event", "is only used with source: event")
			}
		case "":
			v.add("spec.trigger.property.source", "is required: event or profile")
		default:
			v.add("spec.trigger.property.source", "must be event or profile, got %q", p.Source)
		}
		if t.At != "" {
			v.clock("spec.trigger.at", t.At)
		}
		if t.Timezone != "" {
			v.zone("spec.trigger.timezone", t.Timezone)
		}
	case TriggerActionsWithUserProperties:
		action("action", t.Action)
		need("profile", len(t.Profile) > 0)
		for i := range t.Profile {
			v.condition(fmt.Sprintf("spec.trigger.profile[%d]", i), &t.Profile[i])
		}
	}
}

func (v *validator) clock(path, s string) {
	if s == "" {
		v.add(path, "is required: a time of day like 09:00")
		return
	}
	if _, err := time.Parse("15:04", s); err != nil {
		v.add(path, "must be a time of day like 09:00, got %q", s)
	}
}

func (v *validator) zone(path, s string) {
	// LoadLocation also accepts "Local" and file paths; only IANA names are
	// meant here.
	if _, err := time.LoadLocation(s); err != nil || s == "Local" || strings.HasPrefix(s, "/") || strings.Contains(s, "..") {
		v.add(path, "unknown IANA time zone %q (like Europe/Paris or UTC)", s)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
