// Package webhook renders the webhook request of CONTRACT.md section 3 and
// sends it: CleverTap-compatible profile bodies or Liquid bodies, Standard
// Webhooks signatures, and an SSRF guard on the dialled address.
package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/osteele/liquid"
	"github.com/osteele/liquid/render"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// WellKnown are the profile properties of CONTRACT.md section 1; every other
// profile property is custom ProfileData.
var WellKnown = map[string]bool{"Email": true, "Identity": true, "ObjectId": true, "Push_token": true, "Phone": true, "Name": true, "Country": true, "City": true, "Timezone": true}

// ErrRenderLimit is wrapped by render errors caused by a template exceeding
// the render limits (time, loop iterations, output or value size).
var ErrRenderLimit = errors.New("template exceeds the render limits")

// ErrRenderTimeout is wrapped (beside ErrRenderLimit) by the error of a
// render that ran past its time limit. The limit is on the wall clock,
// which a starved CPU (a throttled pod, a GC pause) spends too: such a
// failure need not repeat, so the dispatcher retries it, where the other
// limits are final.
var ErrRenderTimeout = errors.New("rendering took too long")

// renderTimeoutError reads like the other limit errors and is both
// ErrRenderLimit and ErrRenderTimeout.
type renderTimeoutError struct{ msg string }

func (e renderTimeoutError) Error() string { return e.msg }
func (e renderTimeoutError) Is(target error) bool {
	return target == ErrRenderLimit || target == ErrRenderTimeout
}

// Request is a rendered webhook request, before signing.
type Request struct {
	Body        []byte
	ContentType string
	// Query is appended to the webhook URL.
	Query url.Values
}

// RenderLimits bound the work one render may do, so that a template can
// never hold a worker or exhaust memory. A template that exceeds them fails
// its delivery with an error wrapping ErrRenderLimit.
type RenderLimits struct {
	// MaxOutput is the largest rendered body, and the largest string or
	// JSON value a filter may produce, in bytes; default 1 MiB.
	MaxOutput int
	// MaxIterations is the most loop iterations and captures one render may
	// run, over all loops, nested ones included; default 100 000.
	MaxIterations int
	// MaxItems is the longest array a filter or assignment may build;
	// default 100 000.
	MaxItems int
	// Timeout bounds one request's rendering (every template of it); default 250ms.
	Timeout time.Duration
}

func (l RenderLimits) withDefaults() RenderLimits {
	if l.MaxOutput <= 0 {
		l.MaxOutput = 1 << 20
	}
	if l.MaxIterations <= 0 {
		l.MaxIterations = 100_000
	}
	if l.MaxItems <= 0 {
		l.MaxItems = 100_000
	}
	if l.Timeout <= 0 {
		l.Timeout = 250 * time.Millisecond
	}
	return l
}

// Renderer renders requests. It caches parsed Liquid templates per campaign
// generation and is safe for concurrent use.
type Renderer struct {
	engine *liquid.Engine
	limits RenderLimits
	tick   render.Node
	mu     sync.Mutex
	cache  map[string]*liquid.Template
}

// NewRenderer returns a renderer with the default RenderLimits.
func NewRenderer() *Renderer { return NewRendererWithLimits(RenderLimits{}) }

// NewRendererWithLimits returns a renderer with the given limits (zero
// fields take their defaults).
func NewRendererWithLimits(l RenderLimits) *Renderer {
	r := &Renderer{engine: liquid.NewEngine(), limits: l.withDefaults(), cache: map[string]*liquid.Template{}}
	registerFilters(r.engine, r.limits)
	r.engine.RegisterTag(tickTag, r.checkBudget)
	t, err := r.engine.ParseString("{% " + tickTag + " %}")
	if err != nil {
		panic(err) // a constant template
	}
	r.tick = t.GetRoot().(*render.SeqNode).Children[0]
	return r
}

// Limits returns the renderer's limits, defaults filled in.
func (r *Renderer) Limits() RenderLimits { return r.limits }

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
	if err := r.guard(t.GetRoot()); err != nil {
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
	return c.Spec.What.Payload.Body != "" || len(c.Spec.What.LinkedContent) > 0 ||
		hasTemplate(c.Spec.What.Query) || hasTemplate(c.Spec.What.KeyValues)
}

func isTemplate(s string) bool { return strings.Contains(s, "{{") || strings.Contains(s, "{%") }

func hasTemplate(m map[string]string) bool {
	for _, v := range m {
		if isTemplate(v) {
			return true
		}
	}
	return false
}

// Render builds the request for triggers of campaign c (more than one only
// when batched). linked holds linked content by name for the first profile.
// A trigger marked is_test yields "is_test": true in a JSON object body.
func (r *Renderer) Render(c *manifest.Campaign, triggers []*hookstreamv1.Trigger, linked map[string]any, now time.Time) (Request, error) {
	if len(triggers) == 0 {
		return Request{}, fmt.Errorf("no triggers to render")
	}
	// Bindings decode the profile and the event: only when a template
	// needs them.
	var bind map[string]any
	if c.Spec.What.Payload.Body != "" || hasTemplate(c.Spec.What.KeyValues) || hasTemplate(c.Spec.What.Query) {
		bind = r.WithBudget(Bindings(c, triggers[0], linked, now))
	}
	kv, err := r.renderMap(c, "spec.what.keyValues", c.Spec.What.KeyValues, bind)
	if err != nil {
		return Request{}, err
	}
	if bind != nil {
		bind["key_values"] = kv
	}
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
		out, err := r.RenderTemplate(c, "spec.what.payload.body", body, bind)
		if err != nil {
			return Request{}, err
		}
		req.Body = []byte(out)
		if triggers[0].GetIsTest() {
			req.Body = markTest(req.Body)
		}
		return req, nil
	}
	req.Body, err = ProfileBody(c, kv, triggers)
	return req, err
}

// markTest adds "is_test": true to a JSON object body; other bodies are
// returned as they are.
func markTest(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) < 2 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return body
	}
	var probe map[string]json.RawMessage
	if json.Unmarshal(trimmed, &probe) == nil {
		if _, ok := probe["is_test"]; ok {
			return body
		}
	}
	rest := bytes.TrimSpace(trimmed[1:])
	out := []byte(`{"is_test":true`)
	if rest[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

func (r *Renderer) renderMap(c *manifest.Campaign, slot string, m map[string]string, bind map[string]any) (map[string]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	if !hasTemplate(m) {
		return m, nil // shared, read only
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if !isTemplate(v) {
			out[k] = v
			continue
		}
		s, err := r.RenderTemplate(c, slot+"."+k, v, bind)
		if err != nil {
			return nil, err
		}
		out[k] = s
	}
	return out, nil
}

// RenderTemplate renders one Liquid template of campaign c (slot names it
// in errors and in the cache, e.g. "spec.what.linkedContent[0].url") with
// bind, within the render limits. bind should come from WithBudget so that
// the limits span every template of one request; without a budget the call
// gets its own. Panics inside the template engine are returned as errors.
func (r *Renderer) RenderTemplate(c *manifest.Campaign, slot, src string, bind map[string]any) (out string, err error) {
	t, err := r.template(c, slot, src)
	if err != nil {
		return "", err
	}
	b, ok := bind[budgetKey].(*budget)
	if !ok {
		bind = r.WithBudget(bind)
		b = bind[budgetKey].(*budget)
	}
	w := &limitWriter{max: r.limits.MaxOutput, b: b}
	defer func() {
		if p := recover(); p != nil {
			if w.err != nil {
				err = fmt.Errorf("render %s: %w", slot, w.err)
			} else {
				err = fmt.Errorf("render %s: template engine failure: %v", slot, p)
			}
		}
	}()
	if rerr := t.FRender(w, bind); rerr != nil {
		if w.err != nil {
			return "", fmt.Errorf("render %s: %w", slot, w.err)
		}
		if b.err != nil {
			return "", fmt.Errorf("render %s: %w", slot, b.err)
		}
		if strings.Contains(rerr.Error(), ErrRenderLimit.Error()) {
			// Filter errors reach us as text only.
			return "", fmt.Errorf("render %s: %w: %s", slot, ErrRenderLimit, rerr.Error())
		}
		return "", fmt.Errorf("render %s: %w", slot, rerr)
	}
	return w.buf.String(), nil
}

// WithBudget returns bind with a fresh render budget: every template
// rendered with it shares one set of limits. The deadline follows the wall
// clock (not an injected one): it bounds real work.
func (r *Renderer) WithBudget(bind map[string]any) map[string]any {
	bind[budgetKey] = &budget{limits: r.limits, deadline: time.Now().Add(r.limits.Timeout)}
	return bind
}

// Bindings are the Liquid variables of CONTRACT.md section 3, with the
// CleverTap-style Profile and Event aliases. JSON numbers become int64 or
// float64 so that comparisons and arithmetic work in templates.
func Bindings(c *manifest.Campaign, t *hookstreamv1.Trigger, linked map[string]any, now time.Time) map[string]any {
	profile := liquidValues(decodeObject(t.GetProfileJson())).(map[string]any)
	if _, ok := profile["Identity"]; !ok {
		profile["Identity"] = t.GetIdentity()
	}
	event := map[string]any{
		"name":       t.GetCauseEventName(),
		"ts":         time.UnixMilli(t.GetCauseEventTsMs()).UTC().Format(time.RFC3339),
		"properties": liquidValues(decodeObject(t.GetCauseEventPropertiesJson())),
	}
	var id int64
	if c.Status != nil {
		id = c.Status.TargetID
	}
	if linked == nil {
		linked = map[string]any{}
	}
	kv := map[string]any{}
	for k, v := range c.Spec.What.KeyValues {
		kv[k] = v
	}
	return map[string]any{
		"profile":    profile,
		"Profile":    profile,
		"event":      event,
		"Event":      event,
		"campaign":   map[string]any{"name": c.Metadata.Name, "id": id},
		"key_values": kv,
		"linked":     linked,
		"now":        now.UTC().Format(time.RFC3339),
	}
}

// liquidValues turns json.Number into int64 or float64, recursively.
func liquidValues(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v.String()
	case map[string]any:
		for k, e := range v {
			v[k] = liquidValues(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = liquidValues(e)
		}
		return v
	}
	return v
}

// DecodeJSON decodes JSON for use in Liquid bindings (numbers as int64 or
// float64).
func DecodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON value")
	}
	return liquidValues(v), nil
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
// variables, keys in sorted order; missing and null values are omitted.
// Values are copied from the trigger's JSON as they are (numbers keep
// their precision), without decoding them.
func ProfileBody(c *manifest.Campaign, keyValues map[string]string, triggers []*hookstreamv1.Trigger) ([]byte, error) {
	vars := c.Spec.What.Payload.ProfileVariables
	if len(vars) == 0 {
		vars = []string{"Identity"}
	}
	var targetID int64
	if c.Status != nil {
		targetID = c.Status.TargetID
	}
	var b bytes.Buffer
	b.Grow(128 + 96*len(triggers))
	b.WriteString(`{"targetId":`)
	b.Write(strconv.AppendInt(b.AvailableBuffer(), targetID, 10))
	b.WriteString(`,"campaign":`)
	writeString(&b, c.Metadata.Name)
	if len(keyValues) > 0 {
		b.WriteString(`,"key_values":{`)
		if len(keyValues) == 1 {
			for k, v := range keyValues {
				writeString(&b, k)
				b.WriteByte(':')
				writeString(&b, v)
			}
		} else {
			for i, k := range SortedKeys(keyValues) {
				if i > 0 {
					b.WriteByte(',')
				}
				writeString(&b, k)
				b.WriteByte(':')
				writeString(&b, keyValues[k])
			}
		}
		b.WriteByte('}')
	}
	b.WriteString(`,"profiles":[`)
	type field struct {
		key string
		raw []byte // JSON, or nil for the custom ProfileData object
		// identity: the value is str, written as a JSON string
		identity bool
		str      string
	}
	fields := make([]field, 0, len(vars))
	for i, t := range triggers {
		if i > 0 {
			b.WriteByte(',')
		}
		prof := members(t.GetProfileJson())
		fields = fields[:0]
		for _, v := range vars {
			switch v {
			case "Identity":
				fields = append(fields, field{key: "Identity", str: t.GetIdentity(), identity: true})
			case "ProfileData":
				for _, m := range prof {
					if !WellKnown[m.key] {
						fields = append(fields, field{key: "ProfileData"})
						break
					}
				}
			case "Event_properties":
				props := bytes.TrimSpace(t.GetCauseEventPropertiesJson())
				if len(props) > 2 && props[0] == '{' {
					fields = append(fields, field{key: "Event_properties", raw: props})
				}
			default:
				if raw, ok := prof.get(v); ok && !isNull(raw) {
					fields = append(fields, field{key: v, raw: raw})
				}
			}
		}
		slices.SortFunc(fields, func(a, b field) int { return strings.Compare(a.key, b.key) })
		b.WriteByte('{')
		for j, f := range fields {
			if j > 0 {
				b.WriteByte(',')
			}
			writeString(&b, f.key)
			b.WriteByte(':')
			if f.identity {
				writeString(&b, f.str)
				continue
			}
			if f.raw != nil {
				if err := json.Compact(&b, f.raw); err != nil {
					return nil, fmt.Errorf("%s of trigger %s: %w", f.key, t.GetId(), err)
				}
				continue
			}
			b.WriteByte('{')
			n := 0
			for _, m := range prof.sorted() {
				if WellKnown[m.key] {
					continue
				}
				if n > 0 {
					b.WriteByte(',')
				}
				n++
				writeString(&b, m.key)
				b.WriteByte(':')
				if err := json.Compact(&b, m.raw); err != nil {
					return nil, fmt.Errorf("profile %s of trigger %s: %w", m.key, t.GetId(), err)
				}
			}
			b.WriteByte('}')
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	if triggers[0].GetIsTest() {
		b.WriteString(`,"is_test":true`)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// member is one member of a JSON object, its value undecoded.
type member struct {
	key string
	raw []byte
}

type memberList []member

// members splits a JSON object into its members, undecoded; empty or
// invalid input is an empty object, as for the Liquid bindings. Values
// are only delimited here; the ones used are validated by json.Compact.
// Profiles have few properties: a list is cheaper than a map.
func members(b []byte) memberList {
	var out memberList
	if err := eachMember(b, func(k string, v []byte) { out = append(out, member{k, v}) }); err != nil {
		return nil
	}
	return out
}

// get returns the value of key; the last one wins, as in encoding/json.
func (l memberList) get(key string) ([]byte, bool) {
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].key == key {
			return l[i].raw, true
		}
	}
	return nil, false
}

// sorted returns the members by name, each name once (the last value).
func (l memberList) sorted() memberList {
	out := make(memberList, 0, len(l))
	for i := len(l) - 1; i >= 0; i-- {
		if _, dup := out.get(l[i].key); !dup {
			out = append(out, l[i])
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].key < out[b].key })
	return out
}

var errBadJSON = errors.New("not a JSON object")

// eachMember calls fn with every member of the JSON object b: its name
// (unescaped) and the bytes of its value.
func eachMember(b []byte, fn func(string, []byte)) error {
	i := skipSpace(b, 0)
	if i == len(b) {
		return nil
	}
	if b[i] != '{' {
		return errBadJSON
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errBadJSON
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := string(b[i+1 : end-1])
		if bytes.IndexByte(b[i:end], '\\') >= 0 {
			if err := json.Unmarshal(b[i:end], &key); err != nil {
				return err
			}
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errBadJSON
		}
		start := skipSpace(b, i+1)
		if end, err = skipValue(b, start); err != nil {
			return err
		}
		fn(key, b[start:end])
		i = skipSpace(b, end)
		if i >= len(b) {
			return errBadJSON
		}
		if b[i] == '}' {
			return nil
		}
		if b[i] != ',' {
			return errBadJSON
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errBadJSON
}

// skipValue returns the index after the value starting at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errBadJSON
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := skipString(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errBadJSON
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return 0, errBadJSON
	}
	return j, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// writeString writes s as a JSON string, escaped as encoding/json does.
func writeString(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			b.Write(q)
			return
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
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

// The render guard. osteele/liquid has no way to interrupt a render, so the
// parsed tree of every template is checked and instrumented once, before
// it is cached: {% include %} (which reads files from the dispatcher's
// disk) is refused, and a budget tag is put first in the body of every
// loop and capture. The tag counts iterations, checks the deadline and the
// size of every assigned value, and fails the render when a limit is
// passed. The budget lives in the bindings under a key no template can
// name.
const (
	tickTag   = "hookstream_render_budget"
	budgetKey = "\x00budget"
)

type budget struct {
	limits   RenderLimits
	deadline time.Time
	steps    int
	err      error
}

func (b *budget) fail(format string, args ...any) error {
	b.err = fmt.Errorf("%w: "+format, append([]any{ErrRenderLimit}, args...)...)
	return b.err
}

func (b *budget) failTimeout() error {
	b.err = renderTimeoutError{fmt.Sprintf("%s: rendering took longer than %s", ErrRenderLimit, b.limits.Timeout)}
	return b.err
}

func (b *budget) step() error {
	b.steps++
	if b.steps > b.limits.MaxIterations {
		return b.fail("more than %d loop iterations", b.limits.MaxIterations)
	}
	if b.steps%64 == 1 && time.Now().After(b.deadline) {
		return b.failTimeout()
	}
	return nil
}

func (r *Renderer) checkBudget(ctx render.Context) (string, error) {
	bind := ctx.Bindings()
	b, ok := bind[budgetKey].(*budget)
	if !ok {
		return "", nil
	}
	if err := b.step(); err != nil {
		return "", err
	}
	for name, v := range bind {
		switch v := v.(type) {
		case string:
			if len(v) > b.limits.MaxOutput {
				return "", b.fail("variable %s is larger than %d bytes", name, b.limits.MaxOutput)
			}
		case []any:
			if len(v) > b.limits.MaxItems {
				return "", b.fail("variable %s has more than %d items", name, b.limits.MaxItems)
			}
		}
	}
	return "", nil
}

func (r *Renderer) guard(n render.Node) error {
	switch n := n.(type) {
	case *render.SeqNode:
		for _, c := range n.Children {
			if err := r.guard(c); err != nil {
				return err
			}
		}
	case *render.TagNode:
		if n.Name == "include" {
			return errors.New("the include tag is not supported")
		}
	case *render.BlockNode:
		for _, c := range n.Body {
			if err := r.guard(c); err != nil {
				return err
			}
		}
		for _, c := range n.Clauses {
			if err := r.guard(c); err != nil {
				return err
			}
		}
		switch n.Name {
		case "for", "tablerow", "capture":
			n.Body = append([]render.Node{r.tick}, n.Body...)
		}
	}
	return nil
}

// limitWriter collects the output up to max bytes and checks the deadline.
type limitWriter struct {
	buf bytes.Buffer
	max int
	b   *budget
	err error
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.buf.Len()+len(p) > w.max {
		w.err = w.b.fail("output larger than %d bytes", w.max)
		return 0, w.err
	}
	if time.Now().After(w.b.deadline) {
		w.err = w.b.failTimeout()
		return 0, w.err
	}
	return w.buf.Write(p)
}

var _ io.Writer = (*limitWriter)(nil)
