package dispatcher

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// tracker follows every polled record until its outcome is durable, and
// yields, per partition, the offset after the longest completed prefix:
// records finish out of order (a slow webhook's record may finish long
// after a fast one's), but a partition's commit never passes a record that
// has not finished. Safe for concurrent use.
type tracker struct {
	mu      sync.Mutex
	cond    *sync.Cond
	parts   map[tp]*partState
	pending int // records registered and not yet completed
}

type tp struct {
	topic     string
	partition int32
}

type partState struct {
	entries   []entry // in offset order; the completed prefix is popped
	done      map[int64]bool
	commit    kgo.EpochOffset // next offset to commit (after the prefix)
	committed kgo.EpochOffset
	dirty     bool
	dropped   bool
}

type entry struct {
	offset int64
	epoch  int32
}

// ack completes one record; a record of a partition that has since been
// revoked or lost is ignored.
type ack struct {
	ps     *partState
	offset int64
}

func newTracker() *tracker {
	t := &tracker{parts: map[tp]*partState{}}
	t.cond = sync.NewCond(&t.mu)
	return t
}

// add registers polled records (in partition order) and returns one ack
// each.
func (t *tracker) add(recs []*kgo.Record) []ack {
	t.mu.Lock()
	defer t.mu.Unlock()
	acks := make([]ack, len(recs))
	for i, r := range recs {
		k := tp{r.Topic, r.Partition}
		ps := t.parts[k]
		if ps == nil {
			ps = &partState{done: map[int64]bool{}}
			t.parts[k] = ps
		}
		ps.entries = append(ps.entries, entry{r.Offset, r.LeaderEpoch})
		acks[i] = ack{ps, r.Offset}
	}
	t.pending += len(recs)
	return acks
}

// complete marks records done.
func (t *tracker) complete(acks ...ack) {
	if len(acks) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range acks {
		if a.ps == nil || a.ps.dropped || a.ps.done[a.offset] || len(a.ps.entries) == 0 || a.offset < a.ps.entries[0].offset {
			continue // revoked or lost meanwhile (drop counted it), or acked twice
		}
		t.pending--
		a.ps.done[a.offset] = true
		for len(a.ps.entries) > 0 && a.ps.done[a.ps.entries[0].offset] {
			e := a.ps.entries[0]
			delete(a.ps.done, e.offset)
			a.ps.entries = a.ps.entries[1:]
			a.ps.commit = kgo.EpochOffset{Epoch: e.epoch, Offset: e.offset + 1}
			a.ps.dirty = true
		}
	}
	t.cond.Broadcast()
}

// waitCapacity blocks while max or more records are pending, until ctx
// ends (false).
func (t *tracker) waitCapacity(ctx context.Context, max int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stop()
	for t.pending >= max && ctx.Err() == nil {
		t.cond.Wait()
	}
	return ctx.Err() == nil
}

// waitDone waits until every registered record of the given partitions is
// done, or ctx ends (false).
func (t *tracker) waitDone(ctx context.Context, parts map[string][]int32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		t.mu.Lock()
		t.cond.Broadcast()
		t.mu.Unlock()
	})
	defer stop()
	for {
		busy := false
		for topic, ps := range parts {
			for _, p := range ps {
				if s := t.parts[tp{topic, p}]; s != nil && len(s.entries) > 0 {
					busy = true
				}
			}
		}
		if !busy {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		t.cond.Wait()
	}
}

// drop forgets partitions (revoked or lost); their late acks are ignored.
func (t *tracker) drop(parts map[string][]int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic, ps := range parts {
		for _, p := range ps {
			if s := t.parts[tp{topic, p}]; s != nil {
				t.pending -= len(s.entries) - len(s.done)
				s.dropped = true
				delete(t.parts, tp{topic, p})
			}
		}
	}
	t.cond.Broadcast()
}

// committable returns the offsets that moved since the last commit.
func (t *tracker) committable() map[string]map[int32]kgo.EpochOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out map[string]map[int32]kgo.EpochOffset
	for k, ps := range t.parts {
		if !ps.dirty || ps.commit.Offset <= ps.committed.Offset {
			continue
		}
		if out == nil {
			out = map[string]map[int32]kgo.EpochOffset{}
		}
		if out[k.topic] == nil {
			out[k.topic] = map[int32]kgo.EpochOffset{}
		}
		out[k.topic][k.partition] = ps.commit
	}
	return out
}

// committed records a successful commit of offsets.
func (t *tracker) committed(offsets map[string]map[int32]kgo.EpochOffset) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for topic, ps := range offsets {
		for p, o := range ps {
			if s := t.parts[tp{topic, p}]; s != nil && s.committed.Offset < o.Offset {
				s.committed = o
				s.dirty = s.commit.Offset > o.Offset
			}
		}
	}
}

// pendingCount is the number of records not yet completed.
func (t *tracker) pendingCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

type (
	kmsgCommitReq  = kmsg.OffsetCommitRequest
	kmsgCommitResp = kmsg.OffsetCommitResponse
)

// commitErr is the first error of an offset commit.
func commitErr(resp *kmsg.OffsetCommitResponse, err error) error {
	if err != nil {
		return err
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return err
			}
		}
	}
	return nil
}
