// Package manifest holds the Webhook, Segment and Campaign manifests of
// CONTRACT.md section 2: their Go types, parsing of multi-document YAML and
// JSON, and validation.
package manifest

import (
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// APIVersion is the only apiVersion accepted.
const APIVersion = "hookstream.dev/v1"

// The kinds.
const (
	KindWebhook  = "Webhook"
	KindSegment  = "Segment"
	KindCampaign = "Campaign"
)

// Metadata is the part of every manifest that names it.
type Metadata struct {
	// Name is a DNS label: lowercase letters, digits and '-', at most 63.
	Name string `yaml:"name" json:"name"`
	// Generation counts the changes to the object's spec; set by the server.
	Generation  int64             `yaml:"generation,omitempty" json:"generation,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty" json:"annotations,omitempty"`
}

// TypeMeta is apiVersion and kind.
type TypeMeta struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion"`
	Kind       string `yaml:"kind" json:"kind"`
}

// Object is any manifest.
type Object interface {
	GetKind() string
	GetMetadata() *Metadata
}

// GetKind returns the kind.
func (t TypeMeta) GetKind() string { return t.Kind }

// Webhook is an endpoint that campaigns send to.
type Webhook struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata Metadata    `yaml:"metadata" json:"metadata"`
	Spec     WebhookSpec `yaml:"spec" json:"spec"`

	src *origin // where it was parsed from; nil for stored objects
}

// GetMetadata returns the metadata.
func (w *Webhook) GetMetadata() *Metadata { return &w.Metadata }

// WebhookSpec is a Webhook's spec.
type WebhookSpec struct {
	// URL is http or https.
	URL string `yaml:"url" json:"url"`
	// Method is POST (default) or PUT.
	Method string `yaml:"method,omitempty" json:"method,omitempty"`
	// Timeout of one attempt, default 3s.
	Timeout   duration.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	Auth      *Auth             `yaml:"auth,omitempty" json:"auth,omitempty"`
	Headers   map[string]string `yaml:"headers,omitempty" json:"headers,omitempty"`
	Signing   *Signing          `yaml:"signing,omitempty" json:"signing,omitempty"`
	RateLimit *RateLimit        `yaml:"rateLimit,omitempty" json:"rateLimit,omitempty"`
	// MaxInFlight caps concurrent requests to the endpoint, default 10.
	MaxInFlight int `yaml:"maxInFlight,omitempty" json:"maxInFlight,omitempty"`
	// Retry defaults to DefaultRetrySchedule and a maxAge of 6h.
	Retry *Retry `yaml:"retry,omitempty" json:"retry,omitempty"`
}

// SecretRef points at a secret; its value never travels in a manifest.
// Exactly one of Env and File is set; the service that needs the secret
// reads it when it needs it.
type SecretRef struct {
	Env  string `yaml:"env,omitempty" json:"env,omitempty"`
	File string `yaml:"file,omitempty" json:"file,omitempty"`
}

// Auth is basic or bearer authentication.
type Auth struct {
	Basic  *BasicAuth  `yaml:"basic,omitempty" json:"basic,omitempty"`
	Bearer *BearerAuth `yaml:"bearer,omitempty" json:"bearer,omitempty"`
}

// BasicAuth is HTTP basic authentication.
type BasicAuth struct {
	Username    string    `yaml:"username" json:"username"`
	PasswordRef SecretRef `yaml:"passwordRef" json:"passwordRef"`
}

// BearerAuth is an Authorization: Bearer token.
type BearerAuth struct {
	TokenRef SecretRef `yaml:"tokenRef" json:"tokenRef"`
}

// Signing signs requests per Standard Webhooks with a whsec_ secret.
type Signing struct {
	SecretRef SecretRef `yaml:"secretRef" json:"secretRef"`
}

// RateLimit caps requests to the endpoint.
type RateLimit struct {
	PerSecond float64 `yaml:"perSecond" json:"perSecond"`
}

// Retry is the retry schedule after the first attempt: the waits before
// each retry, and the age of a delivery after which no retry starts.
type Retry struct {
	Schedule []duration.Duration `yaml:"schedule,omitempty" json:"schedule,omitempty"`
	MaxAge   duration.Duration   `yaml:"maxAge,omitempty" json:"maxAge,omitempty"`
}

// DefaultRetrySchedule is CONTRACT.md's default: 5s, 30s, 2m, 10m, 30m, 1h, 3h.
var DefaultRetrySchedule = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour}

// Segment is a named condition over users.
type Segment struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata Metadata  `yaml:"metadata" json:"metadata"`
	Spec     Condition `yaml:"spec" json:"spec"`

	src *origin
}

// GetMetadata returns the metadata.
func (s *Segment) GetMetadata() *Metadata { return &s.Metadata }

// Condition is a property, profile or event-history condition, or a
// combination of conditions. Exactly one form is set.
type Condition struct {
	// Property condition: {property, op, value}.
	Property string `yaml:"property,omitempty" json:"property,omitempty"`
	Op       string `yaml:"op,omitempty" json:"op,omitempty"`
	Value    any    `yaml:"value,omitempty" json:"value,omitempty"`

	Profile *PropertyCondition `yaml:"profile,omitempty" json:"profile,omitempty"`
	Event   *EventCondition    `yaml:"event,omitempty" json:"event,omitempty"`

	All []Condition `yaml:"all,omitempty" json:"all,omitempty"`
	Any []Condition `yaml:"any,omitempty" json:"any,omitempty"`
	Not *Condition  `yaml:"not,omitempty" json:"not,omitempty"`
}

// PropertyCondition compares one property.
type PropertyCondition struct {
	Property string `yaml:"property" json:"property"`
	Op       string `yaml:"op" json:"op"`
	Value    any    `yaml:"value,omitempty" json:"value,omitempty"`
}

// EventCondition counts a user's events.
type EventCondition struct {
	Name  string      `yaml:"name" json:"name"`
	Where []Condition `yaml:"where,omitempty" json:"where,omitempty"`
	// Count defaults to gte: 1.
	Count *Count `yaml:"count,omitempty" json:"count,omitempty"`
	// In is the window; default all retained history.
	In duration.Duration `yaml:"in,omitempty" json:"in,omitempty"`
}

// Count bounds a number.
type Count struct {
	Eq  *int `yaml:"eq,omitempty" json:"eq,omitempty"`
	Gt  *int `yaml:"gt,omitempty" json:"gt,omitempty"`
	Gte *int `yaml:"gte,omitempty" json:"gte,omitempty"`
	Lt  *int `yaml:"lt,omitempty" json:"lt,omitempty"`
	Lte *int `yaml:"lte,omitempty" json:"lte,omitempty"`
}

// Operators lists every condition operator.
var Operators = []string{"eq", "neq", "gt", "gte", "lt", "lte", "in", "nin", "contains", "exists", "not_exists", "before", "after", "between"}

// Campaign sends webhooks to users who meet its trigger and audience.
type Campaign struct {
	TypeMeta `yaml:",inline" json:",inline"`
	Metadata Metadata     `yaml:"metadata" json:"metadata"`
	Spec     CampaignSpec `yaml:"spec" json:"spec"`
	// Status is set by the server; a status in an applied manifest is
	// ignored.
	Status *CampaignState `yaml:"status,omitempty" json:"status,omitempty"`

	src *origin
}

// GetMetadata returns the metadata.
func (c *Campaign) GetMetadata() *Metadata { return &c.Metadata }

// CampaignState is what the server keeps about a campaign beyond its spec.
type CampaignState struct {
	// TargetID is the stable positive integer sent as targetId.
	TargetID int64 `yaml:"targetId" json:"targetId"`
}

// Campaign states.
const (
	StateActive = "active"
	StatePaused = "paused"
)

// CampaignSpec is a Campaign's spec.
type CampaignSpec struct {
	Webhook      string        `yaml:"webhook" json:"webhook"`
	State        string        `yaml:"state,omitempty" json:"state,omitempty"`
	Delivery     Delivery      `yaml:"delivery" json:"delivery"`
	Active       *ActiveWindow `yaml:"active,omitempty" json:"active,omitempty"`
	Trigger      *Trigger      `yaml:"trigger,omitempty" json:"trigger,omitempty"`
	Who          *Who          `yaml:"who,omitempty" json:"who,omitempty"`
	What         What          `yaml:"what" json:"what"`
	Limits       *Limits       `yaml:"limits,omitempty" json:"limits,omitempty"`
	QuietHours   *QuietHours   `yaml:"quietHours,omitempty" json:"quietHours,omitempty"`
	ControlGroup *ControlGroup `yaml:"controlGroup,omitempty" json:"controlGroup,omitempty"`
	Goal         *Goal         `yaml:"goal,omitempty" json:"goal,omitempty"`
}

// Delivery types.
const (
	DeliveryTriggered = "triggered"
	DeliveryScheduled = "scheduled"
)

// Delivery says when a campaign sends.
type Delivery struct {
	Type      string     `yaml:"type" json:"type"`
	At        string     `yaml:"at,omitempty" json:"at,omitempty"`
	Timezone  string     `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	Recurring *Recurring `yaml:"recurring,omitempty" json:"recurring,omitempty"`
}

// Recurring is a repeating schedule.
type Recurring struct {
	Every    string `yaml:"every" json:"every"`
	Day      int    `yaml:"day,omitempty" json:"day,omitempty"`
	Weekday  string `yaml:"weekday,omitempty" json:"weekday,omitempty"`
	Time     string `yaml:"time" json:"time"`
	Timezone string `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	Start    string `yaml:"start,omitempty" json:"start,omitempty"`
	End      string `yaml:"end,omitempty" json:"end,omitempty"`
}

// ActiveWindow bounds when a campaign may fire.
type ActiveWindow struct {
	From  *time.Time `yaml:"from,omitempty" json:"from,omitempty"`
	Until *time.Time `yaml:"until,omitempty" json:"until,omitempty"`
}

// The six trigger types.
const (
	TriggerSingleAction              = "single_action"
	TriggerActions                   = "actions"
	TriggerInactionWithinTime        = "inaction_within_time"
	TriggerInaction                  = "inaction"
	TriggerDateTimeProperty          = "date_time_property"
	TriggerActionsWithUserProperties = "actions_with_user_properties"
)

// TriggerTypes lists the trigger types.
var TriggerTypes = []string{TriggerSingleAction, TriggerActions, TriggerInactionWithinTime, TriggerInaction, TriggerDateTimeProperty, TriggerActionsWithUserProperties}

// Trigger is one of the six trigger types; which fields apply depends on Type.
type Trigger struct {
	Type     string            `yaml:"type" json:"type"`
	Action   *Action           `yaml:"action,omitempty" json:"action,omitempty"`
	Actions  []Action          `yaml:"actions,omitempty" json:"actions,omitempty"`
	Inaction *Action           `yaml:"inaction,omitempty" json:"inaction,omitempty"`
	Within   duration.Duration `yaml:"within,omitempty" json:"within,omitempty"`
	Ordered  bool              `yaml:"ordered,omitempty" json:"ordered,omitempty"`
	MatchOn  []string          `yaml:"matchOn,omitempty" json:"matchOn,omitempty"`
	Lookback duration.Duration `yaml:"lookback,omitempty" json:"lookback,omitempty"`
	Property *PropertyRef      `yaml:"property,omitempty" json:"property,omitempty"`
	Offset   duration.Duration `yaml:"offset,omitempty" json:"offset,omitempty"`
	At       string            `yaml:"at,omitempty" json:"at,omitempty"`
	Timezone string            `yaml:"timezone,omitempty" json:"timezone,omitempty"`
	Profile  []Condition       `yaml:"profile,omitempty" json:"profile,omitempty"`
}

// Action is an event, optionally filtered.
type Action struct {
	Event string      `yaml:"event" json:"event"`
	Where []Condition `yaml:"where,omitempty" json:"where,omitempty"`
	// In is the look-back of a scheduled campaign's action.
	In duration.Duration `yaml:"in,omitempty" json:"in,omitempty"`
}

// PropertyRef names a date property of an event or of the profile.
type PropertyRef struct {
	Source string `yaml:"source" json:"source"`
	Event  string `yaml:"event,omitempty" json:"event,omitempty"`
	Name   string `yaml:"name" json:"name"`
}

// Who is the campaign's audience.
type Who struct {
	Segment  string     `yaml:"segment,omitempty" json:"segment,omitempty"`
	Where    *Condition `yaml:"where,omitempty" json:"where,omitempty"`
	MaxUsers int        `yaml:"maxUsers,omitempty" json:"maxUsers,omitempty"`
}

// What is the request a campaign sends. Query and KeyValues values, the
// Body and linked content URLs may be Liquid templates; ContentType is json
// (default) or text.
type What struct {
	Query         map[string]string `yaml:"query,omitempty" json:"query,omitempty"`
	KeyValues     map[string]string `yaml:"keyValues,omitempty" json:"keyValues,omitempty"`
	ContentType   string            `yaml:"contentType,omitempty" json:"contentType,omitempty"`
	Payload       Payload           `yaml:"payload" json:"payload"`
	Batch         *Batch            `yaml:"batch,omitempty" json:"batch,omitempty"`
	LinkedContent []LinkedContent   `yaml:"linkedContent,omitempty" json:"linkedContent,omitempty"`
}

// Payload is either profile variables (the CleverTap-compatible body) or a
// Liquid body, not both. Neither means profile variables [Identity].
type Payload struct {
	ProfileVariables []string `yaml:"profileVariables,omitempty" json:"profileVariables,omitempty"`
	Body             string   `yaml:"body,omitempty" json:"body,omitempty"`
}

// Batch groups profiles of one campaign into one request (profile
// variables payloads only): at most MaxProfiles (1 to 1000), waiting at most
// Linger (default 1s) to fill a batch.
type Batch struct {
	MaxProfiles int               `yaml:"maxProfiles" json:"maxProfiles"`
	Linger      duration.Duration `yaml:"linger,omitempty" json:"linger,omitempty"`
}

// LinkedContent is fetched per profile at send time and read in Liquid as
// linked.NAME. Timeout defaults to 2s, CacheTTL to no caching, OnError to
// abort (the send fails and is retried) or skip (send without it).
type LinkedContent struct {
	Name     string            `yaml:"name" json:"name"`
	URL      string            `yaml:"url" json:"url"`
	Timeout  duration.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	CacheTTL duration.Duration `yaml:"cacheTTL,omitempty" json:"cacheTTL,omitempty"`
	OnError  string            `yaml:"onError,omitempty" json:"onError,omitempty"`
}

// Limits cap what a campaign sends.
type Limits struct {
	FrequencyCap *FrequencyCap `yaml:"frequencyCap,omitempty" json:"frequencyCap,omitempty"`
	Throttle     *Throttle     `yaml:"throttle,omitempty" json:"throttle,omitempty"`
	MaxPerDay    int           `yaml:"maxPerDay,omitempty" json:"maxPerDay,omitempty"`
}

// FrequencyCap is at most Count webhooks per user per Per.
type FrequencyCap struct {
	Count int               `yaml:"count" json:"count"`
	Per   duration.Duration `yaml:"per" json:"per"`
}

// Throttle caps the campaign's send rate.
type Throttle struct {
	PerMinute int `yaml:"perMinute" json:"perMinute"`
}

// QuietHours holds (action delay, the default) or drops (discard) sends
// between From and To (HH:MM, may wrap midnight) in the user's time zone.
type QuietHours struct {
	From   string `yaml:"from" json:"from"`
	To     string `yaml:"to" json:"to"`
	Action string `yaml:"action,omitempty" json:"action,omitempty"`
}

// ControlGroup holds back Percent (0 to 100) of users to measure the
// campaign.
type ControlGroup struct {
	Percent float64 `yaml:"percent" json:"percent"`
}

// Goal is the conversion event, counted when it follows a send within
// Within (default 7d).
type Goal struct {
	Event  string            `yaml:"event" json:"event"`
	Within duration.Duration `yaml:"within,omitempty" json:"within,omitempty"`
}
