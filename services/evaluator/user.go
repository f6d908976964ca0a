package evaluator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hookstream/hookstream/pkg/condition"
	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

const dayMs = 24 * 60 * 60 * 1000

// user is one user's state while a batch is being evaluated.
//
// Its stored form is a hookstreamv1.UserState (see wire.go), decoded
// lazily: reading a user only splits the value into the profile and the
// per-event-name and per-campaign entries, by name; an entry is decoded when
// a decision reads it, and encode writes the entries no decision changed
// back as the bytes they were read as. An event concerns a few of the names
// and campaigns a user has, so most of a state is copied, not decoded.
type user struct {
	identity string
	// key and partition of the state, set by the batch that read it.
	key       []byte
	partition int32
	idKey     []byte    // identity, the key of the user's outputs
	prof      lazyProps // the profile, a JSON object
	events    []eventEntry
	campaigns []campaignEntry
	unknown   []byte // top-level fields of a newer version, kept as read
	dirty     bool
	// err is the first entry that failed to decode; the entry reads as
	// absent and the batch must fail (see Evaluator.evaluate).
	err error
}

// eventEntry is one EventStats of the state. Until it is decoded its name
// is only located in the stored bytes, not copied: a user is read for every
// event, and most of its entries are at most compared with a name.
type eventEntry struct {
	raw     []byte      // as stored
	name    span        // of raw
	st      *eventStats // decoded on first use, or new
	changed bool        // st differs from raw
}

func (e *eventEntry) is(name string) bool {
	if e.st != nil {
		return e.st.name == name
	}
	return string(e.name.of(e.raw)) == name
}

// campaignEntry is one CampaignMemory of the state, as eventEntry.
type campaignEntry struct {
	raw     []byte
	name    span
	m       *memory // decoded on first use, or new
	changed bool    // m may differ from raw
}

func (c *campaignEntry) is(name string) bool {
	if c.m != nil {
		return c.m.campaign == name
	}
	return string(c.name.of(c.raw)) == name
}

// lazyProps is a JSON object decoded on first use.
type lazyProps struct {
	raw     []byte
	m       map[string]any
	decoded bool
}

func (p *lazyProps) get() map[string]any {
	if !p.decoded {
		p.m, p.decoded = decodeObject(p.raw), true
	}
	return p.m
}

func newLazyProps(raw []byte) lazyProps { return lazyProps{raw: raw} }

// newUser returns the user whose stored state is v (nil: a new user). The
// user keeps v; the caller must not change it afterwards.
func newUser(identity string, v []byte) (*user, error) {
	u := &user{identity: identity}
	// Size the entry lists once, with room for a new event name.
	var events, campaigns int
	for it := (wireFields{b: v}); it.next(); {
		switch it.f.num {
		case 2:
			events++
		case 3:
			campaigns++
		}
	}
	if events > 0 {
		u.events = make([]eventEntry, 0, events+1)
	}
	if campaigns > 0 {
		u.campaigns = make([]campaignEntry, 0, campaigns+2)
	}
	it := wireFields{b: v}
	for it.next() {
		f := &it.f
		if f.typ != protowire.BytesType || f.num < 1 || f.num > 3 {
			u.unknown = append(u.unknown, f.raw...)
			continue
		}
		switch f.num {
		case 1:
			u.prof = newLazyProps(f.bytes)
		case 2:
			name, err := bytesField(f.bytes, 5)
			if err != nil {
				return nil, err
			}
			u.events = append(u.events, eventEntry{raw: f.bytes, name: name})
		case 3:
			name, err := bytesField(f.bytes, 4)
			if err != nil {
				return nil, err
			}
			u.campaigns = append(u.campaigns, campaignEntry{raw: f.bytes, name: name})
		}
	}
	if it.err != nil {
		return nil, it.err
	}
	return u, nil
}

// encode returns the state's stored form, or nil when there is nothing to
// remember (the key can be deleted).
func (u *user) encode() ([]byte, error) {
	if len(u.events) == 0 && len(u.campaigns) == 0 && len(u.prof.raw) <= 2 && len(u.unknown) == 0 {
		return nil, nil
	}
	size := len(u.unknown) + sizeBytesField(len(u.prof.raw))
	for i := range u.events {
		if e := &u.events[i]; e.changed {
			e.st.encodedSize = e.st.size()
			size += sizeBytesField(e.st.encodedSize)
		} else {
			size += sizeBytesField(len(e.raw))
		}
	}
	for i := range u.campaigns {
		if c := &u.campaigns[i]; c.changed {
			c.m.encodedSize = memorySize(c.m)
			size += sizeBytesField(c.m.encodedSize)
		} else {
			size += sizeBytesField(len(c.raw))
		}
	}
	b := make([]byte, 0, size)
	if len(u.prof.raw) > 0 {
		b = appendBytesField(b, 1, u.prof.raw)
	}
	for i := range u.events {
		e := &u.events[i]
		if !e.changed {
			b = appendBytesField(b, 2, e.raw)
			continue
		}
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(e.st.encodedSize))
		b = e.st.append(b)
	}
	for i := range u.campaigns {
		c := &u.campaigns[i]
		if !c.changed {
			b = appendBytesField(b, 3, c.raw)
			continue
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(c.m.encodedSize))
		b = appendMemory(b, c.m)
	}
	return append(b, u.unknown...), nil
}

// identityKey returns the identity as the key of the user's output records,
// which share it.
func (u *user) identityKey() []byte {
	if u.idKey == nil {
		u.idKey = []byte(u.identity)
	}
	return u.idKey
}

// fail records the first decoding error of an entry.
func (u *user) fail(what string, err error) {
	if u.err == nil {
		u.err = fmt.Errorf("decode %s: %w", what, err)
	}
}

// stats returns the decoded stats of an event name, or nil. Callers that
// change them must mark the entry changed (record does).
func (u *user) stats(name string) *eventStats {
	if e := u.eventEntry(name); e != nil {
		return e.st
	}
	return nil
}

func (u *user) eventEntry(name string) *eventEntry {
	for i := range u.events {
		if e := &u.events[i]; e.is(name) {
			if e.st == nil {
				st, err := decodeEventStats(e.raw, name)
				if err != nil {
					u.fail("event stats of "+name, err)
					return nil
				}
				e.st = st
			}
			return e
		}
	}
	return nil
}

func (u *user) campaignEntry(name string) *campaignEntry {
	for i := range u.campaigns {
		if c := &u.campaigns[i]; c.is(name) {
			if c.m == nil {
				m, err := decodeMemory(c.raw, name)
				if err != nil {
					u.fail("memory of campaign "+name, err)
					return nil
				}
				c.m = m
			}
			return c
		}
	}
	return nil
}

// memoryOf returns the campaign's memory for this user, or nil, for
// reading only: use updateMemory or memory to change it.
func (u *user) memoryOf(campaign string) *memory {
	if c := u.campaignEntry(campaign); c != nil {
		return c.m
	}
	return nil
}

// updateMemory returns the campaign's memory for this user to change, or
// nil when there is none.
func (u *user) updateMemory(campaign string) *memory {
	c := u.campaignEntry(campaign)
	if c == nil {
		return nil
	}
	c.changed = true
	u.dirty = true
	return c.m
}

// memory returns the campaign's memory for this user to change, creating
// it.
func (u *user) memory(campaign string) *memory {
	if m := u.updateMemory(campaign); m != nil {
		return m
	}
	m := &memory{campaign: campaign}
	if u.campaigns == nil {
		u.campaigns = make([]campaignEntry, 0, 8)
	}
	u.campaigns = append(u.campaigns, campaignEntry{m: m, changed: true})
	u.dirty = true
	return m
}

// dropEmptyMemory removes a campaign's memory when it holds nothing.
func (u *user) dropEmptyMemory(campaign string) {
	m := u.memoryOf(campaign)
	if m != nil && m.empty() {
		u.campaigns = slices.DeleteFunc(u.campaigns, func(c campaignEntry) bool { return c.is(campaign) })
		u.dirty = true
	}
}

// Profile returns the profile, decoded on first use. Callers may change it
// and must then call setProfile.
func (u *user) Profile() map[string]any { return u.prof.get() }

// profileJSON is the profile's stored form.
func (u *user) profileJSON() []byte { return u.prof.raw }

func (u *user) setProfile(p map[string]any) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	u.prof = lazyProps{raw: b, m: p, decoded: true}
	u.dirty = true
	return nil
}

// hasRecent reports whether an event with this id is among the recent
// occurrences of its name (a duplicate delivery of the same event).
func (u *user) hasRecent(name, id string) bool {
	if id == "" {
		return false
	}
	es := u.stats(name)
	if es == nil {
		return false
	}
	for i := range es.recent {
		if string(es.recent[i].id) == id {
			return true
		}
	}
	return false
}

// record adds an occurrence to the event stats. It reports false when the
// user already has MaxEventNames names and this is a new one.
func (u *user) record(cfg *Config, ev *hookstreamv1.Event, nowMs int64) bool {
	var es *eventStats
	if e := u.eventEntry(ev.Name); e != nil {
		es, e.changed = e.st, true
	} else {
		if len(u.events) >= cfg.MaxEventNames {
			return false
		}
		es = &eventStats{name: ev.Name, firstMs: ev.TsMs, lastMs: ev.TsMs}
		u.events = append(u.events, eventEntry{st: es, changed: true})
	}
	u.dirty = true
	es.firstMs = min(es.firstMs, ev.TsMs)
	es.lastMs = max(es.lastMs, ev.TsMs)
	day := int32(ev.TsMs / dayMs)
	i := sort.Search(len(es.days), func(i int) bool { return es.days[i].day >= day })
	if i < len(es.days) && es.days[i].day == day {
		es.days[i].count++
	} else {
		es.days = slices.Insert(es.days, i, dayCount{day: day, count: 1})
	}
	oldest := int32((nowMs - cfg.Retention.Std().Milliseconds()) / dayMs)
	cut := sort.Search(len(es.days), func(i int) bool { return es.days[i].day >= oldest })
	es.days = es.days[cut:]
	props := ev.PropertiesJson
	if len(props) > 4096 {
		props = nil // keep history small; filters on huge events see no properties
	}
	o := occurrence{tsMs: ev.TsMs, id: []byte(ev.Id), props: newLazyProps(props)}
	j := sort.Search(len(es.recent), func(i int) bool { return es.recent[i].tsMs > ev.TsMs })
	es.recent = slices.Insert(es.recent, j, o)
	if over := len(es.recent) - cfg.RecentPerEvent; over > 0 {
		es.recent = es.recent[over:]
	}
	return true
}

// did reports whether the user did action a (name and where) with a time in
// [from, to] (from 0: ever). Without a where, the daily counts answer (at
// day granularity at the edges); with one, the recent occurrences do.
func (u *user) did(a *manifest.Action, fromMs, toMs int64) bool {
	return u.last(a, fromMs, toMs) > 0
}

// last returns the latest time in [from, to] the user did a, or 0. Without
// a where it may return a day boundary when only daily counts know.
func (u *user) last(a *manifest.Action, fromMs, toMs int64) int64 {
	es := u.stats(a.Event)
	if es == nil || es.lastMs < fromMs || es.firstMs > toMs {
		return 0
	}
	for i := len(es.recent) - 1; i >= 0; i-- {
		o := &es.recent[i]
		if o.tsMs < fromMs || o.tsMs > toMs {
			continue
		}
		if len(a.Where) == 0 {
			return o.tsMs
		}
		if ok, _ := condition.MatchAll(a.Where, u.env(a.Where, &o.props, false)); ok {
			return o.tsMs
		}
	}
	if len(a.Where) > 0 {
		return 0
	}
	if es.lastMs >= fromMs && es.lastMs <= toMs {
		return es.lastMs
	}
	for i := len(es.days) - 1; i >= 0; i-- {
		d := es.days[i]
		start, end := int64(d.day)*dayMs, int64(d.day+1)*dayMs-1
		if end >= fromMs && start <= toMs && d.count > 0 {
			return min(end, toMs)
		}
	}
	return 0
}

// env is what conditions cs are evaluated against: props, and the profile
// when withProfile, each only if cs read it, so that neither JSON object is
// decoded for conditions that do not look at it. Callers that offer history
// add it.
func (u *user) env(cs []manifest.Condition, props *lazyProps, withProfile bool) condition.Env {
	return u.envReading(readsOf(cs), props, withProfile)
}

// envReading is env for conditions that read r (see readsOf).
func (u *user) envReading(r int, props *lazyProps, withProfile bool) condition.Env {
	var env condition.Env
	if r&readsProps != 0 && props != nil {
		env.Props = props.get()
	}
	if r&readsProfile != 0 && withProfile {
		env.Profile = u.Profile()
	}
	return env
}

// What conditions read.
const (
	readsProps = 1 << iota
	readsProfile
)

// readsOf reports what conditions read besides history, which is read
// lazily anyway.
func readsOf(cs []manifest.Condition) int {
	r := 0
	for i := range cs {
		r |= readsOfOne(&cs[i])
	}
	return r
}

func readsOfOne(c *manifest.Condition) int {
	switch {
	case c.Property != "":
		return readsProps
	case c.Profile != nil:
		return readsProfile
	case c.Event != nil:
		return 0
	case c.All != nil:
		return readsOf(c.All)
	case c.Any != nil:
		return readsOf(c.Any)
	case c.Not != nil:
		return readsOfOne(c.Not)
	}
	return 0
}

// Count answers event-history conditions from the user's state
// (condition.History).
func (u *user) Count(name string, where []manifest.Condition, since time.Time) (int, error) {
	es := u.stats(name)
	if es == nil {
		return 0, nil
	}
	sinceMs := int64(0)
	if !since.IsZero() {
		sinceMs = since.UnixMilli()
	}
	if len(where) > 0 {
		n := 0
		for i := range es.recent {
			o := &es.recent[i]
			if o.tsMs < sinceMs {
				continue
			}
			if ok, err := condition.MatchAll(where, u.env(where, &o.props, false)); err != nil {
				return 0, err
			} else if ok {
				n++
			}
		}
		return n, nil
	}
	n := 0
	first := int32(sinceMs / dayMs)
	for _, d := range es.days {
		if d.day >= first {
			n += int(d.count)
		}
	}
	return n, nil
}

// decodeObject decodes a JSON object's properties, numbers as json.Number;
// what is not an object decodes as far as encoding/json gets.
func decodeObject(b []byte) map[string]any {
	if m, ok := decodeFlatObject(b); ok {
		return m
	}
	m := map[string]any{}
	if len(b) > 0 {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		_ = dec.Decode(&m)
	}
	return m
}

// decodeFlatObject is decodeObject's fast path for the common case, an
// object whose values are numbers, plain strings, booleans or null: ok is
// false for anything else (nested values, escapes, non-ASCII text, trailing
// data, invalid JSON), which encoding/json then decodes. It returns what
// encoding/json would.
func decodeFlatObject(b []byte) (map[string]any, bool) {
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	m := make(map[string]any, 4)
	if i < len(b) && b[i] == '}' {
		return m, skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, j)
		if i == len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		if i == len(b) {
			return nil, false
		}
		var v any
		switch c := b[i]; {
		case c == '"':
			s, j, ok := plainString(b, i)
			if !ok {
				return nil, false
			}
			v, i = s, j
		case c == '-' || c >= '0' && c <= '9':
			j, ok := number(b, i)
			if !ok {
				return nil, false
			}
			v, i = json.Number(b[i:j]), j
		case bytes.HasPrefix(b[i:], []byte("true")):
			v, i = true, i+4
		case bytes.HasPrefix(b[i:], []byte("false")):
			v, i = false, i+5
		case bytes.HasPrefix(b[i:], []byte("null")):
			v, i = nil, i+4
		default:
			return nil, false
		}
		m[key] = v
		i = skipSpace(b, i)
		if i == len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return m, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a string at b[i] made of printable ASCII without
// escapes, and returns it and the index after it.
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", 0, false
		}
	}
	return "", 0, false
}

// number reads a JSON number at b[i] and returns the index after it.
func number(b []byte, i int) (int, bool) {
	digits := func(i int) int {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}
