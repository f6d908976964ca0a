package timer

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

type timerKey struct {
	p  int32
	id string
}

// apply stores a batch of records of the timers topic and their offsets in
// one Pebble batch.
//
// Records from other writers (schedule, move, cancel) always take effect.
// The timer service's own records (fired markers, clean-up tombstones,
// restatements) carry HeaderIfVersion, the version of the state they were
// written for, and take effect only if no record from another writer came
// after that version. When one does not, a newer command was written in
// between; because the compacted topic keeps only the last record of a
// key, the current state is then written again (restated) so that the last
// record of the key says what the state is. Judging only against other
// writers' records keeps a rebuild from a compacted topic right: whatever
// of the history is missing, the last records decide. See docs/timers.md.
func (s *Service) apply(ctx context.Context, recs []*kgo.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.store.writer()
	defer w.close()
	now := s.now().UnixMilli()
	dirty := map[timerKey]bool{}
	next := map[int32]int64{}
	progress := map[timerKey]bool{}
	for _, r := range recs {
		id := string(r.Key)
		var err error
		if campaign, ok := strings.CutPrefix(id, RunKeyPrefix); ok {
			err = s.applyProgress(w, r, campaign)
			progress[timerKey{r.Partition, campaign}] = true
		} else {
			err = s.applyTimer(w, r, now, dirty)
		}
		if err != nil {
			return fmt.Errorf("apply timers record at partition %d offset %d: %w", r.Partition, r.Offset, err)
		}
		if err := w.setOffset(r.Partition, r.Offset+1); err != nil {
			return err
		}
		next[r.Partition] = r.Offset + 1
	}
	if err := s.restate(ctx, w, dirty); err != nil {
		return err
	}
	counts, err := w.commit(pebble.Sync)
	if err != nil {
		return fmt.Errorf("store timers: %w", err)
	}
	for p, n := range next {
		if ps := s.parts[p]; ps != nil {
			ps.next = n
		}
	}
	for k := range progress {
		delete(s.runs.next, k)
	}
	s.committed(w, counts)
	s.poke()
	return nil
}

func (s *Service) applyTimer(w *writer, r *kgo.Record, now int64, dirty map[timerKey]bool) error {
	id := string(r.Key)
	k := timerKey{r.Partition, id}
	cur, err := w.load(r.Partition, id)
	if err != nil {
		return err
	}
	next := s.decode(r, now)
	lastCmd := int64(-1)
	if cur != nil {
		lastCmd = cur.cmd
	}
	if cond, ok := ifVersion(r); !ok {
		next.cmd = r.Offset
	} else {
		next.cmd = lastCmd
		if lastCmd > cond {
			switch {
			case !next.live() && !cur.live():
				// Both say "no timer": adopt the record, whose offset is now
				// the last of the key, so that its clean-up removes it.
			case cur.state == stateFiring:
				// The fired marker on its way will be the last record.
				return nil
			default:
				dirty[k] = true
				return nil
			}
		}
	}
	delete(dirty, k)
	delete(s.firing, k)
	return w.set(r.Partition, id, cur, next)
}

// decode returns the state a record of the timers topic sets.
func (s *Service) decode(r *kgo.Record, now int64) *entry {
	expiry := now + s.cfg.MarkerTTL.Std().Milliseconds()
	gone := &entry{state: stateGone, version: r.Offset, at: expiry}
	if r.Value == nil {
		return gone
	}
	var c hookstreamv1.TimerCommand
	err := proto.Unmarshal(r.Value, &c)
	switch {
	case err != nil || c.Id != string(r.Key):
		// The compacted topic keeps this record, not the one before it:
		// the timer is as good as cancelled, on every replica of the state.
		s.log.Error("bad timer command; treating it as a cancel", "partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "err", err)
		return gone
	case c.DestinationTopic == "" && c.Owner == OwnerFired:
		return &entry{state: stateFired, version: r.Offset, at: expiry}
	case c.DestinationTopic == "":
		s.log.Error("timer command without destination_topic; treating it as a cancel", "partition", r.Partition, "offset", r.Offset, "key", c.Id)
		return gone
	}
	return &entry{state: statePending, version: r.Offset, at: c.DueMs, raw: r.Value}
}

// applyProgress records the last run emitted for a scheduled campaign on
// the record's partition; progress only moves forward.
func (s *Service) applyProgress(w *writer, r *kgo.Record, campaign string) error {
	if r.Value == nil {
		return w.deleteLastRun(r.Partition, campaign)
	}
	var c hookstreamv1.TimerCommand
	if err := proto.Unmarshal(r.Value, &c); err != nil {
		s.log.Error("bad schedule progress record; ignoring it", "partition", r.Partition, "offset", r.Offset, "campaign", campaign, "err", err)
		return nil
	}
	old, ok, err := w.lastRun(r.Partition, campaign)
	if err != nil || (ok && old >= c.DueMs) {
		return err
	}
	return w.setLastRun(r.Partition, campaign, c.DueMs)
}

// restate writes the current state of every key whose last record is a
// conditional record that did not take effect, before the batch commits.
func (s *Service) restate(ctx context.Context, w *writer, dirty map[timerKey]bool) error {
	if len(dirty) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(dirty))
	for k := range dirty {
		cur, err := w.load(k.p, k.id)
		if err != nil {
			return err
		}
		if cur == nil || cur.state == stateFiring {
			continue
		}
		r := s.conditional(k.p, k.id, cur.version)
		if cur.state == statePending {
			if r.Value, err = w.raw(k.p, k.id, cur); err != nil {
				return err
			}
		}
		recs = append(recs, r)
	}
	if err := s.produceDirect(ctx, recs...); err != nil {
		return fmt.Errorf("restate timers: %w", err)
	}
	s.restated.Add(ctx, int64(len(recs)))
	return nil
}

// conditional returns a record for timer id on partition p of the timers
// topic that takes effect only while the timer's state comes from offset
// version. Its value is nil (a tombstone) until set.
func (s *Service) conditional(p int32, id string, version int64) *kgo.Record {
	return &kgo.Record{Topic: s.topics.Timers, Partition: p, Key: []byte(id), Headers: []kgo.RecordHeader{
		{Key: HeaderIfVersion, Value: strconv.AppendInt(nil, version, 10)},
	}}
}

func ifVersion(r *kgo.Record) (int64, bool) {
	for _, h := range r.Headers {
		if h.Key == HeaderIfVersion {
			v, err := strconv.ParseInt(string(h.Value), 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}
