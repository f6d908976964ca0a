package dispatcher

import (
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

func TestQuietHours(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	night := func(action string) *manifest.Campaign {
		return &manifest.Campaign{Spec: manifest.CampaignSpec{QuietHours: &manifest.QuietHours{From: "22:00", To: "08:00", Action: action}}}
	}
	day := &manifest.Campaign{Spec: manifest.CampaignSpec{QuietHours: &manifest.QuietHours{From: "12:00", To: "14:00"}}}
	for _, tc := range []struct {
		name    string
		c       *manifest.Campaign
		profile string
		now     string
		want    quietAction
		until   string
	}{
		{"before the window, UTC", night(""), `{}`, "2026-11-27T21:59:00Z", quietNone, ""},
		{"inside, before midnight", night(""), `{}`, "2026-11-27T22:00:00Z", quietDelay, "2026-11-28T08:00:00Z"},
		{"inside, after midnight", night(""), `{}`, "2026-11-28T07:59:00Z", quietDelay, "2026-11-28T08:00:00Z"},
		{"the end is outside", night(""), `{}`, "2026-11-28T08:00:00Z", quietNone, ""},
		{"discard", night("discard"), `{}`, "2026-11-27T23:00:00Z", quietDiscard, ""},
		{"the user's zone: 23:00 UTC is 08:00 in Tokyo", night(""), `{"Timezone":"Asia/Tokyo"}`, "2026-11-27T23:00:00Z", quietNone, ""},
		{"the user's zone: 14:00 UTC is 23:00 in Tokyo", night(""), `{"Timezone":"Asia/Tokyo"}`, "2026-11-27T14:00:00Z", quietDelay, "2026-11-27T23:00:00Z"},
		{"an unknown zone falls back to the campaign's", night(""), `{"Timezone":"Mars/Olympus"}`, "2026-11-27T23:00:00Z", quietDelay, "2026-11-28T08:00:00Z"},
		{"a window within the day", day, `{"Timezone":"America/New_York"}`, "2026-11-27T17:30:00Z", quietDelay, "2026-11-27T19:00:00Z"},
		// New York leaves daylight saving time on 2026-11-01: the end is 08:00 local, 13:00 UTC.
		{"across a DST change", night(""), `{"Timezone":"America/New_York"}`, "2026-11-01T05:30:00Z", quietDelay, "2026-11-01T13:00:00Z"},
		{"no quiet hours", &manifest.Campaign{}, `{}`, "2026-11-27T23:00:00Z", quietNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := quietHoursOf(tc.c, []byte(tc.profile), utc(tc.now))
			if q.action != tc.want {
				t.Fatalf("action %d, want %d", q.action, tc.want)
			}
			if tc.until != "" && !q.until.Equal(utc(tc.until)) {
				t.Fatalf("until %s, want %s", q.until.UTC(), tc.until)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b := breaker{threshold: 2, base: 10 * time.Second}
	step := func(what string, ok bool, wantState breakerState) {
		t.Helper()
		b.record(ok, now)
		if b.state != wantState {
			t.Fatalf("%s: state %s, want %s", what, b.state, wantState)
		}
	}
	step("one failure", false, breakerClosed)
	step("a success resets", true, breakerClosed)
	step("failure 1", false, breakerClosed)
	step("failure 2 opens", false, breakerOpen)
	if ok, wait := b.allow(now.Add(time.Second)); ok || wait != 9*time.Second {
		t.Fatalf("open: allow %v wait %s", ok, wait)
	}
	now = now.Add(10 * time.Second)
	if ok, _ := b.allow(now); !ok || b.state != breakerHalfOpen {
		t.Fatalf("after the cool-down one probe goes: %v %s", ok, b.state)
	}
	if ok, _ := b.allow(now); ok {
		t.Fatal("a second request went while the probe is out")
	}
	step("the probe fails: open again, longer", false, breakerOpen)
	if b.cooldown != 20*time.Second {
		t.Fatalf("cool-down %s, want doubled to 20s", b.cooldown)
	}
	now = now.Add(20 * time.Second)
	if ok, _ := b.allow(now); !ok {
		t.Fatal("no probe after the longer cool-down")
	}
	step("the probe succeeds", true, breakerClosed)
	if ok, _ := b.allow(now); !ok {
		t.Fatal("closed circuit refuses")
	}
}

func TestStageOfTimerIDs(t *testing.T) {
	for id, want := range map[string]stage{
		"lease:msg_1:1700000000000":      stageAdmit,
		"quiet:msg_1:1700000000000":      stageThrottle,
		"throttle:msg_1:1700000000000":   stageQueue,
		"rate:msg_1:1700000000000":       stageSend,
		"retry:msg_1:1700000000000:2":    stageRate,
		"hold:msg_1:1:1700000000000":     stageRate,
		"retry:msg_1:17:2~1700000005000": stageRate,
		"":                               stageRate, // a replay
	} {
		if got := stageOf(id); got != want {
			t.Errorf("stageOf(%q) = %d, want %d", id, got, want)
		}
	}
}

func TestBatchIDIsADigestOfTheTriggerIDs(t *testing.T) {
	a := []*hookstreamv1.Trigger{{Id: "t1"}, {Id: "t2"}, {Id: "t3"}}
	b := []*hookstreamv1.Trigger{{Id: "t3"}, {Id: "t1"}, {Id: "t2"}}
	c := []*hookstreamv1.Trigger{{Id: "t1"}, {Id: "t2"}}
	if batchID(a) != batchID(b) || batchID(a) == batchID(c) || !strings.HasPrefix(batchID(a), "msg_") || len(batchID(a)) != 36 {
		t.Fatalf("%s %s %s", batchID(a), batchID(b), batchID(c))
	}
}

func TestIntervals(t *testing.T) {
	for _, tc := range []struct {
		n      float64
		period time.Duration
		want   int64
	}{
		{600, time.Minute, 100_000}, {3, time.Second, 333_334}, {0, time.Second, 0}, {0.25, time.Second, 4_000_000},
	} {
		if got := intervalUs(tc.n, tc.period); got != tc.want {
			t.Errorf("intervalUs(%v, %s) = %d, want %d", tc.n, tc.period, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"short dedupe", func(c *Config) { c.DedupeTTL.Set("10m") }, "dedupe_ttl"}, //nolint:errcheck
		{"short lease", func(c *Config) { c.LeaseTTL.Set("1s") }, "lease_ttl"},     //nolint:errcheck
		{"local delay", func(c *Config) { c.LocalDelay.Set("2m") }, "local_delay"}, //nolint:errcheck
		{"bad network", func(c *Config) { c.AllowedNetworks = []string{"10.1.2.3/99"} }, "allowed_networks"},
		{"an address is a network", func(c *Config) { c.AllowedNetworks = []string{"10.1.2.3"} }, ""},
		{"no concurrency", func(c *Config) { c.Concurrency = 0 }, "concurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			c.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
			tc.edit(&c)
			err := c.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
