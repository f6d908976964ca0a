package timer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Keys, all prefixed by the partition of the timers topic they belong to:
//
//	t<p><id>        → TimerCommand (by id)
//	d<p><due><id>   → nothing (index by due time, big-endian ms)
//	o<p>            → next offset to consume (stored in the same batch)
func partKey(kind byte, p int32) []byte {
	k := make([]byte, 5, 64)
	k[0] = kind
	binary.BigEndian.PutUint32(k[1:], uint32(p))
	return k
}

func idKey(p int32, id string) []byte { return append(partKey('t', p), id...) }

func dueKey(p int32, due int64, id string) []byte {
	k := partKey('d', p)
	k = binary.BigEndian.AppendUint64(k, uint64(due))
	return append(k, id...)
}

func offsetKey(p int32) []byte { return partKey('o', p) }

type store struct{ db *pebble.DB }

func openStore(dir string) (*store, error) {
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		return nil, fmt.Errorf("open timer state %s: %w", dir, err)
	}
	return &store{db: db}, nil
}

// get reads a timer through r (a DB or an indexed batch).
func get(r pebble.Reader, p int32, id string) (*hookstreamv1.TimerCommand, error) {
	v, closer, err := r.Get(idKey(p, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	var c hookstreamv1.TimerCommand
	if err := proto.Unmarshal(v, &c); err != nil {
		return nil, fmt.Errorf("decode timer %q: %w", id, err)
	}
	return &c, nil
}

// put schedules (or moves) a timer in b.
func put(b *pebble.Batch, p int32, c *hookstreamv1.TimerCommand, raw []byte) error {
	if err := remove(b, p, c.Id); err != nil {
		return err
	}
	if err := b.Set(idKey(p, c.Id), raw, nil); err != nil {
		return err
	}
	return b.Set(dueKey(p, c.DueMs, c.Id), nil, nil)
}

// remove cancels a timer in b; a missing timer is fine.
func remove(b *pebble.Batch, p int32, id string) error {
	old, err := get(b, p, id)
	if err != nil || old == nil {
		return err
	}
	if err := b.Delete(dueKey(p, old.DueMs, id), nil); err != nil {
		return err
	}
	return b.Delete(idKey(p, id), nil)
}

func setOffset(b *pebble.Batch, p int32, next int64) error {
	return b.Set(offsetKey(p), binary.BigEndian.AppendUint64(nil, uint64(next)), nil)
}

// offset returns the next offset to consume for p, or -1 when the store has
// never seen p (a new disk: rebuild from the start of the topic).
func (s *store) offset(p int32) (int64, error) {
	v, closer, err := s.db.Get(offsetKey(p))
	if errors.Is(err, pebble.ErrNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	return int64(binary.BigEndian.Uint64(v)), nil
}

// due returns up to limit timers of partition p due at or before nowMs, in
// due order.
func (s *store) due(p int32, nowMs int64, limit int) ([]*hookstreamv1.TimerCommand, error) {
	lower := partKey('d', p)
	upper := dueKey(p, nowMs+1, "")
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []*hookstreamv1.TimerCommand
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		id := string(it.Key()[len(lower)+8:])
		c, err := get(s.db, p, id)
		if err != nil {
			return nil, err
		}
		if c != nil {
			out = append(out, c)
		}
	}
	return out, it.Error()
}

// pending counts the timers of partition p.
func (s *store) pending(p int32) (int64, error) {
	lower := partKey('t', p)
	upper := partKey('t', p+1)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var n int64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, it.Error()
}
