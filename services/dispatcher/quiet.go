package dispatcher

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/schedule"
)

type quietAction int

const (
	quietNone quietAction = iota
	quietDelay
	quietDiscard
)

// quiet is the quiet-hours decision for one trigger.
type quiet struct {
	action quietAction
	// until is the end of the quiet hours (for a delay).
	until time.Time
}

var zones sync.Map // name → *time.Location (LoadLocation reads tzdata each time)

func loadZone(name string) *time.Location {
	if name == "" {
		return nil
	}
	if l, ok := zones.Load(name); ok {
		return l.(*time.Location)
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil
	}
	zones.Store(name, l)
	return l
}

// campaignZone is the campaign's own time zone: its delivery's, its
// recurring schedule's or its trigger's, else UTC.
func campaignZone(c *manifest.Campaign) *time.Location {
	names := []string{c.Spec.Delivery.Timezone}
	if r := c.Spec.Delivery.Recurring; r != nil {
		names = append(names, r.Timezone)
	}
	if t := c.Spec.Trigger; t != nil {
		names = append(names, t.Timezone)
	}
	for _, n := range names {
		if l := loadZone(n); l != nil {
			return l
		}
	}
	return time.UTC
}

// quietHoursOf decides quiet hours for a user with profile (JSON) at now:
// the window [from, to) is read in the profile's Timezone (an IANA name),
// else in the campaign's zone; a window whose from is after its to spans
// midnight. Inside it, the campaign's action applies (delay, the default,
// until to; or discard). The window follows the zone's wall clock as
// schedule.Quiet does: an end that daylight saving time skips is the moment
// of the jump, and an hour that happens twice is quiet once.
func quietHoursOf(c *manifest.Campaign, profile []byte, now time.Time) quiet {
	q := c.Spec.QuietHours
	if q == nil {
		return quiet{}
	}
	loc := campaignZone(c)
	if len(profile) > 0 {
		var p struct {
			Timezone string `json:"Timezone"`
		}
		if json.Unmarshal(profile, &p) == nil {
			if l := loadZone(p.Timezone); l != nil {
				loc = l
			}
		}
	}
	w, err := schedule.NewQuiet(q.From, q.To, loc)
	if err != nil {
		return quiet{} // validation rejects such a campaign
	}
	inside, end := w.Check(now)
	if !inside {
		return quiet{}
	}
	if q.Action == "discard" {
		return quiet{action: quietDiscard}
	}
	return quiet{action: quietDelay, until: end}
}
