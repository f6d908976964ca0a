package timer

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Benchmarks. `make bench` runs them all; the 10,000,000-timer sizes of
// BenchmarkPendingState and BenchmarkWithPending run only with
// HOOKSTREAM_BENCH_LARGE=1 (about five minutes and 1 GB of disk each).
// BenchmarkPendingState comes first so that the process's resident memory
// is measured before the Kafka benchmarks grow it.

const benchBatch = 1000 // records per consumer batch, as kafka.fetch_max_records

// benchPayload is the size of a typical evaluator timer payload.
var benchPayload = make([]byte, 96)

// benchRecords returns the timer commands n..n+count as records of
// partition p, due over the day after base.
func benchRecords(tb testing.TB, p int32, first, count int, base time.Time) []*kgo.Record {
	tb.Helper()
	recs := make([]*kgo.Record, count)
	for i := range count {
		n := first + i
		id := fmt.Sprintf("inaction:cart-abandon:user-%09d", n)
		v, err := proto.Marshal(&hookstreamv1.TimerCommand{
			Id: id, DueMs: base.Add(time.Duration(n%86400) * time.Second).UnixMilli(), DestinationTopic: "hookstream.events",
			DestinationKey: []byte(fmt.Sprintf("user-%09d", n)), Payload: benchPayload, Owner: "evaluator", CreatedMs: base.UnixMilli(),
		})
		if err != nil {
			tb.Fatal(err)
		}
		recs[i] = &kgo.Record{Topic: "hookstream.timers", Partition: p, Offset: int64(n), Key: []byte(id), Value: v}
	}
	return recs
}

// BenchmarkPendingState applies 100,000 and 1,000,000 pending timers (and
// 10,000,000 with HOOKSTREAM_BENCH_LARGE=1) to the store and reports the Go
// heap and the process's resident memory after each, and the disk used per
// timer: the state lives in Pebble, so memory stays flat as timers grow (it
// fails when the heap grows by more than heapGrowthBound).
func BenchmarkPendingState(b *testing.B) {
	sizes := []int{100_000, 1_000_000}
	if os.Getenv("HOOKSTREAM_BENCH_LARGE") != "" {
		sizes = append(sizes, 10_000_000)
	}
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		s, _ := newApplyServiceIn(b, dir)
		base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
		done := 0
		start := time.Now()
		var heapFirst uint64
		runtime.GC()
		b.ReportMetric(float64(rssBytes(b))/(1<<20), "rss-MB@0")
		for _, size := range sizes {
			for done < size {
				n := min(benchBatch, size-done)
				if err := s.apply(context.Background(), benchRecords(b, int32(done/benchBatch%3), done, n, base)); err != nil {
					b.Fatal(err)
				}
				done += n
			}
			if err := s.store.db.Flush(); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if size == sizes[0] {
				heapFirst = ms.HeapInuse
			} else {
				checkHeapFlat(b, sizes[0], size, heapFirst, ms.HeapInuse)
			}
			disk, sst := dirSize(b, dir)
			label := fmt.Sprintf("%dk", size/1000)
			if size >= 1_000_000 {
				label = fmt.Sprintf("%dM", size/1_000_000)
			}
			b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB@"+label)
			b.ReportMetric(float64(rssBytes(b))/(1<<20), "rss-MB@"+label)
			b.ReportMetric(float64(disk)/(1<<20), "disk-MB@"+label)
			b.ReportMetric(float64(sst)/float64(size), "sst-B/timer@"+label)
			if s.Pending() != int64(size) {
				b.Fatalf("pending %d, want %d", s.Pending(), size)
			}
		}
		b.ReportMetric(float64(done)/time.Since(start).Seconds(), "applied-cmds/s")
	}
}

// dirSize returns the bytes of every file under dir (with the write-ahead
// log, which Pebble recycles) and of its tables alone.
func dirSize(tb testing.TB, dir string) (all, sst int64) {
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			all += info.Size()
			if strings.HasSuffix(path, ".sst") {
				sst += info.Size()
			}
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return all, sst
}

// rssBytes reads VmRSS from /proc (0 where there is none).
func rssBytes(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	return 0
}

// BenchmarkApply is the schedule rate of the state machine alone (records
// in, Pebble batch with offsets out, synced per batch of 1,000), next to
// bare Pebble with the same options, keys and values: blind writes, and a
// read of the previous state before the writes as apply does.
func BenchmarkApply(b *testing.B) {
	base := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	b.Run("timer", func(b *testing.B) {
		s, _ := newApplyService(b)
		recs := benchRecords(b, 0, 0, b.N, base)
		b.ResetTimer()
		for i := 0; i < b.N; i += benchBatch {
			if err := s.apply(context.Background(), recs[i:min(i+benchBatch, b.N)]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
	})
	for _, read := range []bool{false, true} {
		name := "bare-pebble-write"
		if read {
			name = "bare-pebble-read-write"
		}
		b.Run(name, func(b *testing.B) {
			opts := pebbleOptions(testLogger())
			db, err := pebble.Open(b.TempDir(), opts)
			opts.Cache.Unref()
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			recs := benchRecords(b, 0, 0, b.N, base)
			b.ResetTimer()
			for i := 0; i < b.N; i += benchBatch {
				batch := db.NewIndexedBatch()
				for _, r := range recs[i:min(i+benchBatch, b.N)] {
					var c hookstreamv1.TimerCommand
					if err := proto.Unmarshal(r.Value, &c); err != nil {
						b.Fatal(err)
					}
					if read {
						if _, closer, err := batch.Get(idKey(0, c.Id)); err == nil {
							closer.Close()
						}
					}
					e := entry{state: statePending, version: r.Offset, cmd: r.Offset, at: c.DueMs}
					_ = batch.Set(idKey(0, c.Id), e.encode(), nil)
					_ = batch.Set(timeKey('d', 0, c.DueMs, c.Id), append(e.encode(), r.Value...), nil)
					_ = setUint(batch, partKey('o', 0), r.Offset+1)
				}
				if err := batch.Commit(pebble.Sync); err != nil {
					b.Fatal(err)
				}
				batch.Close()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// BenchmarkScheduleThroughKafka is the schedule rate end to end: 200,000
// commands waiting on the timers topic of an in-process broker, consumed,
// applied and stored, timed from the first applied to the last. Its
// baseline is a bare consumer reading the same records from the same
// broker.
func BenchmarkScheduleThroughKafka(b *testing.B) {
	const n = 200_000
	b.Run("timer", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := newHarness(b)
			base := h.clock.Now().Add(24 * time.Hour)
			produceCommands(b, h, n, func(int) time.Time { return base })
			h.noWait = true
			in := h.start(b.TempDir())
			var first time.Time
			for in.s.Pending() < n {
				if first.IsZero() && in.s.Pending() > 0 {
					first = time.Now()
				}
				time.Sleep(time.Millisecond)
			}
			b.ReportMetric(float64(n)/time.Since(first).Seconds(), "cmds/s")
		}
	})
	b.Run("bare-consume", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := newHarness(b)
			base := h.clock.Now().Add(24 * time.Hour)
			produceCommands(b, h, n, func(int) time.Time { return base })
			cl, err := kafka.NewClient(h.cfg, testLogger(), "bench-consume", kgo.ConsumeTopics(h.cfg.Topics().Timers), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			if err != nil {
				b.Fatal(err)
			}
			var first time.Time
			for got := 0; got < n; {
				fs := cl.PollRecords(context.Background(), benchBatch)
				if first.IsZero() {
					first = time.Now()
				}
				got += len(fs.Records())
			}
			b.ReportMetric(float64(n)/time.Since(first).Seconds(), "cmds/s")
			cl.Close()
		}
	})
}

func produceCommands(tb testing.TB, h *harness, n int, due func(i int) time.Time) {
	tb.Helper()
	recs := make([]*kgo.Record, 0, n)
	for i := range n {
		id := fmt.Sprintf("t-%09d", i)
		rec, err := Schedule(h.cfg.Topics(), &hookstreamv1.TimerCommand{Id: id, DueMs: due(i).UnixMilli(), DestinationTopic: "out", DestinationKey: []byte(id), Payload: benchPayload})
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, rec)
	}
	if err := kafka.ProduceSync(context.Background(), h.client, recs...); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkFireThroughKafka is the fire rate end to end with the pace
// uncapped: 100,000 overdue timers, each produced to its destination and
// marked fired, timed until the last arrives at a consumer. Its baseline
// produces the same two records per timer (payload and marker) from one
// client in batches of 1,000 and waits for the same consumer.
func BenchmarkFireThroughKafka(b *testing.B) {
	const n = 100_000
	b.Run("timer", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := newHarness(b)
			base := h.clock.Now()
			produceCommands(b, h, n, func(i int) time.Time { return base.Add(-time.Duration(n-i) * time.Millisecond) })
			cfg := h.config()
			cfg.DataDir = b.TempDir()
			cfg.FireRate = 10_000_000
			in := h.startWith(cfg)
			h.eventually("every timer applied", func() bool { return in.s.Pending() == n })
			start := time.Now()
			h.clock.Advance(time.Second) // the pacer starts empty
			h.drain(b, n)
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "timers/s")
		}
	})
	b.Run("bare-produce", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			h := newHarness(b)
			payload := make([]*kgo.Record, 0, n)
			marker := make([]*kgo.Record, 0, n)
			mv, _ := proto.Marshal(&hookstreamv1.TimerCommand{Id: "t-000000000", DueMs: 1, Owner: OwnerFired, CreatedMs: 1})
			for j := range n {
				id := []byte(fmt.Sprintf("t-%09d", j))
				payload = append(payload, &kgo.Record{Topic: "out", Key: id, Value: benchPayload})
				marker = append(marker, &kgo.Record{Topic: h.cfg.Topics().Timers, Key: id, Value: mv})
			}
			start := time.Now()
			for j := 0; j < n; j += benchBatch {
				if err := kafka.ProduceSync(context.Background(), h.client, payload[j:j+benchBatch]...); err != nil {
					b.Fatal(err)
				}
				if err := kafka.ProduceSync(context.Background(), h.client, marker[j:j+benchBatch]...); err != nil {
					b.Fatal(err)
				}
			}
			h.drain(b, n)
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "timers/s")
		}
	})
}

// drain waits for n records on "out".
func (h *harness) drain(tb testing.TB, n int) {
	for range n {
		select {
		case <-h.fired:
		case <-time.After(60 * time.Second):
			tb.Fatal("timers stopped firing")
		}
	}
}

// BenchmarkFireLateness measures lateness at steady state on the wall
// clock with the default tick (100ms) and fire rate (5,000/s): 10,000 timers
// due over 5 seconds. fired is when the service fired (its header), arrived
// when the record reached a consumer.
func BenchmarkFireLateness(b *testing.B) {
	const n, over = 10_000, 5 * time.Second
	for i := 0; i < b.N; i++ {
		h := newHarness(b)
		cfg := h.config()
		cfg.DataDir = b.TempDir()
		h.wall = true
		h.startWith(cfg)
		base := time.Now().Add(2 * time.Second)
		produceCommands(b, h, n, func(i int) time.Time { return base.Add(time.Duration(i) * over / n) })
		fired := make([]float64, 0, n)
		arrived := make([]float64, 0, n)
		for range n {
			select {
			case r := <-h.fired:
				hdr := headers(r)
				due, _ := strconv.ParseInt(hdr[HeaderTimerDueMs], 10, 64)
				at, _ := strconv.ParseInt(hdr[HeaderTimerFiredMs], 10, 64)
				fired = append(fired, float64(at-due))
				arrived = append(arrived, float64(time.Now().UnixMilli()-due))
			case <-time.After(60 * time.Second):
				b.Fatal("timers stopped firing")
			}
		}
		slices.Sort(fired)
		slices.Sort(arrived)
		b.ReportMetric(fired[len(fired)/2], "fired-p50-ms")
		b.ReportMetric(fired[len(fired)*99/100], "fired-p99-ms")
		b.ReportMetric(arrived[len(arrived)/2], "arrived-p50-ms")
		b.ReportMetric(arrived[len(arrived)*99/100], "arrived-p99-ms")
	}
}

// heapGrowthBound is how much the Go heap in use may grow from 100,000
// pending timers to a million or ten million: a store that kept even 32
// bytes a timer in the heap would pass it at a million. The state is in
// Pebble, whose block cache and memtables are allocated outside the Go
// heap.
const heapGrowthBound = 32 << 20

// heapInUse is the Go heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// checkHeapFlat fails b when the heap grew with the pending count.
func checkHeapFlat(b *testing.B, from, to int, heapFrom, heapTo uint64) {
	b.Helper()
	if heapTo > heapFrom+heapGrowthBound {
		b.Errorf("heap in use grew from %.1f MiB with %d pending timers to %.1f MiB with %d (%.0f bytes a timer): timer state must stay in Pebble, not the heap",
			float64(heapFrom)/(1<<20), from, float64(heapTo)/(1<<20), to, float64(heapTo-heapFrom)/float64(to-from))
	}
}

// BenchmarkWithPending measures the service with timers already pending
// (0, which is the same-run baseline, and 1,000,000; 10,000,000 with
// HOOKSTREAM_BENCH_LARGE=1): they are applied straight to the store, due
// in a week or later, before the service starts on it. Then, in this order:
//   - schedule rate: 200,000 commands waiting on the timers topic, consumed,
//     applied and stored (as BenchmarkScheduleThroughKafka);
//   - lateness: 10,000 timers due over 5 seconds at the default tick and
//     rate on the wall clock (as BenchmarkFireLateness);
//   - fire rate: 100,000 overdue timers, pace uncapped (as
//     BenchmarkFireThroughKafka).
//
// It also reports the heap, the process's resident memory and the disk with
// the pending timers applied, and fails when the heap grew with them.
func BenchmarkWithPending(b *testing.B) {
	sizes := []int{0, 1_000_000}
	if os.Getenv("HOOKSTREAM_BENCH_LARGE") != "" {
		sizes = append(sizes, 10_000_000)
	}
	for _, size := range sizes {
		label := fmt.Sprintf("pending=%dM", size/1_000_000)
		if size == 0 {
			label = "pending=0"
		}
		b.Run(label, func(b *testing.B) {
			for range b.N {
				benchWithPending(b, size)
			}
		})
	}
}

func benchWithPending(b *testing.B, size int) {
	dir := b.TempDir()
	// Due in a week or later on the wall clock, which is after the
	// harness's fixed clock too: none of them fires here.
	far := time.Now().Add(7 * 24 * time.Hour)
	s, _ := openApplyService(b, dir)
	start := time.Now()
	heap100k := uint64(0)
	for done := 0; done < size; {
		n := min(benchBatch, size-done)
		recs := benchRecords(b, int32(done/benchBatch%3), done, n, far)
		for _, r := range recs {
			r.Key = append([]byte("pending:"), r.Key...)
			var c hookstreamv1.TimerCommand
			if err := proto.Unmarshal(r.Value, &c); err != nil {
				b.Fatal(err)
			}
			c.Id, c.DestinationTopic = string(r.Key), "out"
			c.DueMs += int64(done%30) * 24 * time.Hour.Milliseconds() // spread over a month
			var err error
			if r.Value, err = proto.Marshal(&c); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.apply(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
		done += n
		if done == 100_000 {
			heap100k = heapInUse()
		}
	}
	if size > 0 {
		b.ReportMetric(float64(size)/time.Since(start).Seconds(), "prefill-cmds/s")
		if err := s.store.db.Flush(); err != nil {
			b.Fatal(err)
		}
		heap := heapInUse()
		debug.FreeOSMemory()
		disk, _ := dirSize(b, dir)
		b.ReportMetric(float64(heap)/(1<<20), "heap-MB")
		b.ReportMetric(float64(rssBytes(b))/(1<<20), "rss-MB")
		b.ReportMetric(float64(disk)/(1<<20), "disk-MB")
		checkHeapFlat(b, 100_000, size, heap100k, heap)
	}
	// The store now stands for the first size records of an earlier timers
	// topic; this broker's topic is new, so every partition is read from
	// offset 0 (the benchmark's own timers have other ids).
	batch := s.store.db.NewBatch()
	for p := range int32(3) {
		if err := setUint(batch, partKey('o', p), 0); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Commit(pebble.Sync); err != nil {
		b.Fatal(err)
	}
	batch.Close()
	if err := s.store.db.Close(); err != nil {
		b.Fatal(err)
	}

	h := newHarness(b)
	produce := func(prefix string, n int, due func(i int) time.Time) {
		recs := make([]*kgo.Record, 0, n)
		for i := range n {
			id := fmt.Sprintf("%s-%09d", prefix, i)
			rec, err := Schedule(h.cfg.Topics(), &hookstreamv1.TimerCommand{Id: id, DueMs: due(i).UnixMilli(), DestinationTopic: "out", DestinationKey: []byte(id), Payload: benchPayload})
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, rec)
		}
		if err := kafka.ProduceSync(context.Background(), h.client, recs...); err != nil {
			b.Fatal(err)
		}
	}
	pending := int64(size)

	// Schedule rate.
	const scheduled = 200_000
	produce("schedule", scheduled, func(int) time.Time { return far })
	h.noWait = true
	in := h.start(dir)
	var first time.Time
	for in.s.Pending() < pending+scheduled {
		if first.IsZero() && in.s.Pending() > pending {
			first = time.Now()
		}
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(scheduled)/time.Since(first).Seconds(), "schedule-cmds/s")
	pending += scheduled
	in.stop(b)
	h.noWait = false

	// Lateness at steady state, on the wall clock. It runs before the fire
	// rate so that the clean-ups of the fire-rate markers, due a minute
	// after the harness's clock, are not overdue here.
	const late, over = 10_000, 5 * time.Second
	h.wall = true
	in = h.start(dir)
	base := time.Now().Add(2 * time.Second)
	produce("late", late, func(i int) time.Time { return base.Add(time.Duration(i) * over / late) })
	// A timer may fire again (at least once); lateness is of the first.
	fired := make([]float64, 0, late)
	seen := make(map[string]bool, late)
	again := 0
	for len(seen) < late {
		select {
		case r := <-h.fired:
			if seen[string(r.Key)] {
				again++
				continue
			}
			seen[string(r.Key)] = true
			hdr := headers(r)
			due, _ := strconv.ParseInt(hdr[HeaderTimerDueMs], 10, 64)
			at, _ := strconv.ParseInt(hdr[HeaderTimerFiredMs], 10, 64)
			fired = append(fired, float64(at-due))
		case <-time.After(60 * time.Second):
			b.Fatal("timers stopped firing")
		}
	}
	b.ReportMetric(float64(again), "fired-again")
	slices.Sort(fired)
	b.ReportMetric(fired[len(fired)/2], "fired-p50-ms")
	b.ReportMetric(fired[len(fired)*99/100], "fired-p99-ms")
	// Stopped before its fired markers are out, the service would fire
	// the last batch again, late on the wall clock, never on the earlier
	// clock of the next phase.
	waitPending(b, in, pending)
	in.stop(b)
	h.wall = false

	// Fire rate, pace uncapped, on the harness's clock.
	const overdue = 100_000
	now := h.clock.Now()
	produce("fire", overdue, func(i int) time.Time { return now.Add(-time.Duration(overdue-i) * time.Millisecond) })
	cfg := h.config()
	cfg.DataDir = dir
	cfg.FireRate = 10_000_000
	in = h.startWith(cfg)
	waitPending(b, in, pending+overdue)
	fireStart := time.Now()
	h.clock.Advance(time.Second) // the pacer starts empty
	h.drain(b, overdue)
	b.ReportMetric(float64(overdue)/time.Since(fireStart).Seconds(), "fire-timers/s")
	waitPending(b, in, pending)
	in.stop(b)
}

// waitPending waits until want timers are pending: applying after a
// prefill of millions waits on Pebble's compactions of it.
func waitPending(b *testing.B, in *instance, want int64) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for in.s.Pending() != want {
		if time.Now().After(deadline) {
			b.Fatalf("%d timers pending after 2 minutes, want %d", in.s.Pending(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
