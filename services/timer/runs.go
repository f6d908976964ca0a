package timer

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/schedule"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// runState is what the service knows of scheduled campaigns. Guarded by
// Service.mu.
type runState struct {
	// version is the catalog version camps was built from (-1: never).
	version int64
	// complete is false while some campaign's applied time is unknown.
	complete bool
	camps    []*scheduled
	// next caches the next run (ms; math.MaxInt64 for none) per campaign
	// and owned partition.
	next map[timerKey]int64
	// seen is the generation last logged per campaign.
	seen map[string]int64
}

func (r *runState) init() {
	r.version = -1
	r.next = map[timerKey]int64{}
	r.seen = map[string]int64{}
}

func (r *runState) forget(p int32) {
	for k := range r.next {
		if k.p == p {
			delete(r.next, k)
		}
	}
}

// scheduled is one active scheduled campaign.
type scheduled struct {
	name  string
	gen   int64
	sched *schedule.Schedule
	// applied is when this generation was applied: no run is before it.
	applied time.Time
	// from and until are spec.active (zero: open).
	from, until time.Time
}

func (c *scheduled) inWindow(t time.Time) bool {
	return (c.from.IsZero() || !t.Before(c.from)) && (c.until.IsZero() || !t.After(c.until))
}

// RunEventID is the deterministic id of the run marker of campaign's run at
// runMs on partition p of the events topic.
func RunEventID(campaign string, runMs int64, p int32) string {
	return fmt.Sprintf("run:%s:%d:%d", campaign, runMs, p)
}

// reconcile rebuilds the list of scheduled campaigns when the catalog
// changed. Call with mu held.
func (s *Service) reconcile() {
	if s.cat == nil {
		return
	}
	v := s.cat.Version()
	if v == s.runs.version && s.runs.complete {
		return
	}
	var camps []*scheduled
	complete := true
	for _, c := range s.cat.Campaigns() {
		if c.Spec.Delivery.Type != manifest.DeliveryScheduled || c.Spec.State == manifest.StatePaused {
			continue
		}
		name, gen := c.Metadata.Name, c.Metadata.Generation
		sch, err := schedule.New(c.Spec.Delivery)
		if err != nil {
			if g, ok := s.runs.seen[name]; !ok || g != gen {
				s.runs.seen[name] = gen
				s.log.Error("scheduled campaign has a schedule that cannot run; skipping it", "campaign", name, "generation", gen, "err", err)
			}
			continue
		}
		applied, ok := s.appliedAt(name, gen)
		if !ok {
			complete = false
			continue
		}
		sc := &scheduled{name: name, gen: gen, sched: sch, applied: applied}
		if a := c.Spec.Active; a != nil {
			if a.From != nil {
				sc.from = *a.From
			}
			if a.Until != nil {
				sc.until = *a.Until
			}
		}
		if g, ok := s.runs.seen[name]; !ok || g != gen {
			s.runs.seen[name] = gen
			next, ok := sch.Next(applied, time.Time{})
			s.log.Info("scheduling campaign", "campaign", name, "generation", gen, "applied_at", applied, "first_run", next, "has_run", ok)
		}
		camps = append(camps, sc)
	}
	s.runs.camps, s.runs.version, s.runs.complete = camps, v, complete
	clear(s.runs.next)
}

// emitRuns emits the run markers that are due on the ready partitions: for
// each campaign and partition, the runs after the last one emitted there
// (at most MissedRuns of the most recent), each with its intended run_ms.
// Markers are produced first, then the progress record, so that a crash in
// between emits a run again rather than skipping it.
func (s *Service) emitRuns(ctx context.Context, now time.Time) error {
	events, progress, updates, err := s.collectRuns(now)
	if err != nil || len(updates) == 0 {
		return err
	}
	if err := kafka.ProduceSync(ctx, s.runCl, events...); err != nil {
		return fmt.Errorf("emit run markers: %w", err)
	}
	if err := s.produceDirect(ctx, progress...); err != nil {
		return fmt.Errorf("write schedule progress: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.store.writer()
	defer w.close()
	for _, u := range updates {
		old, ok, err := w.lastRun(u.k.p, u.k.id)
		if err != nil {
			return err
		}
		if !ok || old < u.last {
			if err := w.setLastRun(u.k.p, u.k.id, u.last); err != nil {
				return err
			}
		}
		delete(s.runs.next, u.k)
	}
	// The progress records on the topic are the durable copy: a lost local
	// write is applied again from there.
	if _, err := w.commit(pebble.NoSync); err != nil {
		return fmt.Errorf("store schedule progress: %w", err)
	}
	for _, e := range events {
		s.log.Info("run marker emitted", "id", string(e.Headers[0].Value), "partition", e.Partition)
	}
	s.runsOut.Add(ctx, int64(len(events)))
	return nil
}

type runUpdate struct {
	k    timerKey
	last int64
}

// collectRuns builds the run markers and progress records due at now.
func (s *Service) collectRuns(now time.Time) (events, progress []*kgo.Record, updates []runUpdate, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reconcile()
	if len(s.runs.camps) == 0 {
		return nil, nil, nil, nil
	}
	nowMs := now.UnixMilli()
	for _, p := range s.readyParts() {
		for _, c := range s.runs.camps {
			k := timerKey{p, c.name}
			nx, ok := s.runs.next[k]
			last := int64(-1)
			if !ok || nx <= nowMs {
				if last, err = s.store.lastRun(p, c.name); err != nil {
					return nil, nil, nil, fmt.Errorf("read progress of campaign %s on partition %d: %w", c.name, p, err)
				}
			}
			if !ok {
				nx = math.MaxInt64
				if r, has := c.sched.Next(c.applied, msTime(last)); has {
					nx = r.UnixMilli()
				}
				s.runs.next[k] = nx
			}
			if nx > nowMs {
				continue
			}
			runs, total := c.sched.Between(c.applied, msTime(last), now, s.cfg.MissedRuns)
			if len(runs) == 0 {
				delete(s.runs.next, k)
				continue
			}
			if total > len(runs) {
				s.log.Warn("missed runs of a scheduled campaign; emitting only the most recent", "campaign", c.name, "partition", p, "missed", total, "emitting", len(runs))
			}
			for _, r := range runs {
				if !c.inWindow(r) {
					continue
				}
				rec, err := s.runMarker(c.name, r.UnixMilli(), p, nowMs)
				if err != nil {
					return nil, nil, nil, err
				}
				events = append(events, rec)
			}
			lastRun := runs[len(runs)-1].UnixMilli()
			rec, err := s.progressRecord(c.name, lastRun, p, nowMs)
			if err != nil {
				return nil, nil, nil, err
			}
			progress = append(progress, rec)
			updates = append(updates, runUpdate{k, lastRun})
		}
	}
	return events, progress, updates, nil
}

func msTime(ms int64) time.Time {
	if ms < 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// runMarker is the record that starts one run of a campaign on partition p
// of the events topic.
func (s *Service) runMarker(campaign string, runMs int64, p int32, nowMs int64) (*kgo.Record, error) {
	id := RunEventID(campaign, runMs, p)
	v, err := proto.Marshal(&hookstreamv1.Event{
		Kind: hookstreamv1.Event_KIND_SCHEDULED_RUN, Id: id, TsMs: runMs, IngestedMs: nowMs,
		Run: &hookstreamv1.ScheduledRun{Campaign: campaign, RunMs: runMs, Partition: p},
	})
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: s.topics.Events, Partition: p, Value: v, Headers: []kgo.RecordHeader{
		{Key: HeaderTimerID, Value: []byte(id)},
		{Key: HeaderTimerDueMs, Value: strconv.AppendInt(nil, runMs, 10)},
		{Key: HeaderTimerFiredMs, Value: strconv.AppendInt(nil, nowMs, 10)},
	}}, nil
}

// progressRecord is the record on partition p of the timers topic that says
// runs of campaign up to lastRunMs have been emitted there.
func (s *Service) progressRecord(campaign string, lastRunMs int64, p int32, nowMs int64) (*kgo.Record, error) {
	key := RunKeyPrefix + campaign
	v, err := proto.Marshal(&hookstreamv1.TimerCommand{Id: key, DueMs: lastRunMs, Owner: OwnerSchedule, CreatedMs: nowMs})
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: s.topics.Timers, Partition: p, Key: []byte(key), Value: v}, nil
}
