package timer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// A partition that is behind its end offset fires nothing while the
// consumer reads the other partitions (a rebuild reads them one after
// another): only when no partition behind its end advances for stallAfter
// is a partition taken as caught up short of its end (compaction can
// remove a log's last records).
func TestPartitionWaitingItsTurnIsNotStalled(t *testing.T) {
	s := &Service{log: slog.New(slog.NewTextHandler(io.Discard, nil)), parts: map[int32]*partition{}}
	s.cfg.Tick = duration.Duration(time.Second)
	reading, waiting := newPartition(0), newPartition(0)
	reading.target, waiting.target = 1_000_000, 500
	s.parts[0], s.parts[1] = reading, waiting
	ticks := int(stallAfter/time.Second) + 5
	for i := range ticks {
		reading.next = int64(i+1) * 1000 // partition 0 advances, 1 waits its turn
		s.refreshPartitions(context.Background(), true)
		if waiting.ready {
			t.Fatalf("partition 1 (offset 0 of 500) fires after %d ticks while partition 0 is still being read", i+1)
		}
	}
	// Now nothing advances: partition 1 stopped short of its end.
	for range ticks {
		s.refreshPartitions(context.Background(), true)
	}
	if !waiting.ready {
		t.Fatalf("partition 1 still not firing after %d ticks with no partition advancing", ticks)
	}
}
