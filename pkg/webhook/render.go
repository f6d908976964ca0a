// Package webhook renders the webhook request of CONTRACT.md section 3 and
// sends it: CleverTap-compatible profile bodies or Liquid bodies, Standard
// Webhooks signatures, and an SSRF guard on the dialled address.
package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/osteele/liquid"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// WellKnown are the profile properties of CONTRACT.md section 1; every other
// profile property is custom ProfileData.
var WellKnown = map[string]bool{"Email": true, "Identity": true, "ObjectId": true, "Push_token": true, "Phone": true, "Name": true, "Country": true, "City": true, "Timezone": true}

// Request is a rendered webhook request, before signing.
type Request struct {
	Body        []byte
	ContentType string
	// Query is appended to the webhook URL.
	Query url.Values
}

// Renderer renders requests. It caches parsed Liquid templates per campaign
// generation and is safe for concurrent use.
type Renderer struct {
	engine *liquid.Engine
	mu     sync.Mutex
	cache  map[string]*liquid.Template
}

// NewRenderer returns a renderer.
func NewRenderer() *Renderer {
	return &Renderer{engine: liquid.NewEngine(), cache: map[string]*liquid.Template{}}
}

func (r *Renderer) template(c *manifest.Campaign, slot, src string) (*liquid.Template, error) {
	key := fmt.Sprintf("%s\x00%d\x00%s\x00%s", c.Metadata.Name, c.Metadata.Generation, slot, src)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.cache[key]; ok {
		return t, nil
	}
	t, err := r.engine.ParseString(src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", slot, err)
	}
	if len(r.cache) > 10000 {
		clear(r.cache) // bound memory; templates are cheap to parse again
	}
	r.cache[key] = t
	return t, nil
}

// Personal reports whether a campaign's request differs per profile, in
// which case profiles are never batched.
func Personal(c *manifest.Campaign) bool {
	if c.Spec.What.Payload.Body != "" {
		return true
	}
	for _, m := range []map[string]string{c.Spec.What.Query, c.Spec.What.KeyValues} {
		for _, v := range m {
			if strings.Contains(v, "{{") || strings.Contains(v, "{%") {
				return true
			}
		}
	}
	return false
}

// Render builds the request for triggers of campaign c (more than one only
// when batched). linked holds linked content by name for the first profile.
func (r *Renderer) Render(c *manifest.Campaign, triggers []*hookstreamv1.Trigger, linked map[string]any, now time.Time) (Request, error) {
	if len(triggers) == 0 {
		return Request{}, fmt.Errorf("no triggers to render")
	}
	bind := Bindings(c, triggers[0], linked, now)
	kv, err := r.renderMap(c, "spec.what.keyValues", c.Spec.What.KeyValues, bind)
	if err != nil {
		return Request{}, err
	}
	bind["key_values"] = kv
	q, err := r.renderMap(c, "spec.what.query", c.Spec.What.Query, bind)
	if err != nil {
		return Request{}, err
	}
	req := Request{Query: url.Values{}}
	for k, v := range q {
		req.Query.Set(k, v)
	}
	if c.Spec.What.ContentType == "text" {
		req.ContentType = "text/plain; charset=utf-8"
	} else {
		req.ContentType = "application/json"
	}
	if body := c.Spec.What.Payload.Body; body != "" {
		t, err := r.template(c, "spec.what.payload.body", body)
		if err != nil {
			return Request{}, err
		}
		out, err := t.Render(bind)
		if err != nil {
			return Request{}, fmt.Errorf("render spec.what.payload.body: %w", err)
		}
		req.Body = out
		return req, nil
	}
	req.Body, err = ProfileBody(c, kv, triggers)
	return req, err
}

func (r *Renderer) renderMap(c *manifest.Campaign, slot string, m map[string]string, bind map[string]any) (map[string]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !strings.Contains(v, "{{") && !strings.Contains(v, "{%") {
			out[k] = v
			continue
		}
		t, err := r.template(c, slot+"."+k, v)
		if err != nil {
			return nil, err
		}
		s, err := t.RenderString(bind)
		if err != nil {
			return nil, fmt.Errorf("render %s.%s: %w", slot, k, err)
		}
		out[k] = s
	}
	return out, nil
}

// Bindings are the Liquid variables of CONTRACT.md section 3, with the
// CleverTap-style Profile and Event aliases.
func Bindings(c *manifest.Campaign, t *hookstreamv1.Trigger, linked map[string]any, now time.Time) map[string]any {
	profile := decodeObject(t.GetProfileJson())
	if _, ok := profile["Identity"]; !ok {
		profile["Identity"] = t.GetIdentity()
	}
	event := map[string]any{
		"name":       t.GetCauseEventName(),
		"ts":         time.UnixMilli(t.GetCauseEventTsMs()).UTC().Format(time.RFC3339),
		"properties": decodeObject(t.GetCauseEventPropertiesJson()),
	}
	var id int64
	if c.Status != nil {
		id = c.Status.TargetID
	}
	if linked == nil {
		linked = map[string]any{}
	}
	return map[string]any{
		"profile":  profile,
		"Profile":  profile,
		"event":    event,
		"Event":    event,
		"campaign": map[string]any{"name": c.Metadata.Name, "id": id},
		"linked":   linked,
		"now":      now.UTC().Format(time.RFC3339),
	}
}

func decodeObject(b []byte) map[string]any {
	m := map[string]any{}
	if len(b) > 0 {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		_ = dec.Decode(&m)
	}
	return m
}

// ProfileBody is the CleverTap-compatible body: targetId, campaign,
// key_values and one entry per profile holding only the chosen profile
// variables; missing values are omitted.
func ProfileBody(c *manifest.Campaign, keyValues map[string]string, triggers []*hookstreamv1.Trigger) ([]byte, error) {
	vars := c.Spec.What.Payload.ProfileVariables
	if len(vars) == 0 {
		vars = []string{"Identity"}
	}
	profiles := make([]map[string]any, 0, len(triggers))
	for _, t := range triggers {
		prof := decodeObject(t.GetProfileJson())
		p := map[string]any{}
		for _, v := range vars {
			switch v {
			case "Identity":
				p["Identity"] = t.GetIdentity()
			case "ProfileData":
				custom := map[string]any{}
				for k, val := range prof {
					if !WellKnown[k] {
						custom[k] = val
					}
				}
				if len(custom) > 0 {
					p["ProfileData"] = custom
				}
			case "Event_properties":
				if props := decodeObject(t.GetCauseEventPropertiesJson()); len(props) > 0 {
					p["Event_properties"] = props
				}
			default:
				if val, ok := prof[v]; ok && val != nil {
					p[v] = val
				}
			}
		}
		profiles = append(profiles, p)
	}
	body := struct {
		TargetID  int64             `json:"targetId"`
		Campaign  string            `json:"campaign"`
		KeyValues map[string]string `json:"key_values,omitempty"`
		Profiles  []map[string]any  `json:"profiles"`
		IsTest    bool              `json:"is_test,omitempty"`
	}{Campaign: c.Metadata.Name, KeyValues: keyValues, Profiles: profiles, IsTest: triggers[0].GetIsTest()}
	if c.Status != nil {
		body.TargetID = c.Status.TargetID
	}
	return json.Marshal(body)
}

// SortedKeys is a helper for deterministic output in tests and logs.
func SortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
