package manifest

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Resolver tells whether an object exists outside the set being validated
// (for example already applied).
type Resolver func(kind, name string) bool

// Validate checks objs as one set: references between them resolve within
// the set or through exists (which may be nil). It returns every problem.
func Validate(objs []Object, exists Resolver) Problems {
	inSet := map[string]bool{}
	var probs Problems
	for _, o := range objs {
		k := Key(o)
		if inSet[k] {
			probs = append(probs, Problem{Object: k, Reason: "appears more than once"})
		}
		inSet[k] = true
	}
	has := func(kind, name string) bool {
		return inSet[kind+"/"+name] || (exists != nil && exists(kind, name))
	}
	for _, o := range objs {
		v := &validator{object: Key(o)}
		v.meta(o)
		switch o := o.(type) {
		case *Webhook:
			v.webhook(&o.Spec)
		case *Segment:
			v.condition("spec", &o.Spec)
		case *Campaign:
			v.campaign(&o.Spec, has)
		}
		probs = append(probs, v.probs...)
	}
	return probs
}

type validator struct {
	object string
	probs  Problems
}

func (v *validator) add(path, format string, args ...any) {
	v.probs = append(v.probs, Problem{Object: v.object, Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) meta(o Object) {
	tm := typeMeta(o)
	if tm.APIVersion != APIVersion {
		v.add("apiVersion", "must be %s, got %q", APIVersion, tm.APIVersion)
	}
	if n := o.GetMetadata().Name; !dnsLabel.MatchString(n) {
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

func (v *validator) webhook(s *WebhookSpec) {
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		v.add("spec.url", "is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		v.add("spec.url", "must be an http(s) URL, got %q", s.URL)
	}
	if s.Method != "" && s.Method != "POST" && s.Method != "PUT" {
		v.add("spec.method", "must be POST or PUT, got %q", s.Method)
	}
	if s.Timeout < 0 {
		v.add("spec.timeout", "must be positive")
	}
	if s.MaxInFlight < 0 {
		v.add("spec.maxInFlight", "must be positive")
	}
	if s.Auth != nil {
		if (s.Auth.Basic == nil) == (s.Auth.Bearer == nil) {
			v.add("spec.auth", "must have exactly one of basic or bearer")
		}
		if s.Auth.Basic != nil {
			v.secretRef("spec.auth.basic.passwordRef", s.Auth.Basic.PasswordRef)
		}
		if s.Auth.Bearer != nil {
			v.secretRef("spec.auth.bearer.tokenRef", s.Auth.Bearer.TokenRef)
		}
	}
	if s.Signing != nil {
		v.secretRef("spec.signing.secretRef", s.Signing.SecretRef)
	}
	if s.RateLimit != nil && s.RateLimit.PerSecond <= 0 {
		v.add("spec.rateLimit.perSecond", "must be positive")
	}
	if s.Retry != nil {
		for i, d := range s.Retry.Schedule {
			if d <= 0 {
				v.add(fmt.Sprintf("spec.retry.schedule[%d]", i), "must be a positive duration")
			}
		}
	}
}

func (v *validator) secretRef(path string, r SecretRef) {
	if (r.Env == "") == (r.File == "") {
		v.add(path, "must reference a secret as {env: NAME} or {file: PATH}, never a literal value")
	}
}

func (v *validator) condition(path string, c *Condition) {
	forms := 0
	if c.Property != "" {
		forms++
		v.op(path, c.Op, c.Value)
	}
	if c.Profile != nil {
		forms++
		if c.Profile.Property == "" {
			v.add(path+".profile.property", "is required")
		}
		v.op(path+".profile", c.Profile.Op, c.Profile.Value)
	}
	if c.Event != nil {
		forms++
		if c.Event.Name == "" {
			v.add(path+".event.name", "is required")
		}
		for i := range c.Event.Where {
			v.condition(fmt.Sprintf("%s.event.where[%d]", path, i), &c.Event.Where[i])
		}
	}
	if c.All != nil {
		forms++
		for i := range c.All {
			v.condition(fmt.Sprintf("%s.all[%d]", path, i), &c.All[i])
		}
	}
	if c.Any != nil {
		forms++
		for i := range c.Any {
			v.condition(fmt.Sprintf("%s.any[%d]", path, i), &c.Any[i])
		}
	}
	if c.Not != nil {
		forms++
		v.condition(path+".not", c.Not)
	}
	if forms != 1 {
		v.add(path, "must be exactly one of a property condition, profile, event, all, any or not")
	}
}

func (v *validator) op(path, op string, value any) {
	if !slices.Contains(Operators, op) {
		v.add(path+".op", "unknown operator %q (one of %s)", op, strings.Join(Operators, " "))
		return
	}
	if value == nil && op != "exists" && op != "not_exists" {
		v.add(path+".value", "is required for op %s", op)
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
	switch s.Delivery.Type {
	case DeliveryTriggered:
		if s.Trigger == nil {
			v.add("spec.trigger", "is required for a triggered campaign")
		}
	case DeliveryScheduled:
		v.scheduled(&s.Delivery)
		if s.Trigger != nil && (s.Trigger.Type == TriggerInactionWithinTime || s.Trigger.Type == TriggerDateTimeProperty) {
			v.add("spec.trigger.type", "%s is for triggered campaigns only (a scheduled campaign reads past behaviour)", s.Trigger.Type)
		}
	default:
		v.add("spec.delivery.type", "must be triggered or scheduled, got %q", s.Delivery.Type)
	}
	if s.Trigger != nil {
		v.trigger(s.Trigger)
	}
	if s.Who != nil {
		if s.Who.Segment != "" && !has(KindSegment, s.Who.Segment) {
			v.add("spec.who.segment", "Segment %q does not exist", s.Who.Segment)
		}
		if s.Who.Where != nil {
			v.condition("spec.who.where", s.Who.Where)
		}
		if s.Who.MaxUsers < 0 {
			v.add("spec.who.maxUsers", "must be positive")
		}
	}
	if ct := s.What.ContentType; ct != "" && ct != "json" && ct != "text" {
		v.add("spec.what.contentType", "must be json or text, got %q", ct)
	}
	if len(s.What.Payload.ProfileVariables) > 0 && s.What.Payload.Body != "" {
		v.add("spec.what.payload", "must have profileVariables or body, not both")
	}
	if s.ControlGroup != nil && (s.ControlGroup.Percent < 0 || s.ControlGroup.Percent > 100) {
		v.add("spec.controlGroup.percent", "must be between 0 and 100, got %v", s.ControlGroup.Percent)
	}
	if s.QuietHours != nil {
		v.clock("spec.quietHours.from", s.QuietHours.From)
		v.clock("spec.quietHours.to", s.QuietHours.To)
		if a := s.QuietHours.Action; a != "" && a != "delay" && a != "discard" {
			v.add("spec.quietHours.action", "must be delay or discard, got %q", a)
		}
	}
	if s.Goal != nil && s.Goal.Event == "" {
		v.add("spec.goal.event", "is required")
	}
	if s.Active != nil && s.Active.From != nil && s.Active.Until != nil && !s.Active.Until.After(*s.Active.From) {
		v.add("spec.active.until", "must be after spec.active.from")
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
		if _, err := time.Parse("2006-01-02T15:04:05", d.At); err != nil {
			if _, err := time.Parse(time.RFC3339, d.At); err != nil {
				v.add("spec.delivery.at", "must be a local time like 2026-12-07T09:00:00 or RFC 3339, got %q", d.At)
			}
		}
	case d.Recurring != nil:
		r := d.Recurring
		switch r.Every {
		case "day":
		case "week":
			if !slices.Contains([]string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}, r.Weekday) {
				v.add("spec.delivery.recurring.weekday", "must be one of mon tue wed thu fri sat sun, got %q", r.Weekday)
			}
		case "month":
			if r.Day < 1 || r.Day > 31 {
				v.add("spec.delivery.recurring.day", "must be 1 to 31, got %d", r.Day)
			}
		default:
			v.add("spec.delivery.recurring.every", "must be day, week or month, got %q", r.Every)
		}
		v.clock("spec.delivery.recurring.time", r.Time)
		if r.Timezone != "" {
			v.zone("spec.delivery.recurring.timezone", r.Timezone)
		}
	default:
		v.add("spec.delivery", "a scheduled campaign needs at or recurring")
	}
}

func (v *validator) trigger(t *Trigger) {
	need := func(path string, ok bool) {
		if !ok {
			v.add("spec.trigger."+path, "is required for type %s", t.Type)
		}
	}
	action := func(path string, a *Action) {
		need(path, a != nil && a.Event != "")
		if a != nil {
			for i := range a.Where {
				v.condition(fmt.Sprintf("spec.trigger.%s.where[%d]", path, i), &a.Where[i])
			}
		}
	}
	switch t.Type {
	case TriggerSingleAction:
		action("action", t.Action)
	case TriggerActions:
		need("actions", len(t.Actions) > 0)
		for i := range t.Actions {
			action(fmt.Sprintf("actions[%d]", i), &t.Actions[i])
		}
	case TriggerInactionWithinTime:
		action("action", t.Action)
		action("inaction", t.Inaction)
		need("within", t.Within > 0)
	case TriggerInaction:
		action("action", t.Action)
		action("inaction", t.Inaction)
	case TriggerDateTimeProperty:
		need("property", t.Property != nil && t.Property.Name != "")
		if t.Property != nil {
			switch t.Property.Source {
			case "event":
				need("property.event", t.Property.Event != "")
			case "profile":
			default:
				v.add("spec.trigger.property.source", "must be event or profile, got %q", t.Property.Source)
			}
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
	case "":
		v.add("spec.trigger.type", "is required (one of %s)", strings.Join(TriggerTypes, " "))
	default:
		v.add("spec.trigger.type", "unknown trigger type %q (one of %s)", t.Type, strings.Join(TriggerTypes, " "))
	}
}

func (v *validator) clock(path, s string) {
	if _, err := time.Parse("15:04", s); err != nil {
		v.add(path, "must be a time of day like 09:00, got %q", s)
	}
}

func (v *validator) zone(path, s string) {
	if _, err := time.LoadLocation(s); err != nil {
		v.add(path, "unknown IANA time zone %q", s)
	}
}

// ApplyDefaults fills the defaults of CONTRACT.md into o.
func ApplyDefaults(o Object) {
	switch o := o.(type) {
	case *Webhook:
		if o.Spec.Method == "" {
			o.Spec.Method = "POST"
		}
		if o.Spec.Timeout == 0 {
			o.Spec.Timeout.Set("3s") //nolint:errcheck // constant
		}
		if o.Spec.MaxInFlight == 0 {
			o.Spec.MaxInFlight = 10
		}
	case *Campaign:
		if o.Spec.State == "" {
			o.Spec.State = StateActive
		}
		if o.Spec.What.ContentType == "" {
			o.Spec.What.ContentType = "json"
		}
	}
}
