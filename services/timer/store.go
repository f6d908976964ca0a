package timer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

// Keys, all but the format key prefixed by the partition of the timers
// topic they belong to:
//
//	t<p><id>          → entry: the state of one timer id
//	d<p><due><id>     → entry and TimerCommand: pending timers by due time
//	                    (big-endian ms), read by firing without a lookup
//	x<p><expiry><id>  → entry: fired markers and gone states by expiry
//	r<p><campaign>    → last run emitted for a scheduled campaign (ms)
//	n<p>              → number of pending timers (kept in every batch)
//	o<p>              → next offset to consume (kept in every batch)
//	v                 → layout version
//
// Every change to a partition's state is one batch together with its offset,
// so the store is always the state after some prefix of the partition.
func partKey(kind byte, p int32) []byte {
	k := make([]byte, 5, 64)
	k[0] = kind
	binary.BigEndian.PutUint32(k[1:], uint32(p))
	return k
}

func idKey(p int32, id string) []byte { return append(partKey('t', p), id...) }

func timeKey(kind byte, p int32, ms int64, id string) []byte {
	k := binary.BigEndian.AppendUint64(partKey(kind, p), uint64(ms))
	return append(k, id...)
}

func runKey(p int32, campaign string) []byte { return append(partKey('r', p), campaign...) }

var formatKey = []byte("v")

// formatVersion changes whenever the layout does; a store of another version
// is emptied and rebuilt from the topic.
const formatVersion = "4"

// state is what the timer service knows about one timer id.
type state byte

const (
	// statePending: scheduled, indexed by due time.
	statePending state = 'T'
	// stateFiring: its payload and its fired marker are produced, the
	// marker is not applied yet; it is not fired again.
	stateFiring state = 'f'
	// stateFired: the fired marker is applied; after the marker TTL a
	// tombstone removes it from the compacted topic.
	stateFired state = 'F'
	// stateGone: cancelled or cleaned up; remembered for the marker TTL so
	// that a late conditional record cannot bring it back, then forgotten.
	stateGone state = 'G'
)

// entry is the stored state of one timer id.
type entry struct {
	state state
	// version is the offset of the record the state comes from.
	version int64
	// cmd is the offset of the last unconditional record of the id (a
	// command from another writer), -1 when none was seen: conditional
	// records are judged against it.
	cmd int64
	// at is the due time (pending, firing) or the expiry (fired, gone), ms.
	at int64
	// raw is the TimerCommand of a pending timer; it is stored as the value
	// of its due-index key, not in the entry, and is set only by a scan
	// of the due index or by decode.
	raw []byte
}

func (e *entry) live() bool { return e.state == statePending || e.state == stateFiring }

const entryHeader = 25

func (e *entry) encode() []byte {
	b := make([]byte, entryHeader)
	b[0] = byte(e.state)
	binary.BigEndian.PutUint64(b[1:], uint64(e.version))
	binary.BigEndian.PutUint64(b[9:], uint64(e.cmd))
	binary.BigEndian.PutUint64(b[17:], uint64(e.at))
	return b
}

func decodeEntry(v []byte) (*entry, error) {
	if len(v) != entryHeader {
		return nil, fmt.Errorf("timer entry of %d bytes", len(v))
	}
	return &entry{
		state:   state(v[0]),
		version: int64(binary.BigEndian.Uint64(v[1:])),
		cmd:     int64(binary.BigEndian.Uint64(v[9:])),
		at:      int64(binary.BigEndian.Uint64(v[17:])),
	}, nil
}

// index is the secondary key of a state: by due time or by expiry.
func (e *entry) index(p int32, id string) []byte {
	switch e.state {
	case statePending:
		return timeKey('d', p, e.at, id)
	case stateFired, stateGone:
		return timeKey('x', p, e.at, id)
	}
	return nil
}

type store struct{ db *pebble.DB }

// blockCacheBytes bounds Pebble's block cache: with the memtables it is most
// of the service's memory, whatever the number of timers.
const blockCacheBytes = 64 << 20

// memTableBytes is the size of one memtable (at most two are kept): recent
// timers, the ones most often moved, cancelled and fired, are read from it
// without touching a table.
const memTableBytes = 32 << 20

// pebbleLogger sends Pebble's logs to slog: its info (WAL replay,
// compactions) at debug.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }

func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
	os.Exit(1)
}

// pebbleOptions are the options of the timer state; the caller unrefs
// Cache once the DB is open.
func pebbleOptions(log *slog.Logger) *pebble.Options {
	opts := &pebble.Options{Logger: pebbleLogger{log.With("lib", "pebble")}, Cache: pebble.NewCache(blockCacheBytes), MemTableSize: memTableBytes}
	// Scheduling a new timer looks up an id that does not exist yet: bloom
	// filters answer that without reading a block.
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return opts
}

// openStore opens the Pebble state in dir. A store of another layout is
// emptied (reported by reset): every partition is then rebuilt from the
// topic, as on a new disk.
func openStore(dir string, log *slog.Logger) (s *store, reset bool, err error) {
	opts := pebbleOptions(log)
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, false, fmt.Errorf("open timer state %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	v, closer, err := db.Get(formatKey)
	switch {
	case err == nil:
		ok := string(v) == formatVersion
		closer.Close()
		if ok {
			return &store{db: db}, false, nil
		}
		reset = true
	case errors.Is(err, pebble.ErrNotFound):
		it, err := db.NewIter(nil)
		if err != nil {
			return nil, false, err
		}
		reset = it.First()
		if err := it.Close(); err != nil {
			return nil, false, err
		}
	default:
		return nil, false, fmt.Errorf("read timer state format: %w", err)
	}
	b := db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange([]byte{0}, []byte{0xff}, nil); err != nil {
		return nil, false, err
	}
	if err := b.Set(formatKey, []byte(formatVersion), nil); err != nil {
		return nil, false, err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return nil, false, fmt.Errorf("reset timer state: %w", err)
	}
	return &store{db: db}, reset, nil
}

func getUint(r pebble.Reader, key []byte) (int64, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("key %q: value of %d bytes", key, len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), true, nil
}

func setUint(b *pebble.Batch, key []byte, n int64) error {
	return b.Set(key, binary.BigEndian.AppendUint64(nil, uint64(n)), nil)
}

// offset returns the next offset to consume for p, or -1 when the store has
// never seen p (a new disk: rebuild from the start of the topic).
func (s *store) offset(p int32) (int64, error) {
	n, ok, err := getUint(s.db, partKey('o', p))
	if err != nil || !ok {
		return -1, err
	}
	return n, nil
}

// pending returns the number of pending timers of p.
func (s *store) pending(p int32) (int64, error) {
	n, _, err := getUint(s.db, partKey('n', p))
	return n, err
}

// lastRun returns the last run emitted for campaign on p, or -1.
func (s *store) lastRun(p int32, campaign string) (int64, error) {
	n, ok, err := getUint(s.db, runKey(p, campaign))
	if err != nil || !ok {
		return -1, err
	}
	return n, nil
}

func load(r pebble.Reader, p int32, id string) (*entry, error) {
	v, closer, err := r.Get(idKey(p, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer closer.Close()
	e, err := decodeEntry(v)
	if err != nil {
		return nil, fmt.Errorf("timer %q: %w", id, err)
	}
	return e, nil
}

// indexed is one id found through a time index.
type indexed struct {
	p  int32
	id string
	e  *entry
}

// scan returns up to limit entries of p from the index kind ('d' or 'x')
// with a time from ms (at or before ms), in time order. from is a
// lower bound below which the index is known to be empty: an index of
// times is a queue on an LSM tree, whose fired entries stay behind as
// tombstones until compaction, and starting past them keeps a scan from
// walking over them every tick.
func (s *store) scan(kind byte, p int32, from, ms int64, limit int) ([]indexed, error) {
	prefix := len(partKey(kind, p))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: timeKey(kind, p, max(from, 0), ""), UpperBound: timeKey(kind, p, ms+1, "")})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []indexed
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		id := string(it.Key()[prefix+8:])
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		if len(v) < entryHeader {
			return nil, fmt.Errorf("timer %q: index value of %d bytes", id, len(v))
		}
		e, err := decodeEntry(v[:entryHeader])
		if err != nil {
			return nil, err
		}
		e.raw = bytes.Clone(v[entryHeader:])
		out = append(out, indexed{p, id, e})
	}
	return out, it.Error()
}

// writer changes timer states in one batch and keeps the indexes and the
// pending counts in step. Reads go through the batch, so a batch sees its
// own writes.
type writer struct {
	b     *pebble.Batch
	delta map[int32]int64
	// low is the earliest time written to each index of each partition.
	low map[lowKey]int64
}

type lowKey struct {
	kind byte
	p    int32
}

func (s *store) writer() *writer {
	return &writer{b: s.db.NewIndexedBatch(), delta: map[int32]int64{}, low: map[lowKey]int64{}}
}

func (w *writer) load(p int32, id string) (*entry, error) { return load(w.b, p, id) }

// set replaces old (nil when none) with e (nil to forget the id).
func (w *writer) set(p int32, id string, old, e *entry) error {
	if old != nil {
		if k := old.index(p, id); k != nil {
			if err := w.b.Delete(k, nil); err != nil {
				return err
			}
		}
		if old.state == statePending {
			w.delta[p]--
		}
	}
	if e == nil {
		return w.b.Delete(idKey(p, id), nil)
	}
	if err := w.b.Set(idKey(p, id), e.encode(), nil); err != nil {
		return err
	}
	if k := e.index(p, id); k != nil {
		v := e.encode()
		if e.state == statePending {
			v = append(v, e.raw...)
		}
		if err := w.b.Set(k, v, nil); err != nil {
			return err
		}
		lk := lowKey{k[0], p}
		if low, ok := w.low[lk]; !ok || e.at < low {
			w.low[lk] = e.at
		}
	}
	if e.state == statePending {
		w.delta[p]++
	}
	return nil
}

// raw reads the TimerCommand of a pending timer from its due-index key.
func (w *writer) raw(p int32, id string, e *entry) ([]byte, error) {
	v, closer, err := w.b.Get(timeKey('d', p, e.at, id))
	if err != nil {
		return nil, fmt.Errorf("timer %q: due index: %w", id, err)
	}
	defer closer.Close()
	if len(v) < entryHeader {
		return nil, fmt.Errorf("timer %q: index value of %d bytes", id, len(v))
	}
	return bytes.Clone(v[entryHeader:]), nil
}

func (w *writer) setOffset(p int32, next int64) error { return setUint(w.b, partKey('o', p), next) }

func (w *writer) setLastRun(p int32, campaign string, ms int64) error {
	return setUint(w.b, runKey(p, campaign), ms)
}

func (w *writer) lastRun(p int32, campaign string) (int64, bool, error) {
	return getUint(w.b, runKey(p, campaign))
}

func (w *writer) deleteLastRun(p int32, campaign string) error {
	return w.b.Delete(runKey(p, campaign), nil)
}

// commit writes the pending counts and commits. It returns the changed
// counts (partition → new count).
func (w *writer) commit(opts *pebble.WriteOptions) (map[int32]int64, error) {
	counts := make(map[int32]int64, len(w.delta))
	for p, d := range w.delta {
		if d == 0 {
			continue
		}
		n, _, err := getUint(w.b, partKey('n', p))
		if err != nil {
			return nil, err
		}
		n += d
		if err := setUint(w.b, partKey('n', p), n); err != nil {
			return nil, err
		}
		counts[p] = n
	}
	if err := w.b.Commit(opts); err != nil {
		return nil, err
	}
	return counts, nil
}

// close releases the batch; call it once, committed or not.
func (w *writer) close() { _ = w.b.Close() }
