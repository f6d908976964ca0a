// Package schedule computes when a scheduled campaign runs: a one-time
// delivery (`at`) or a recurring one (every day, every week on a weekday,
// every month on a day) at a local time of day in an IANA time zone; and
// quiet hours. Every function is pure: the caller passes the times in, so
// that services can drive it from an injected clock.
//
// Local times follow the wall clock of the zone:
//   - a time that does not exist (the clock jumps over it when daylight saving
//     time starts) is taken as the moment of the jump: 02:30 on a day when
//     America/New_York goes from 02:00 to 03:00 is 03:00 EDT;
//   - a time that happens twice (the clock goes back) is taken at its first
//     occurrence, and only that one is a run;
//   - day 29, 30 or 31 of a month that is shorter is the month's last day.
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// ErrInvalid is wrapped by every error about a delivery that cannot be
// scheduled.
var ErrInvalid = errors.New("invalid schedule")

// Every is how often a recurring schedule runs.
type Every string

// The recurrences of manifest.Recurring.Every.
const (
	EveryDay   Every = "day"
	EveryWeek  Every = "week"
	EveryMonth Every = "month"
)

// Schedule is a compiled delivery schedule. It is immutable and safe for
// concurrent use.
type Schedule struct {
	loc *time.Location
	// once is the run of a one-time schedule; zero for a recurring one.
	once time.Time

	every   Every
	clock   Clock
	weekday time.Weekday
	day     int
	// start is the first instant a run may have (zero: none); endExcl the
	// first instant a run may no longer have (zero: none).
	start, endExcl time.Time
}

// New compiles d, a delivery of type scheduled. The zone is
// recurring.timezone, else delivery.timezone, else UTC. A one-time `at` is a
// local time ("2026-12-07T09:00:00") in that zone, or RFC 3339 with its own
// offset. A recurring start or end is a date ("2026-12-01": from its first
// moment, until its last), a local date-time or RFC 3339; both are
// inclusive.
func New(d manifest.Delivery) (*Schedule, error) {
	if d.Type != manifest.DeliveryScheduled {
		return nil, fmt.Errorf("%w: delivery type is %q, not %s", ErrInvalid, d.Type, manifest.DeliveryScheduled)
	}
	zone := d.Timezone
	if d.Recurring != nil && d.Recurring.Timezone != "" {
		zone = d.Recurring.Timezone
	}
	loc := time.UTC
	if zone != "" {
		var err error
		if loc, err = time.LoadLocation(zone); err != nil {
			return nil, fmt.Errorf("%w: time zone %q: %v", ErrInvalid, zone, err)
		}
	}
	s := &Schedule{loc: loc}
	switch {
	case d.At != "" && d.Recurring != nil:
		return nil, fmt.Errorf("%w: at and recurring are exclusive", ErrInvalid)
	case d.At != "":
		t, _, err := parseTime(d.At, loc)
		if err != nil {
			return nil, fmt.Errorf("%w: at: %v", ErrInvalid, err)
		}
		s.once = t.In(loc)
		return s, nil
	case d.Recurring == nil:
		return nil, fmt.Errorf("%w: needs at or recurring", ErrInvalid)
	}
	r := d.Recurring
	var err error
	if s.clock, err = ParseClock(r.Time); err != nil {
		return nil, fmt.Errorf("%w: recurring.time: %v", ErrInvalid, err)
	}
	s.every = Every(r.Every)
	switch s.every {
	case EveryDay:
	case EveryWeek:
		wd, ok := weekdays[strings.ToLower(r.Weekday)]
		if !ok {
			return nil, fmt.Errorf("%w: recurring.weekday: must be one of mon tue wed thu fri sat sun, got %q", ErrInvalid, r.Weekday)
		}
		s.weekday = wd
	case EveryMonth:
		if r.Day < 1 || r.Day > 31 {
			return nil, fmt.Errorf("%w: recurring.day: must be 1 to 31, got %d", ErrInvalid, r.Day)
		}
		s.day = r.Day
	default:
		return nil, fmt.Errorf("%w: recurring.every: must be day, week or month, got %q", ErrInvalid, r.Every)
	}
	if r.Start != "" {
		if s.start, _, err = parseTime(r.Start, loc); err != nil {
			return nil, fmt.Errorf("%w: recurring.start: %v", ErrInvalid, err)
		}
	}
	if r.End != "" {
		end, isDate, err := parseTime(r.End, loc)
		if err != nil {
			return nil, fmt.Errorf("%w: recurring.end: %v", ErrInvalid, err)
		}
		if isDate {
			y, m, dd := end.In(loc).Date()
			s.endExcl = LocalTime(y, m, dd+1, 0, 0, 0, loc)
		} else {
			s.endExcl = end.Add(time.Nanosecond)
		}
		if !s.start.IsZero() && !s.endExcl.After(s.start) {
			return nil, fmt.Errorf("%w: recurring.end is before recurring.start", ErrInvalid)
		}
	}
	return s, nil
}

// Location is the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }

// OneTime reports whether the schedule has a single run.
func (s *Schedule) OneTime() bool { return !s.once.IsZero() }

// Next returns the first run that is at or after created and strictly after
// after, and false when there is none (a one-time run already passed, or
// the end of a recurring schedule). created is when the campaign (or the
// edit that set this schedule) was applied: no run is ever for a moment
// before it. Either may be zero, meaning no bound.
func (s *Schedule) Next(created, after time.Time) (time.Time, bool) {
	lower := created
	if !after.IsZero() && !after.Before(lower) {
		lower = after.Add(time.Nanosecond)
	}
	if s.OneTime() {
		return s.once, !s.once.Before(lower)
	}
	if s.start.After(lower) {
		lower = s.start
	}
	if lower.IsZero() {
		lower = time.Unix(0, 0)
	}
	// Start a day early: the run of a local date never lies before that
	// date's first moment, but lower's local date may be one past it.
	y, m, d := lower.In(s.loc).Date()
	var run time.Time
	switch s.every {
	case EveryDay, EveryWeek:
		for i := -1; i < 9; i++ {
			date := time.Date(y, m, d+i, 12, 0, 0, 0, time.UTC)
			if s.every == EveryWeek && date.Weekday() != s.weekday {
				continue
			}
			if t := LocalTime(date.Year(), date.Month(), date.Day(), s.clock.Hour, s.clock.Minute, 0, s.loc); !t.Before(lower) {
				run = t
				break
			}
		}
	case EveryMonth:
		for i := -1; i < 3; i++ {
			first := time.Date(y, m+time.Month(i), 1, 12, 0, 0, 0, time.UTC)
			day := min(s.day, daysIn(first.Year(), first.Month()))
			if t := LocalTime(first.Year(), first.Month(), day, s.clock.Hour, s.clock.Minute, 0, s.loc); !t.Before(lower) {
				run = t
				break
			}
		}
	}
	if run.IsZero() || (!s.endExcl.IsZero() && !run.Before(s.endExcl)) {
		return time.Time{}, false
	}
	return run, true
}

// Between returns the runs r with created <= r, after < r <= until, in
// order, keeping only the last keep of them (all when keep <= 0), and
// reports how many there were in all. It looks at 100,000 runs at most, which
// bounds the work after a long downtime.
func (s *Schedule) Between(created, after, until time.Time, keep int) (runs []time.Time, total int) {
	const limit = 100_000
	for total < limit {
		r, ok := s.Next(created, after)
		if !ok || r.After(until) {
			break
		}
		total++
		runs = append(runs, r)
		if keep > 0 && len(runs) > keep {
			runs = runs[1:]
		}
		after = r
	}
	return runs, total
}

// LocalTime is the instant at which the wall clock of loc shows the given
// date and time, with the rules of the package: a time skipped by a
// daylight-saving jump is the moment of the jump, a time that happens twice
// is its first occurrence. Out-of-range values normalise as in time.Date.
func LocalTime(year int, month time.Month, day, hour, minute, sec int, loc *time.Location) time.Time {
	wall := time.Date(year, month, day, hour, minute, sec, 0, time.UTC)
	// Offsets in use around that wall time: zones change offset at most
	// once in a few weeks, so one of these is the offset before any change
	// near it and another the offset after.
	var best time.Time
	for _, probe := range []time.Duration{-36 * time.Hour, 0, 36 * time.Hour} {
		_, off := wall.Add(probe).In(loc).Zone()
		t := wall.Add(-time.Duration(off) * time.Second).In(loc)
		if sameWall(t, wall) && (best.IsZero() || t.Before(best)) {
			best = t
		}
	}
	if !best.IsZero() {
		return best
	}
	// The wall time was skipped. Read with the offset from before the jump,
	// it is an instant after the jump, in the zone period that the jump
	// starts.
	_, off := wall.Add(-36 * time.Hour).In(loc).Zone()
	t := wall.Add(-time.Duration(off) * time.Second).In(loc)
	start, _ := t.ZoneBounds()
	if start.IsZero() || start.After(t) {
		return t
	}
	return start
}

func sameWall(t, wall time.Time) bool {
	y, m, d := t.Date()
	wy, wm, wd := wall.Date()
	return y == wy && m == wm && d == wd && t.Hour() == wall.Hour() && t.Minute() == wall.Minute() && t.Second() == wall.Second()
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 12, 0, 0, 0, time.UTC).Day()
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// parseTime reads a date (2006-01-02, reported by isDate), a local
// date-time (2006-01-02T15:04:05 or 2006-01-02T15:04) in loc, or RFC 3339.
func parseTime(s string, loc *time.Location) (t time.Time, isDate bool, err error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, false, nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if w, err := time.Parse(layout, s); err == nil {
			return LocalTime(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), loc), layout == "2006-01-02", nil
		}
	}
	return time.Time{}, false, fmt.Errorf("must be a date (2006-01-02), a local time (2006-01-02T15:04:05) or RFC 3339, got %q", s)
}

// Clock is a time of day.
type Clock struct{ Hour, Minute int }

// ParseClock reads "HH:MM" (24-hour).
func ParseClock(s string) (Clock, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return Clock{}, fmt.Errorf("must be a time of day like 09:00, got %q", s)
	}
	return Clock{t.Hour(), t.Minute()}, nil
}

func (c Clock) minutes() int { return c.Hour*60 + c.Minute }

// String formats the clock as HH:MM.
func (c Clock) String() string { return fmt.Sprintf("%02d:%02d", c.Hour, c.Minute) }

// Quiet is a daily quiet period from one time of day to another in a zone,
// wrapping midnight when To is not after From ("22:00" to "08:00"). Equal
// From and To make an empty period.
type Quiet struct {
	From, To Clock
	Loc      *time.Location
}

// NewQuiet parses from and to ("HH:MM") in loc (UTC when nil).
func NewQuiet(from, to string, loc *time.Location) (Quiet, error) {
	f, err := ParseClock(from)
	if err != nil {
		return Quiet{}, fmt.Errorf("%w: quiet hours from: %v", ErrInvalid, err)
	}
	t, err := ParseClock(to)
	if err != nil {
		return Quiet{}, fmt.Errorf("%w: quiet hours to: %v", ErrInvalid, err)
	}
	if loc == nil {
		loc = time.UTC
	}
	return Quiet{From: f, To: t, Loc: loc}, nil
}

// Check reports whether t lies in a quiet period and, if so, the instant
// that period ends (when a delayed delivery may go). A period starts at
// From's instant on some date and ends at the first To after it, both
// resolved as LocalTime does, so daylight-saving days make it shorter or
// longer but never end it twice.
func (q Quiet) Check(t time.Time) (inside bool, end time.Time) {
	if q.From == q.To {
		return false, time.Time{}
	}
	wraps := q.To.minutes() <= q.From.minutes()
	y, m, d := t.In(q.Loc).Date()
	// A period containing t started on t's local date or the day before.
	for _, back := range []int{0, -1} {
		start := LocalTime(y, m, d+back, q.From.Hour, q.From.Minute, 0, q.Loc)
		endDay := d + back
		if wraps {
			endDay++
		}
		stop := LocalTime(y, m, endDay, q.To.Hour, q.To.Minute, 0, q.Loc)
		if !t.Before(start) && t.Before(stop) {
			return true, stop
		}
	}
	return false, time.Time{}
}
