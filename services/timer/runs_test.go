package timer

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/catalog/catalogtest"
	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

func dailyAt(clock, zone string) manifest.Delivery {
	return manifest.Delivery{Type: manifest.DeliveryScheduled, Recurring: &manifest.Recurring{Every: "day", Time: clock, Timezone: zone}}
}

// expectRuns waits for exactly the run markers of campaign at runs (one per
// partition each), checks every field, then checks that nothing else comes.
func (h *harness) expectRuns(campaign string, runs ...time.Time) {
	h.t.Helper()
	type got struct {
		runMs int64
		p     int32
	}
	var want, have []got
	for _, r := range runs {
		for p := range int32(h.cfg.Partitions) {
			want = append(want, got{r.UnixMilli(), p})
		}
	}
	for range want {
		select {
		case r := <-h.events:
			var ev hookstreamv1.Event
			if err := proto.Unmarshal(r.Value, &ev); err != nil {
				h.t.Fatal(err)
			}
			run := ev.GetRun()
			if ev.Kind != hookstreamv1.Event_KIND_SCHEDULED_RUN || run.GetCampaign() != campaign || run.GetPartition() != r.Partition ||
				ev.Id != RunEventID(campaign, run.GetRunMs(), r.Partition) || ev.Identity != "" || ev.TsMs != run.GetRunMs() {
				h.t.Fatalf("run marker %v on partition %d", &ev, r.Partition)
			}
			if hdr := headers(r); hdr[HeaderTimerID] != ev.Id || hdr[HeaderTimerDueMs] != strconv.FormatInt(run.GetRunMs(), 10) {
				h.t.Fatalf("run marker headers %v", hdr)
			}
			have = append(have, got{run.GetRunMs(), r.Partition})
		case <-time.After(20 * time.Second):
			h.t.Fatalf("got run markers %v, want %v", have, want)
		}
	}
	cmp := func(a, b got) int {
		if a.runMs != b.runMs {
			return int(a.runMs - b.runMs)
		}
		return int(a.p - b.p)
	}
	slices.SortFunc(want, cmp)
	slices.SortFunc(have, cmp)
	if !slices.Equal(want, have) {
		h.t.Fatalf("got run markers %v, want %v", have, want)
	}
	select {
	case r := <-h.events:
		var ev hookstreamv1.Event
		_ = proto.Unmarshal(r.Value, &ev)
		h.t.Fatalf("unexpected event %v", &ev)
	case <-time.After(500 * time.Millisecond):
	}
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// Each run is one marker on every partition of the events topic, emitted
// once: not again after a restart, nor after a restart on a new disk (the
// progress is on the compacted topic).
func TestRunMarkersFanOutOncePerPartition(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(utc("2026-11-27T08:00:00Z"))
	h.cat.put("daily", dailyAt("09:00", "America/New_York"), "", h.clock.Now())
	dir := t.TempDir()
	in := h.start(dir)
	h.expectRuns("daily")
	h.clock.Set(utc("2026-11-27T13:59:59Z"))
	h.expectRuns("daily")
	h.clock.Set(utc("2026-11-27T14:00:00Z")) // 09:00 in New York
	h.expectRuns("daily", utc("2026-11-27T14:00:00Z"))
	h.clock.Set(utc("2026-11-27T14:05:00Z"))
	h.expectRuns("daily")

	in.stop(t)
	in = h.start(dir)
	h.expectRuns("daily")
	in.stop(t)
	h.start(t.TempDir())
	h.expectRuns("daily")

	h.clock.Set(utc("2026-11-28T14:00:00Z"))
	h.expectRuns("daily", utc("2026-11-28T14:00:00Z"))
}

// After a downtime, the most recent missed runs are emitted with their
// intended times.
func TestMissedRunsAfterDowntime(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(utc("2026-11-27T08:00:00Z"))
	h.cat.put("daily", dailyAt("09:00", "UTC"), "", h.clock.Now())
	dir := t.TempDir()
	in := h.start(dir)
	h.clock.Set(utc("2026-11-27T09:00:00Z"))
	h.expectRuns("daily", utc("2026-11-27T09:00:00Z"))
	in.stop(t)

	h.clock.Set(utc("2026-11-30T10:00:00Z")) // three runs missed
	in = h.start(dir)
	h.expectRuns("daily", utc("2026-11-30T09:00:00Z"))
	in.stop(t)

	h.clock.Set(utc("2026-12-03T10:00:00Z"))
	cfg := h.config()
	cfg.DataDir = dir
	cfg.MissedRuns = 2
	h.startWith(cfg)
	h.expectRuns("daily", utc("2026-12-02T09:00:00Z"), utc("2026-12-03T09:00:00Z"))
}

// The schedule follows the catalog: no run before the campaign was applied,
// none while paused (and no catch-up after resuming), edits move it, a
// delete stops it; a one-time campaign runs once.
func TestRunsFollowTheCatalog(t *testing.T) {
	h := newHarness(t)
	h.clock.Set(utc("2026-11-27T09:30:00Z"))
	h.cat.put("c", dailyAt("09:00", "UTC"), "", h.clock.Now())
	h.start(t.TempDir())
	h.expectRuns("c") // today's 09:00 is before the campaign was applied

	h.clock.Set(utc("2026-11-28T09:00:00Z"))
	h.expectRuns("c", utc("2026-11-28T09:00:00Z"))

	h.clock.Set(utc("2026-11-28T10:00:00Z"))
	h.cat.put("c", dailyAt("09:00", "UTC"), manifest.StatePaused, h.clock.Now())
	h.clock.Set(utc("2026-11-29T09:00:00Z"))
	h.expectRuns("c")
	h.clock.Set(utc("2026-11-29T12:00:00Z"))
	h.cat.put("c", dailyAt("09:00", "UTC"), manifest.StateActive, h.clock.Now())
	h.expectRuns("c") // the paused run is not caught up

	h.clock.Set(utc("2026-11-30T09:00:00Z"))
	h.expectRuns("c", utc("2026-11-30T09:00:00Z"))

	h.clock.Set(utc("2026-11-30T09:30:00Z"))
	h.cat.put("c", dailyAt("10:00", "UTC"), "", h.clock.Now())
	h.clock.Set(utc("2026-11-30T10:00:00Z"))
	h.expectRuns("c", utc("2026-11-30T10:00:00Z"))

	h.clock.Set(utc("2026-11-30T11:00:00Z"))
	h.cat.del("c")
	h.clock.Set(utc("2026-12-01T10:00:00Z"))
	h.expectRuns("c")

	h.cat.put("once", manifest.Delivery{Type: manifest.DeliveryScheduled, At: "2026-12-01T18:00:00", Timezone: "Asia/Kolkata"}, "", h.clock.Now())
	h.clock.Set(utc("2026-12-01T12:29:59Z"))
	h.expectRuns("once")
	h.clock.Set(utc("2026-12-01T12:30:00Z"))
	h.expectRuns("once", utc("2026-12-01T12:30:00Z"))
	h.clock.Set(utc("2026-12-08T12:30:00Z"))
	h.expectRuns("once")
}

// With the real catalog and the campaigns-topic reader: a one-time campaign
// applied now runs at its time, on the wall clock.
func TestRunMarkersFromTheRealCatalog(t *testing.T) {
	h := newHarness(t)
	at := time.Now().Add(3 * time.Second).Truncate(time.Second)
	cat := catalogtest.New(t, h.cfg, fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: hook}
spec: {url: "https://example.com/hook"}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: soon}
spec:
  webhook: hook
  delivery: {type: scheduled, at: %q}
  who: {where: {property: Country, op: eq, value: Canada}}
  what: {payload: {profileVariables: [Identity]}}
`, at.UTC().Format(time.RFC3339)))
	cfg := h.config()
	cfg.DataDir = t.TempDir()
	s, err := New(cfg, h.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), noop.NewMeterProvider().Meter("t"), cat, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := s.Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.StopAsync(); _ = svc.AwaitTerminated(context.Background()) })
	h.expectRuns("soon", at)
}
