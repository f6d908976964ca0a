package timer

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// rec builds a record of the timers topic at an offset on partition 0.
type rec struct {
	off  int64
	kind string // put, cancel, marker, tomb, restate, bad, progress
	due  int64  // put, restate, progress
	cond int64  // marker, tomb, restate
}

func (r rec) record(t *testing.T, id string) *kgo.Record {
	t.Helper()
	k := &kgo.Record{Topic: "hookstream.timers", Partition: 0, Offset: r.off, Key: []byte(id)}
	cmd := func(c *hookstreamv1.TimerCommand) []byte {
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cond := []kgo.RecordHeader{{Key: HeaderIfVersion, Value: []byte(strconv.FormatInt(r.cond, 10))}}
	switch r.kind {
	case "put":
		k.Value = cmd(&hookstreamv1.TimerCommand{Id: id, DueMs: r.due, DestinationTopic: "out", Payload: []byte("p")})
	case "restate":
		k.Value = cmd(&hookstreamv1.TimerCommand{Id: id, DueMs: r.due, DestinationTopic: "out", Payload: []byte("p")})
		k.Headers = cond
	case "cancel":
	case "marker":
		k.Value = cmd(&hookstreamv1.TimerCommand{Id: id, DueMs: r.due, Owner: OwnerFired})
		k.Headers = cond
	case "tomb":
		k.Headers = cond
	case "bad":
		k.Value = []byte("not a timer command")
	case "progress":
		k.Key = []byte(RunKeyPrefix + id)
		k.Value = cmd(&hookstreamv1.TimerCommand{Id: RunKeyPrefix + id, DueMs: r.due, Owner: OwnerSchedule})
	default:
		t.Fatalf("unknown record kind %q", r.kind)
	}
	return k
}

// newApplyService returns a service with a store in a temporary directory
// and no Kafka: what it would produce to explicit partitions is collected
// instead.
func newApplyService(t testing.TB) (*Service, *[]*kgo.Record) {
	t.Helper()
	return newApplyServiceIn(t, t.TempDir())
}

func newApplyServiceIn(t testing.TB, dir string) (*Service, *[]*kgo.Record) {
	t.Helper()
	s, produced := openApplyService(t, dir)
	t.Cleanup(func() { s.store.db.Close() })
	return s, produced
}

// openApplyService is newApplyServiceIn without the clean-up: the caller
// closes s.store.db.
func openApplyService(t testing.TB, dir string) (*Service, *[]*kgo.Record) {
	t.Helper()
	var cfg Config
	cfg.RegisterFlags(flag.NewFlagSet("t", flag.ContinueOnError))
	kcfg := kafkatest.Config("127.0.0.1:1")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	s, err := New(cfg, kcfg, slog.New(slog.NewTextHandler(io.Discard, nil)), noop.NewMeterProvider().Meter("t"), nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	st, _, err := openStore(dir, s.log)
	if err != nil {
		t.Fatal(err)
	}
	s.store = st
	for p := range int32(kcfg.Partitions) {
		s.parts[p] = newPartition(-1)
		s.counts[p] = 0
	}
	var produced []*kgo.Record
	s.produceDirect = func(_ context.Context, recs ...*kgo.Record) error {
		produced = append(produced, recs...)
		return nil
	}
	return s, &produced
}

// TestApplyConditionalRecords drives apply with record sequences, one batch
// per inner slice, and checks the timer's final state and what was restated.
func TestApplyConditionalRecords(t *testing.T) {
	type want struct {
		state   state // 0: no entry
		version int64
		due     int64
		// restated: the conditions of restatements produced, and whether
		// each carries a timer (true) or is a tombstone.
		restated []int64
		live     []bool
		pending  int64
	}
	tests := []struct {
		name    string
		batches [][]rec
		want    want
	}{
		{"schedule", [][]rec{{{0, "put", 100, 0}}},
			want{state: statePending, version: 0, due: 100, pending: 1}},
		{"move", [][]rec{{{0, "put", 100, 0}, {1, "put", 200, 0}}},
			want{state: statePending, version: 1, due: 200, pending: 1}},
		{"cancel", [][]rec{{{0, "put", 100, 0}, {1, "cancel", 0, 0}}},
			want{state: stateGone, version: 1}},
		{"fired marker of the stored version removes it", [][]rec{{{0, "put", 100, 0}}, {{1, "marker", 100, 0}}},
			want{state: stateFired, version: 1}},
		{"fired marker after a move does not cancel the move and restates it", [][]rec{{{0, "put", 100, 0}}, {{1, "put", 900, 0}, {2, "marker", 100, 0}}},
			want{state: statePending, version: 1, due: 900, restated: []int64{1}, live: []bool{true}, pending: 1}},
		{"the restatement then takes effect", [][]rec{{{0, "put", 100, 0}}, {{1, "put", 900, 0}, {2, "marker", 100, 0}}, {{3, "restate", 900, 1}}},
			want{state: statePending, version: 3, due: 900, restated: []int64{1}, live: []bool{true}, pending: 1}},
		{"a later command in the same batch needs no restatement", [][]rec{{{0, "put", 100, 0}}, {{1, "put", 900, 0}, {2, "marker", 100, 0}, {3, "cancel", 0, 0}}},
			want{state: stateGone, version: 3}},
		{"clean-up tombstone after a reschedule keeps the new timer", [][]rec{{{0, "put", 100, 0}, {1, "marker", 100, 0}}, {{2, "put", 500, 0}, {3, "tomb", 0, 1}}},
			want{state: statePending, version: 2, due: 500, restated: []int64{2}, live: []bool{true}, pending: 1}},
		{"clean-up tombstone of the marker", [][]rec{{{0, "put", 100, 0}, {1, "marker", 100, 0}, {2, "tomb", 0, 1}}},
			want{state: stateGone, version: 2}},
		{"stale restatement cannot bring back a cancelled timer", [][]rec{{{0, "put", 100, 0}, {1, "cancel", 0, 0}}, {{2, "restate", 100, 0}}},
			want{state: stateGone, version: 1, restated: []int64{1}, live: []bool{false}}},
		{"marker after a cancel is adopted, not restated", [][]rec{{{0, "put", 100, 0}, {1, "cancel", 0, 0}}, {{2, "marker", 100, 0}}},
			want{state: stateFired, version: 2}},
		{"duplicate marker is adopted", [][]rec{{{0, "put", 100, 0}, {1, "marker", 100, 0}}, {{2, "marker", 100, 0}}},
			want{state: stateFired, version: 2}},
		{"rebuild from a compacted marker alone", [][]rec{{{5, "marker", 100, 0}}},
			want{state: stateFired, version: 5}},
		{"rebuild from a compacted restatement alone", [][]rec{{{7, "restate", 900, 3}}},
			want{state: statePending, version: 7, due: 900, pending: 1}},
		{"rebuild from a compacted clean-up tombstone alone", [][]rec{{{9, "tomb", 0, 4}}},
			want{state: stateGone, version: 9}},
		{"rebuild from a compacted marker and the restatement after it", [][]rec{{{2, "marker", 100, 0}, {3, "restate", 900, 1}}},
			want{state: statePending, version: 3, due: 900, pending: 1}},
		{"rebuild from the move, the failed marker and the restatement", [][]rec{{{1, "put", 900, 0}, {2, "marker", 100, 0}, {3, "restate", 900, 1}}},
			want{state: statePending, version: 3, due: 900, pending: 1}},
		{"a conditional record after a restatement is judged by the commands", [][]rec{{{0, "put", 100, 0}}, {{1, "put", 900, 0}, {2, "marker", 100, 0}}, {{3, "restate", 900, 1}}, {{4, "marker", 900, 3}}},
			want{state: stateFired, version: 4, restated: []int64{1}, live: []bool{true}}},
		{"bad command cancels like the compacted topic would", [][]rec{{{0, "put", 100, 0}, {1, "bad", 0, 0}}},
			want{state: stateGone, version: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, produced := newApplyService(t)
			for _, b := range tc.batches {
				var recs []*kgo.Record
				for _, r := range b {
					recs = append(recs, r.record(t, "x"))
				}
				if err := s.apply(context.Background(), recs); err != nil {
					t.Fatal(err)
				}
			}
			e, err := load(s.store.db, 0, "x")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want.state == 0 && e != nil:
				t.Fatalf("state %c@%d, want none", e.state, e.version)
			case tc.want.state != 0 && e == nil:
				t.Fatalf("no state, want %c@%d", tc.want.state, tc.want.version)
			case e != nil && (e.state != tc.want.state || e.version != tc.want.version):
				t.Fatalf("state %c@%d, want %c@%d", e.state, e.version, tc.want.state, tc.want.version)
			case e != nil && e.state == statePending && e.at != tc.want.due:
				t.Fatalf("due %d, want %d", e.at, tc.want.due)
			}
			if len(*produced) != len(tc.want.restated) {
				t.Fatalf("%d restatements, want %d", len(*produced), len(tc.want.restated))
			}
			for i, r := range *produced {
				cond, ok := ifVersion(r)
				if !ok || cond != tc.want.restated[i] || (r.Value != nil) != tc.want.live[i] || r.Partition != 0 || string(r.Key) != "x" {
					t.Fatalf("restatement %d: cond %d (%v), value %q, partition %d; want cond %d live %v", i, cond, ok, r.Value, r.Partition, tc.want.restated[i], tc.want.live[i])
				}
			}
			if got := s.Pending(); got != tc.want.pending {
				t.Fatalf("pending %d, want %d", got, tc.want.pending)
			}
			if n, err := s.store.pending(0); err != nil || n != tc.want.pending {
				t.Fatalf("stored pending %d (%v), want %d", n, err, tc.want.pending)
			}
			last := tc.batches[len(tc.batches)-1]
			if off, _ := s.store.offset(0); off != last[len(last)-1].off+1 {
				t.Fatalf("stored offset %d, want %d", off, last[len(last)-1].off+1)
			}
		})
	}
}

func TestApplyScheduleProgressOnlyMovesForward(t *testing.T) {
	s, _ := newApplyService(t)
	for _, r := range []rec{{0, "progress", 200, 0}, {1, "progress", 100, 0}} {
		if err := s.apply(context.Background(), []*kgo.Record{r.record(t, "winback")}); err != nil {
			t.Fatal(err)
		}
	}
	if last, err := s.store.lastRun(0, "winback"); err != nil || last != 200 {
		t.Fatalf("last run %d (%v), want 200", last, err)
	}
	if s.Pending() != 0 {
		t.Fatalf("progress records counted as timers: %d", s.Pending())
	}
}
