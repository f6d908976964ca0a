package schedule

import (
	"errors"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	if s == "" {
		return time.Time{}
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("bad test time %q: %v", s, err)
	}
	return v
}

func daily(clock, zone string) manifest.Delivery {
	return manifest.Delivery{Type: "scheduled", Recurring: &manifest.Recurring{Every: "day", Time: clock, Timezone: zone}}
}

func weekly(weekday, clock, zone string) manifest.Delivery {
	return manifest.Delivery{Type: "scheduled", Recurring: &manifest.Recurring{Every: "week", Weekday: weekday, Time: clock, Timezone: zone}}
}

func monthly(day int, clock, zone string) manifest.Delivery {
	return manifest.Delivery{Type: "scheduled", Recurring: &manifest.Recurring{Every: "month", Day: day, Time: clock, Timezone: zone}}
}

func once(at, zone string) manifest.Delivery {
	return manifest.Delivery{Type: "scheduled", At: at, Timezone: zone}
}

func TestNext(t *testing.T) {
	tests := []struct {
		name     string
		delivery manifest.Delivery
		created  string // RFC 3339
		after    string // RFC 3339, "" for none
		want     string // RFC 3339 in the zone's offset, "" for no run
	}{
		// Every day.
		{"daily later the same day", daily("09:00", "America/New_York"), "2026-11-27T08:00:00-05:00", "", "2026-11-27T09:00:00-05:00"},
		{"daily created after today's time", daily("09:00", "America/New_York"), "2026-11-27T09:30:00-05:00", "", "2026-11-28T09:00:00-05:00"},
		{"daily created exactly at the time", daily("09:00", "America/New_York"), "2026-11-27T09:00:00-05:00", "", "2026-11-27T09:00:00-05:00"},
		{"daily after a run is the next day", daily("09:00", "America/New_York"), "2026-01-01T00:00:00-05:00", "2026-11-27T09:00:00-05:00", "2026-11-28T09:00:00-05:00"},
		{"daily default zone is UTC", daily("09:00", ""), "2026-11-27T10:00:00Z", "", "2026-11-28T09:00:00Z"},
		{"daily delivery zone when recurring has none", manifest.Delivery{Type: "scheduled", Timezone: "Asia/Kolkata", Recurring: &manifest.Recurring{Every: "day", Time: "09:00"}}, "2026-11-27T00:00:00Z", "", "2026-11-27T09:00:00+05:30"},

		// Daylight saving time starts: the skipped time runs at the jump.
		{"new york 02:30 skipped fires at 03:00", daily("02:30", "America/New_York"), "2026-03-07T12:00:00-05:00", "", "2026-03-08T03:00:00-04:00"},
		{"new york 02:30 next day is normal", daily("02:30", "America/New_York"), "2026-03-07T12:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"},
		{"new york 02:00 exactly at the jump", daily("02:00", "America/New_York"), "2026-03-07T12:00:00-05:00", "", "2026-03-08T03:00:00-04:00"},
		{"london 01:30 skipped fires at 02:00 BST", daily("01:30", "Europe/London"), "2026-03-28T12:00:00Z", "", "2026-03-29T02:00:00+01:00"},
		{"lord howe 02:15 skipped fires at 02:30", daily("02:15", "Australia/Lord_Howe"), "2026-10-03T12:00:00+10:30", "", "2026-10-04T02:30:00+11:00"},

		// Daylight saving time ends: the repeated time runs once, first.
		{"new york 01:30 twice fires at the first", daily("01:30", "America/New_York"), "2026-10-31T12:00:00-04:00", "", "2026-11-01T01:30:00-04:00"},
		{"new york 01:30 twice does not fire at the second", daily("01:30", "America/New_York"), "2026-10-31T12:00:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"},
		{"created between the two 01:30s waits a day", daily("01:30", "America/New_York"), "2026-11-01T01:45:00-04:00", "", "2026-11-02T01:30:00-05:00"},
		{"london 01:30 twice fires at the first", daily("01:30", "Europe/London"), "2026-10-24T12:00:00+01:00", "", "2026-10-25T01:30:00+01:00"},
		{"lord howe 01:45 twice fires at the first", daily("01:45", "Australia/Lord_Howe"), "2026-04-04T12:00:00+11:00", "", "2026-04-05T01:45:00+11:00"},
		{"lord howe 01:45 next day", daily("01:45", "Australia/Lord_Howe"), "2026-04-04T12:00:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"},

		// Every week on a weekday.
		{"weekly next monday", weekly("mon", "09:00", "America/New_York"), "2026-11-25T10:00:00-05:00", "", "2026-11-30T09:00:00-05:00"},
		{"weekly today when still ahead", weekly("fri", "09:00", "America/New_York"), "2026-11-27T08:59:00-05:00", "", "2026-11-27T09:00:00-05:00"},
		{"weekly a week later when passed", weekly("fri", "09:00", "America/New_York"), "2026-11-27T09:01:00-05:00", "", "2026-12-04T09:00:00-05:00"},
		{"weekly across dst start keeps local time", weekly("sun", "09:00", "Europe/London"), "2026-03-22T10:00:00Z", "", "2026-03-29T09:00:00+01:00"},
		{"weekly sunday in the skipped hour", weekly("sun", "02:30", "America/New_York"), "2026-03-02T00:00:00-05:00", "", "2026-03-08T03:00:00-04:00"},
		{"weekly kolkata weekday is local", weekly("sat", "01:00", "Asia/Kolkata"), "2026-11-27T19:00:00Z", "", "2026-11-28T01:00:00+05:30"},

		// Every month on a day; short months fire on their last day.
		{"monthly day 7", monthly(7, "09:00", "Asia/Kolkata"), "2026-11-27T00:00:00Z", "", "2026-12-07T09:00:00+05:30"},
		{"monthly day 31 in november is the 30th", monthly(31, "09:00", "Asia/Kolkata"), "2026-11-01T00:00:00Z", "", "2026-11-30T09:00:00+05:30"},
		{"monthly day 31 after the 30th run is the 31st", monthly(31, "09:00", "Asia/Kolkata"), "2026-11-01T00:00:00Z", "2026-11-30T09:00:00+05:30", "2026-12-31T09:00:00+05:30"},
		{"monthly never before creation", monthly(31, "09:00", "Asia/Kolkata"), "2026-11-30T10:00:00+05:30", "", "2026-12-31T09:00:00+05:30"},
		{"monthly day 31 in february of a leap year", monthly(31, "09:00", "Europe/London"), "2028-02-01T00:00:00Z", "", "2028-02-29T09:00:00Z"},
		{"monthly day 29 in february of a common year", monthly(29, "09:00", "Europe/London"), "2027-02-01T00:00:00Z", "", "2027-02-28T09:00:00Z"},
		{"monthly day 30 in february of a leap year", monthly(30, "09:00", "Europe/London"), "2028-02-01T00:00:00Z", "", "2028-02-29T09:00:00Z"},
		{"monthly day 29 in february of a leap year", monthly(29, "09:00", "America/New_York"), "2028-02-01T00:00:00Z", "2028-01-29T09:00:00-05:00", "2028-02-29T09:00:00-05:00"},
		{"monthly day 30 in april", monthly(30, "23:30", "Australia/Lord_Howe"), "2026-04-01T00:00:00Z", "", "2026-04-30T23:30:00+10:30"},
		{"monthly rolls over the year", monthly(15, "09:00", "America/New_York"), "2026-12-16T00:00:00Z", "", "2027-01-15T09:00:00-05:00"},
		{"monthly on a dst start day", monthly(8, "02:30", "America/New_York"), "2026-03-01T00:00:00Z", "", "2026-03-08T03:00:00-04:00"},

		// One time.
		{"at local time in a zone", once("2026-12-07T09:00:00", "Asia/Kolkata"), "2026-11-27T00:00:00Z", "", "2026-12-07T09:00:00+05:30"},
		{"at rfc3339 ignores the zone", once("2026-12-07T09:00:00Z", "Asia/Kolkata"), "2026-11-27T00:00:00Z", "", "2026-12-07T14:30:00+05:30"},
		{"at before creation never runs", once("2026-12-07T09:00:00", "Asia/Kolkata"), "2026-12-08T00:00:00Z", "", ""},
		{"at already run", once("2026-12-07T09:00:00", "Asia/Kolkata"), "2026-11-27T00:00:00Z", "2026-12-07T09:00:00+05:30", ""},
		{"at in the skipped hour", once("2026-03-08T02:30:00", "America/New_York"), "2026-03-01T00:00:00Z", "", "2026-03-08T03:00:00-04:00"},
		{"at in the repeated hour is the first", once("2026-11-01T01:30:00", "America/New_York"), "2026-10-01T00:00:00Z", "", "2026-11-01T01:30:00-04:00"},
		{"at without zone is utc", once("2026-12-07T09:00:00", ""), "2026-11-27T00:00:00Z", "", "2026-12-07T09:00:00Z"},

		// Start and end.
		{"start date bounds the first run", withBounds(daily("09:00", "Asia/Kolkata"), "2026-12-01", ""), "2026-11-27T00:00:00Z", "", "2026-12-01T09:00:00+05:30"},
		{"end date includes its day", withBounds(daily("09:00", "Asia/Kolkata"), "2026-12-01", "2026-12-03"), "2026-11-27T00:00:00Z", "2026-12-02T09:00:00+05:30", "2026-12-03T09:00:00+05:30"},
		{"after the end there is none", withBounds(daily("09:00", "Asia/Kolkata"), "2026-12-01", "2026-12-03"), "2026-11-27T00:00:00Z", "2026-12-03T09:00:00+05:30", ""},
		{"end as an instant is inclusive", withBounds(daily("09:00", "UTC"), "", "2026-12-03T09:00:00Z"), "2026-12-03T00:00:00Z", "", "2026-12-03T09:00:00Z"},
		{"start as a local time", withBounds(daily("09:00", "America/New_York"), "2026-12-01T10:00:00", ""), "2026-11-27T00:00:00Z", "", "2026-12-02T09:00:00-05:00"},
		{"creation after start wins", withBounds(weekly("mon", "09:00", "UTC"), "2026-01-01", ""), "2026-11-27T00:00:00Z", "", "2026-11-30T09:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.delivery)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := s.Next(mustTime(t, tc.created), mustTime(t, tc.after))
			if tc.want == "" {
				if ok {
					t.Fatalf("Next = %v, want no run", got)
				}
				return
			}
			want := mustTime(t, tc.want)
			if !ok || !got.Equal(want) {
				t.Fatalf("Next = %v (%v), want %v", got, ok, want)
			}
			if _, off := got.Zone(); func() bool { _, w := want.Zone(); return off != w }() {
				t.Fatalf("Next = %v, want it in the zone's offset as %v", got, want)
			}
		})
	}
}

func withBounds(d manifest.Delivery, start, end string) manifest.Delivery {
	r := *d.Recurring
	r.Start, r.End = start, end
	d.Recurring = &r
	return d
}

// A whole year of daily runs in every zone: one run per local date, always
// at the local time (or the jump), strictly increasing.
func TestDailyRunsOnePerLocalDate(t *testing.T) {
	for _, zone := range []string{"America/New_York", "Europe/London", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"} {
		for _, clock := range []string{"00:00", "01:30", "02:00", "02:15", "02:30", "09:00", "23:59"} {
			t.Run(zone+"/"+clock, func(t *testing.T) {
				s, err := New(daily(clock, zone))
				if err != nil {
					t.Fatal(err)
				}
				loc := s.Location()
				c, _ := ParseClock(clock)
				created := time.Date(2026, 1, 1, 0, 0, 0, 0, loc)
				var prev time.Time
				seen := map[string]bool{}
				for r, ok := s.Next(created, time.Time{}); ok && r.Year() < 2027; r, ok = s.Next(created, r) {
					if !r.After(prev) {
						t.Fatalf("run %v not after %v", r, prev)
					}
					date := r.In(loc).Format("2006-01-02")
					if seen[date] {
						t.Fatalf("two runs on %s", date)
					}
					seen[date] = true
					local := r.In(loc)
					if local.Hour()*60+local.Minute() < c.minutes() {
						t.Fatalf("run %v is before %s local", local, clock)
					}
					if local.Hour()*60+local.Minute() != c.minutes() {
						// Only at a jump: the instant before does not show a
						// later time of the same day.
						if _, end := r.Add(-time.Nanosecond).ZoneBounds(); !end.Equal(r) {
							t.Fatalf("run %v is not at %s and not at a jump", local, clock)
						}
					}
					prev = r
				}
				if len(seen) != 365 {
					t.Fatalf("%d runs in 2026, want 365", len(seen))
				}
			})
		}
	}
}

func TestBetweenKeepsTheMostRecentMissedRuns(t *testing.T) {
	s, err := New(daily("09:00", "Europe/London"))
	if err != nil {
		t.Fatal(err)
	}
	created := mustTime(t, "2026-11-01T00:00:00Z")
	last := mustTime(t, "2026-11-20T09:00:00Z")
	now := mustTime(t, "2026-11-27T10:00:00Z")
	tests := []struct {
		keep      int
		wantFirst string
		wantLen   int
	}{
		{1, "2026-11-27T09:00:00Z", 1},
		{3, "2026-11-25T09:00:00Z", 3},
		{0, "2026-11-21T09:00:00Z", 7},
	}
	for _, tc := range tests {
		runs, total := s.Between(created, last, now, tc.keep)
		if total != 7 || len(runs) != tc.wantLen || !runs[0].Equal(mustTime(t, tc.wantFirst)) || !runs[len(runs)-1].Equal(mustTime(t, "2026-11-27T09:00:00Z")) {
			t.Fatalf("keep %d: runs %v total %d", tc.keep, runs, total)
		}
	}
	if runs, total := s.Between(created, now, now.Add(time.Hour), 1); total != 0 || len(runs) != 0 {
		t.Fatalf("no run due: got %v %d", runs, total)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		d    manifest.Delivery
	}{
		{"triggered", manifest.Delivery{Type: "triggered"}},
		{"nothing", manifest.Delivery{Type: "scheduled"}},
		{"both", manifest.Delivery{Type: "scheduled", At: "2026-12-07T09:00:00", Recurring: &manifest.Recurring{Every: "day", Time: "09:00"}}},
		{"bad at", once("next tuesday", "")},
		{"bad zone", daily("09:00", "Mars/Olympus")},
		{"bad time", daily("9am", "UTC")},
		{"bad weekday", weekly("funday", "09:00", "UTC")},
		{"bad day", monthly(32, "09:00", "UTC")},
		{"bad every", manifest.Delivery{Type: "scheduled", Recurring: &manifest.Recurring{Every: "year", Time: "09:00"}}},
		{"end before start", withBounds(daily("09:00", "UTC"), "2026-12-03", "2026-12-01")},
		{"bad start", withBounds(daily("09:00", "UTC"), "soon", "")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.d); !errors.Is(err, ErrInvalid) {
				t.Fatalf("New = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestLocalTime(t *testing.T) {
	tests := []struct {
		zone            string
		y               int
		m               time.Month
		d, hour, minute int
		want            string
	}{
		{"America/New_York", 2026, 3, 8, 2, 30, "2026-03-08T03:00:00-04:00"},
		{"America/New_York", 2026, 11, 1, 1, 30, "2026-11-01T01:30:00-04:00"},
		{"Europe/London", 2026, 3, 29, 1, 0, "2026-03-29T02:00:00+01:00"},
		{"Europe/London", 2026, 10, 25, 1, 59, "2026-10-25T01:59:00+01:00"},
		{"Australia/Lord_Howe", 2026, 10, 4, 2, 0, "2026-10-04T02:30:00+11:00"},
		{"Australia/Lord_Howe", 2026, 10, 4, 2, 29, "2026-10-04T02:30:00+11:00"},
		{"Australia/Lord_Howe", 2026, 4, 5, 1, 30, "2026-04-05T01:30:00+11:00"},
		{"Asia/Kolkata", 2026, 12, 31, 23, 59, "2026-12-31T23:59:00+05:30"},
		{"Asia/Kolkata", 2026, 2, 29, 9, 0, "2026-03-01T09:00:00+05:30"}, // normalised as time.Date
	}
	for _, tc := range tests {
		loc, err := time.LoadLocation(tc.zone)
		if err != nil {
			t.Fatal(err)
		}
		got := LocalTime(tc.y, tc.m, tc.d, tc.hour, tc.minute, 0, loc)
		if want := mustTime(t, tc.want); !got.Equal(want) {
			t.Errorf("%s %d-%02d-%02d %02d:%02d = %v, want %v", tc.zone, tc.y, tc.m, tc.d, tc.hour, tc.minute, got, want)
		}
	}
}

func TestQuiet(t *testing.T) {
	tests := []struct {
		name     string
		from, to string
		zone     string
		at       string
		inside   bool
		end      string
	}{
		{"wrapping, late evening", "22:00", "08:00", "UTC", "2026-11-27T23:00:00Z", true, "2026-11-28T08:00:00Z"},
		{"wrapping, at the start", "22:00", "08:00", "UTC", "2026-11-27T22:00:00Z", true, "2026-11-28T08:00:00Z"},
		{"wrapping, early morning", "22:00", "08:00", "UTC", "2026-11-27T07:59:00Z", true, "2026-11-27T08:00:00Z"},
		{"wrapping, at the end", "22:00", "08:00", "UTC", "2026-11-27T08:00:00Z", false, ""},
		{"wrapping, daytime", "22:00", "08:00", "UTC", "2026-11-27T12:00:00Z", false, ""},
		{"same day, inside", "09:00", "17:00", "Asia/Kolkata", "2026-11-27T10:00:00+05:30", true, "2026-11-27T17:00:00+05:30"},
		{"same day, before", "09:00", "17:00", "Asia/Kolkata", "2026-11-27T08:59:00+05:30", false, ""},
		{"same day, after", "09:00", "17:00", "Asia/Kolkata", "2026-11-27T17:00:00+05:30", false, ""},
		{"empty period", "08:00", "08:00", "UTC", "2026-11-27T08:00:00Z", false, ""},
		{"in the user's zone", "22:00", "08:00", "Asia/Kolkata", "2026-11-27T17:00:00Z", true, "2026-11-28T08:00:00+05:30"},
		{"night of dst start is an hour shorter", "22:00", "08:00", "America/New_York", "2026-03-07T23:00:00-05:00", true, "2026-03-08T08:00:00-04:00"},
		{"end in the skipped hour is the jump", "22:00", "02:30", "America/New_York", "2026-03-08T01:59:00-05:00", true, "2026-03-08T03:00:00-04:00"},
		{"after the skipped end", "22:00", "02:30", "America/New_York", "2026-03-08T03:00:00-04:00", false, ""},
		{"repeated hour, first pass inside", "00:00", "01:30", "America/New_York", "2026-11-01T01:10:00-04:00", true, "2026-11-01T01:30:00-04:00"},
		{"repeated hour, second pass is not quiet again", "00:00", "01:30", "America/New_York", "2026-11-01T01:10:00-05:00", false, ""},
		{"lord howe half-hour shift", "22:00", "02:15", "Australia/Lord_Howe", "2026-10-04T01:59:00+10:30", true, "2026-10-04T02:30:00+11:00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			loc, err := time.LoadLocation(tc.zone)
			if err != nil {
				t.Fatal(err)
			}
			q, err := NewQuiet(tc.from, tc.to, loc)
			if err != nil {
				t.Fatal(err)
			}
			inside, end := q.Check(mustTime(t, tc.at))
			if inside != tc.inside {
				t.Fatalf("inside = %v, want %v", inside, tc.inside)
			}
			if tc.inside && !end.Equal(mustTime(t, tc.end)) {
				t.Fatalf("end = %v, want %v", end, tc.end)
			}
		})
	}
	if _, err := NewQuiet("10pm", "08:00", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("NewQuiet(10pm) = %v, want ErrInvalid", err)
	}
}
