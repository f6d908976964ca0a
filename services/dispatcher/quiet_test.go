package dispatcher

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/redisconn/redistest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// quietDSTCases are nights when the clocks change. New York goes from 02:00
// EST to 03:00 EDT on 2026-03-08 and from 02:00 EDT back to 01:00 EST on
// 2026-11-01; Lord Howe Island shifts by 30 minutes, from 02:00 (+10:30) to
// 02:30 (+11) on 2026-10-04 and from 02:00 (+11) back to 01:30 (+10:30) on
// 2026-04-05. due is when a delayed delivery goes ("" when it goes at once).
var quietDSTCases = []struct {
	name     string
	from, to string
	zone     string
	now      string
	due      string
}{
	{"spring forward: the end skipped by the jump is the jump, seen from the evening", "22:00", "02:30", "America/New_York", "2026-03-07T23:00:00-05:00", "2026-03-08T03:00:00-04:00"},
	{"spring forward: the end skipped by the jump is the jump, at 01:30", "22:00", "02:30", "America/New_York", "2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00"},
	{"spring forward: the end skipped by the jump is the jump, at 01:59", "22:00", "02:30", "America/New_York", "2026-03-08T01:59:00-05:00", "2026-03-08T03:00:00-04:00"},
	{"spring forward: after the jump the window is over", "22:00", "02:30", "America/New_York", "2026-03-08T03:00:30-04:00", ""},
	{"spring forward: the night is an hour shorter", "22:00", "08:00", "America/New_York", "2026-03-07T23:00:00-05:00", "2026-03-08T08:00:00-04:00"},
	{"fall back: the first pass of the repeated hour is quiet", "00:00", "01:30", "America/New_York", "2026-11-01T01:10:00-04:00", "2026-11-01T01:30:00-04:00"},
	{"fall back: the second pass of the repeated hour is not quiet again", "00:00", "01:30", "America/New_York", "2026-11-01T01:10:00-05:00", ""},
	{"fall back: a window that ended in the first pass stays ended", "22:00", "01:30", "America/New_York", "2026-11-01T01:15:00-05:00", ""},
	{"fall back: the night is an hour longer", "22:00", "08:00", "America/New_York", "2026-11-01T01:30:00-05:00", "2026-11-01T08:00:00-05:00"},
	{"half-hour jump: the end skipped by the jump is the jump", "22:00", "02:15", "Australia/Lord_Howe", "2026-10-04T01:59:00+10:30", "2026-10-04T02:30:00+11:00"},
	{"half-hour jump: seen from the evening", "22:00", "02:15", "Australia/Lord_Howe", "2026-10-03T23:00:00+10:30", "2026-10-04T02:30:00+11:00"},
	{"half-hour fall back: the first pass is quiet", "00:00", "01:45", "Australia/Lord_Howe", "2026-04-05T01:40:00+11:00", "2026-04-05T01:45:00+11:00"},
	{"half-hour fall back: the second pass is not quiet again", "00:00", "01:45", "Australia/Lord_Howe", "2026-04-05T01:40:00+10:30", ""},
	{"half-hour fall back: the night is half an hour longer", "22:00", "07:00", "Australia/Lord_Howe", "2026-04-05T01:40:00+10:30", "2026-04-05T07:00:00+10:30"},
}

func mustRFC3339(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestQuietHoursAcrossDST: on the nights the clocks change, a delivery in
// quiet hours is held until the window's end on the user's wall clock,
// once: neither before it ends nor a day late, and the repeated hour is not
// quiet twice.
func TestQuietHoursAcrossDST(t *testing.T) {
	for _, tc := range quietDSTCases {
		t.Run(tc.name, func(t *testing.T) {
			c := &manifest.Campaign{Spec: manifest.CampaignSpec{QuietHours: &manifest.QuietHours{From: tc.from, To: tc.to}}}
			q := quietHoursOf(c, []byte(`{"Timezone":"`+tc.zone+`"}`), mustRFC3339(t, tc.now))
			if tc.due == "" {
				if q.action != quietNone {
					t.Fatalf("held until %s, want sent at once", q.until.In(q.until.Location()))
				}
				return
			}
			if q.action != quietDelay || !q.until.Equal(mustRFC3339(t, tc.due)) {
				t.Fatalf("action %d until %s, want held until %s", q.action, q.until, tc.due)
			}
		})
	}
}

// TestQuietHoursAcrossDSTHeldTimer runs the same nights through a
// dispatcher: the timer it writes for a held delivery is due at the end of
// the quiet hours, and a delivery outside them reaches the receiver.
func TestQuietHoursAcrossDSTHeldTimer(t *testing.T) {
	rcv := newReceiver(t, 200)
	manifests := webhookYAML("ok", rcv.URL, "")
	campaign := map[[2]string]string{}
	for _, tc := range quietDSTCases {
		w := [2]string{tc.from, tc.to}
		if _, ok := campaign[w]; !ok {
			campaign[w] = fmt.Sprintf("quiet-%d", len(campaign))
			manifests += campaignYAML(campaign[w], "ok", fmt.Sprintf("quietHours: {from: %q, to: %q}", tc.from, tc.to))
		}
	}
	// No timer service: the held deliveries' timers stay as written while
	// the clock jumps between the nights. One backend: the window is
	// decided before Redis (TestDispatcher runs quiet hours on both).
	e := newEnv(t, redistest.Miniredis, envOptions{noTimer: true, manifest: manifests})
	for i, tc := range quietDSTCases {
		id := fmt.Sprintf("dst-%02d", i)
		e.clock.Advance(mustRFC3339(t, tc.now).Sub(e.clock.Now()))
		e.send(withProfile(trig(id, campaign[[2]string{tc.from, tc.to}], "u-"+id), `{"Timezone":"`+tc.zone+`"}`))
		if tc.due == "" {
			e.eventually(id+" delivered", func() bool {
				for _, d := range e.of(campaign[[2]string{tc.from, tc.to}]) {
					if d.WebhookId == id && d.Status == hookstreamv1.Delivery_STATUS_DELIVERED {
						return true
					}
				}
				return false
			})
			if held := e.timersFor("quiet:" + id + ":"); len(held) > 0 {
				t.Errorf("%s: held until %s, want sent at once", tc.name, time.UnixMilli(held[0].DueMs).UTC())
			}
			continue
		}
		e.eventually(id+" held", func() bool { return len(e.timersFor("quiet:"+id+":")) > 0 })
		held := e.timersFor("quiet:" + id + ":")[0]
		if due := time.UnixMilli(held.DueMs); !due.Equal(mustRFC3339(t, tc.due)) {
			t.Errorf("%s: held until %s, want %s", tc.name, due.UTC(), mustRFC3339(t, tc.due).UTC())
		}
	}
	var sent []string
	for _, id := range rcv.ids() {
		if strings.HasPrefix(id, "dst-") {
			sent = append(sent, id)
		}
	}
	want := 0
	for _, tc := range quietDSTCases {
		if tc.due == "" {
			want++
		}
	}
	if len(sent) != want {
		t.Errorf("the receiver got %v, want the %d deliveries outside quiet hours", sent, want)
	}
}
