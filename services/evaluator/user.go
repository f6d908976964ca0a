package evaluator

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/condition"
	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

const dayMs = 24 * 60 * 60 * 1000

// user is one user's state while a batch is being evaluated. The stored
// lists of event stats and campaign memories are indexed by name here, and
// written back by encode.
type user struct {
	identity  string
	st        *hookstreamv1.UserState
	events    map[string]*hookstreamv1.EventStats
	campaigns map[string]*hookstreamv1.CampaignMemory
	profile   map[string]any // decoded lazily from st.ProfileJson
	dirty     bool
}

func newUser(identity string, st *hookstreamv1.UserState) *user {
	if st == nil {
		st = &hookstreamv1.UserState{}
	}
	u := &user{identity: identity, st: st,
		events:    make(map[string]*hookstreamv1.EventStats, len(st.Events)),
		campaigns: make(map[string]*hookstreamv1.CampaignMemory, len(st.Campaigns))}
	for _, e := range st.Events {
		u.events[e.Name] = e
	}
	for _, c := range st.Campaigns {
		u.campaigns[c.Campaign] = c
	}
	return u
}

// encode returns the state's stored form, or nil when there is nothing to
// remember (the key can be deleted).
func (u *user) encode() ([]byte, error) {
	if len(u.events) == 0 && len(u.campaigns) == 0 && len(u.st.ProfileJson) <= 2 {
		return nil, nil
	}
	u.st.Events = u.st.Events[:0]
	for _, e := range u.events {
		u.st.Events = append(u.st.Events, e)
	}
	u.st.Campaigns = u.st.Campaigns[:0]
	for _, c := range u.campaigns {
		u.st.Campaigns = append(u.st.Campaigns, c)
	}
	return proto.Marshal(u.st)
}

func (u *user) Profile() map[string]any {
	if u.profile == nil {
		u.profile = decodeObject(u.st.ProfileJson)
	}
	return u.profile
}

func (u *user) setProfile(p map[string]any) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	u.profile, u.st.ProfileJson, u.dirty = p, b, true
	return nil
}

// memory returns the campaign's memory for this user, creating it.
func (u *user) memory(campaign string) *hookstreamv1.CampaignMemory {
	m := u.campaigns[campaign]
	if m == nil {
		m = &hookstreamv1.CampaignMemory{Campaign: campaign}
		u.campaigns[campaign] = m
	}
	return m
}

// dropEmptyMemory removes a campaign's memory when it holds nothing.
func (u *user) dropEmptyMemory(campaign string) {
	m := u.campaigns[campaign]
	if m != nil && len(m.Pending) == 0 && m.Exposure == nil && !slices.ContainsFunc(m.ActionMs, func(v int64) bool { return v != 0 }) {
		delete(u.campaigns, campaign)
	}
}

// hasRecent reports whether an event with this id is among the recent
// occurrences of its name (a duplicate delivery of the same event).
func (u *user) hasRecent(name, id string) bool {
	es := u.events[name]
	if es == nil || id == "" {
		return false
	}
	for _, o := range es.Recent {
		if o.Id == id {
			return true
		}
	}
	return false
}

// record adds an occurrence to the event stats. It reports false when the
// user already has MaxEventNames names and this is a new one.
func (u *user) record(cfg *Config, ev *hookstreamv1.Event, nowMs int64) bool {
	es := u.events[ev.Name]
	if es == nil {
		if len(u.events) >= cfg.MaxEventNames {
			return false
		}
		es = &hookstreamv1.EventStats{Name: ev.Name, FirstMs: ev.TsMs, LastMs: ev.TsMs}
		u.events[ev.Name] = es
	}
	u.dirty = true
	es.FirstMs = min(es.FirstMs, ev.TsMs)
	es.LastMs = max(es.LastMs, ev.TsMs)
	day := int32(ev.TsMs / dayMs)
	i := sort.Search(len(es.Days), func(i int) bool { return es.Days[i].Day >= day })
	if i < len(es.Days) && es.Days[i].Day == day {
		es.Days[i].Count++
	} else {
		es.Days = slices.Insert(es.Days, i, &hookstreamv1.DayCount{Day: day, Count: 1})
	}
	oldest := int32((nowMs - cfg.Retention.Std().Milliseconds()) / dayMs)
	cut := sort.Search(len(es.Days), func(i int) bool { return es.Days[i].Day >= oldest })
	es.Days = es.Days[cut:]
	props := ev.PropertiesJson
	if len(props) > 4096 {
		props = nil // keep history small; filters on huge events see no properties
	}
	o := &hookstreamv1.Occurrence{TsMs: ev.TsMs, Id: ev.Id, PropertiesJson: props}
	j := sort.Search(len(es.Recent), func(i int) bool { return es.Recent[i].TsMs > ev.TsMs })
	es.Recent = slices.Insert(es.Recent, j, o)
	if over := len(es.Recent) - cfg.RecentPerEvent; over > 0 {
		es.Recent = es.Recent[over:]
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
	es := u.events[a.Event]
	if es == nil || es.LastMs < fromMs || es.FirstMs > toMs {
		return 0
	}
	for i := len(es.Recent) - 1; i >= 0; i-- {
		o := es.Recent[i]
		if o.TsMs < fromMs || o.TsMs > toMs {
			continue
		}
		if len(a.Where) == 0 {
			return o.TsMs
		}
		if ok, _ := condition.MatchAll(a.Where, condition.Env{Props: decodeObject(o.PropertiesJson)}); ok {
			return o.TsMs
		}
	}
	if len(a.Where) > 0 {
		return 0
	}
	if es.LastMs >= fromMs && es.LastMs <= toMs {
		return es.LastMs
	}
	for i := len(es.Days) - 1; i >= 0; i-- {
		d := es.Days[i]
		start, end := int64(d.Day)*dayMs, int64(d.Day+1)*dayMs-1
		if end >= fromMs && start <= toMs && d.Count > 0 {
			return min(end, toMs)
		}
	}
	return 0
}

// history answers event-history conditions from the user's state.
type history struct {
	u     *user
	nowMs int64
}

func (h history) Count(name string, where []manifest.Condition, since time.Time) (int, error) {
	es := h.u.events[name]
	if es == nil {
		return 0, nil
	}
	sinceMs := int64(0)
	if !since.IsZero() {
		sinceMs = since.UnixMilli()
	}
	if len(where) > 0 {
		n := 0
		for _, o := range es.Recent {
			if o.TsMs < sinceMs {
				continue
			}
			if ok, err := condition.MatchAll(where, condition.Env{Props: decodeObject(o.PropertiesJson)}); err != nil {
				return 0, err
			} else if ok {
				n++
			}
		}
		return n, nil
	}
	n := 0
	first := int32(sinceMs / dayMs)
	for _, d := range es.Days {
		if d.Day >= first {
			n += int(d.Count)
		}
	}
	return n, nil
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
