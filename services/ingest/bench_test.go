package ingest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// typicalRecords are the records of pkg/normalize's BenchmarkNormalize: ~300
// bytes each, the three formats, all valid. benchRecords gives them
// identities u-0 ... u-999 so that they spread over the partitions.
var typicalRecords = []string{
	`{"type":"event","identity":"u-1001","name":"Added To Cart","ts":"2026-11-27T10:00:00Z","properties":{"ProductId":"sku-42","Price":899.0,"Currency":"CAD","Category":"Watches","Quantity":1,"Tags":["gift","sale"],"Source":{"campaign":"bf-2026","medium":"email"}},"id":"e-0001"}`,
	`{"type":"event","identity":"u-1001","name":"Charged","ts":1764237900,"properties":{"ProductId":"sku-42","Amount":899.0,"Currency":"CAD","PaymentMode":"card","Items":[{"sku":"sku-42","qty":1}],"Coupon":"MT50","Store":"Toronto Eaton Centre"}}`,
	`{"type":"profile","identity":"u-1001","ts":"2026-11-27T09:59:00Z","properties":{"Email":"jack@example.com","Name":"Jack","Country":"Canada","City":"Toronto","Timezone":"America/Toronto","Push_token":"19403aa5d3bb376769a8101c9cbf22159cb1836117659cc684a71243589982ea","Last Score":308}}`,
	`{"type":"track","userId":"u-1001","event":"Order Completed","properties":{"order_id":"50314b8e","total":27.5,"revenue":25.0,"shipping":3,"tax":2,"currency":"USD","products":[{"product_id":"507f1f77","sku":"45790-32","price":19}]},"timestamp":"2026-11-27T10:05:00.000Z","messageId":"ajs-2"}`,
	`{"type":"identify","userId":"u-1001","traits":{"email":"ann@example.com","name":"Ann Smith","phone":"+1-555-0100","plan":"premium","address":{"city":"Austin","country":"USA","street":"6th St"},"logins":5},"context":{"timezone":"America/Chicago","ip":"8.8.8.8"},"timestamp":"2026-11-27T10:00:00.000Z","messageId":"ajs-1"}`,
	`{"d":[{"identity":"u-1001","ts":1764237600,"type":"event","evtName":"Product viewed","evtData":{"Product name":"Casio Chronograph Watch","Category":"Mens Watch","Price":59.99,"Brand":"Casio","Color":"Black","InStock":true,"Rating":4.5,"Reviews":1203,"Seller":"Casio Store"}}]}`,
}

// benchValues returns n raw values of the named set: "typical" (all valid)
// or "mixed" (genMix: about a third invalid, every error kind).
func benchValues(set string, n int) []*kgo.Record {
	out := make([]*kgo.Record, n)
	switch set {
	case "typical":
		for i := range out {
			v := strings.Replace(typicalRecords[i%len(typicalRecords)], `"u-1001"`, fmt.Sprintf(`"u-%d"`, i%1000), 1)
			out[i] = &kgo.Record{Value: []byte(v)}
		}
	case "mixed":
		for i, r := range genMix(n) {
			out[i] = &kgo.Record{Key: r.key, Value: r.value}
		}
	}
	return out
}

// BenchmarkIngest measures, in one run on one broker, the ingest pipeline
// against the broker round trip it rides on, over the same records:
//
//   - raw-records/s: records produced to a topic and consumed by a
//     kafka.Consumer (the consume loop ingest uses, committing after each
//     batch) whose handler does nothing: the broker round trip, the
//     issue's baseline;
//   - copy-records/s: the same, with a handler that produces every record
//     unchanged to another topic and waits for the acknowledgement: a stage
//     that does everything ingest does except normalising;
//   - records/s: records produced to the raw topic and consumed by the
//     ingest service, which normalises them and produces the events and dead
//     letters before committing.
//
// Each is timed from the first produce until the group has committed the
// last record; the consumers have joined their groups beforehand. ratio is
// records/s over raw-records/s (target ≥ 0.5); ns/op is per record through
// ingest; cpu-ns/rec (and raw-, copy-) is the CPU time of the whole process
// (broker, clients, ingest) per record, which the machine's other load
// distorts less than wall time.
func BenchmarkIngest(b *testing.B) {
	for _, set := range []string{"typical", "mixed"} {
		b.Run(set, func(b *testing.B) {
			b.StopTimer()
			e := newEnv(b)
			p := e.kcfg.TopicPrefix
			specs := []kafka.TopicSpec{{Name: p + "bench.raw"}, {Name: p + "bench.copy.in"}, {Name: p + "bench.copy.out"}}
			for k := range specs {
				specs[k].Partitions = int32(e.kcfg.Partitions)
			}
			if err := kafka.EnsureTopics(context.Background(), e.cl, -1, specs); err != nil {
				b.Fatal(err)
			}
			e.runConsumer("bench-raw", specs[0].Name, func(*kafka.Consumer, []*kgo.Record) error { return nil })
			e.runConsumer("bench-copy", specs[1].Name, func(c *kafka.Consumer, recs []*kgo.Record) error {
				out := make([]*kgo.Record, len(recs))
				for k, r := range recs {
					out[k] = &kgo.Record{Topic: specs[2].Name, Key: r.Key, Value: r.Value}
				}
				return kafka.ProduceSync(context.Background(), c.Client(), out...)
			})
			e.start(defaultConfig())
			for _, g := range []string{"bench-raw", "bench-copy", group} {
				waitStable(b, e.kc.Kfake(), g)
			}

			rawRecs, copyRecs, ingestRecs := benchValues(set, b.N), benchValues(set, b.N), benchValues(set, b.N)
			cpu0 := processCPU()
			rawDur := e.pipe(specs[0].Name, "bench-raw", rawRecs)
			cpu1 := processCPU()
			copyDur := e.pipe(specs[1].Name, "bench-copy", copyRecs)
			cpu2 := processCPU()
			b.StartTimer()
			ingestDur := e.pipe(e.topics.EventsRaw, group, ingestRecs)
			b.StopTimer()
			cpu3 := processCPU()

			perSecond := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
			perRecord := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
			rate, rawRate, copyRate := perSecond(ingestDur), perSecond(rawDur), perSecond(copyDur)
			b.ReportMetric(rate, "records/s")
			b.ReportMetric(rawRate, "raw-records/s")
			b.ReportMetric(copyRate, "copy-records/s")
			b.ReportMetric(rate/rawRate, "ratio")
			if cpu0 > 0 {
				b.ReportMetric(perRecord(cpu3-cpu2), "cpu-ns/rec")
				b.ReportMetric(perRecord(cpu1-cpu0), "raw-cpu-ns/rec")
				b.ReportMetric(perRecord(cpu2-cpu1), "copy-cpu-ns/rec")
			}
			if b.N >= 10_000 {
				b.Logf("%s, %d records: ingest %.0f records/s (%.0f ns CPU each); raw produce+consume %.0f records/s (%.0f ns); copy stage %.0f records/s (%.0f ns); ratio %.2f (to the copy stage %.2f)",
					set, b.N, rate, perRecord(cpu3-cpu2), rawRate, perRecord(cpu1-cpu0), copyRate, perRecord(cpu2-cpu1), rate/rawRate, rate/copyRate)
			}
		})
	}
}

// runConsumer runs a kafka.Consumer of topic in group with handler h until
// the benchmark ends.
func (e *env) runConsumer(group, topic string, h func(*kafka.Consumer, []*kgo.Record) error) {
	e.t.Helper()
	var c *kafka.Consumer
	c, err := kafka.NewConsumer(e.kcfg, quiet, group, kafka.ConsumerConfig{Group: group, Topics: []string{topic}},
		func(_ context.Context, recs []*kgo.Record) error { return h(c, recs) })
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = c.Run(ctx) })
	e.t.Cleanup(func() { cancel(); wg.Wait(); c.Close() })
}

func waitStable(b *testing.B, c *kfake.Cluster, g string) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitGroupStable(ctx, g, 1); err != nil {
		b.Fatalf("group %s not stable: %v", g, err)
	}
}

// pipe produces recs to topic and returns how long it took until group had
// committed all of them. It watches the group's commits on the broker rather
// than polling for them.
func (e *env) pipe(topic, g string, recs []*kgo.Record) time.Duration {
	e.t.Helper()
	var (
		mu        sync.Mutex
		committed = map[int32]int64{}
		done      = make(chan struct{})
		closed    bool
	)
	watch := e.kc.Kfake().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: g, Count: -1, When: func(req kmsg.Request) bool {
		oc, ok := req.(*kmsg.OffsetCommitRequest)
		if !ok {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		var sum int64
		for _, t := range oc.Topics {
			for _, p := range t.Partitions {
				committed[p.Partition] = max(committed[p.Partition], p.Offset)
			}
		}
		for _, o := range committed {
			sum += o
		}
		if sum >= int64(len(recs)) && !closed {
			closed = true
			close(done)
		}
		return false // observe only
	}})
	defer watch.Remove()

	var failed atomic.Value
	start := time.Now()
	for _, r := range recs {
		r.Topic = topic
		e.cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Store(err)
			}
		})
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		e.t.Fatalf("%s: group %s did not commit %d records in 5 minutes", topic, g, len(recs))
	}
	d := time.Since(start)
	if err := e.cl.Flush(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	if err, _ := failed.Load().(error); err != nil {
		e.t.Fatalf("produce to %s: %v", topic, err)
	}
	return d
}

// BenchmarkNormalizeBatch measures the ingest stage without a broker: turning
// a polled batch of 1000 raw records into events records and dead letters
// (normalise, protobuf, record building; in parallel on GOMAXPROCS
// goroutines), in records/s and in CPU time per record (cpu-ns/rec: the
// process's, garbage collection included).
func BenchmarkNormalizeBatch(b *testing.B) {
	for _, set := range []string{"typical", "mixed"} {
		b.Run(set, func(b *testing.B) {
			kcfg := kafkaConfigForBench()
			in, err := New(defaultConfig(), kcfg, quiet, noop.NewMeterProvider().Meter("ingest"))
			if err != nil {
				b.Fatal(err)
			}
			batch := benchValues(set, 1000)
			for k, r := range batch {
				r.Topic, r.Partition, r.Offset = kcfg.Topics().EventsRaw, int32(k%3), int64(k)
			}
			b.ReportAllocs()
			var mem batchMem // reused, as the consumer does
			n, cpu0 := 0, processCPU()
			for b.Loop() {
				out, _ := in.outputs(batch, &mem)
				n += len(batch)
				if len(out) < len(batch) {
					b.Fatalf("%d outputs for %d records", len(out), len(batch))
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
			if cpu0 > 0 {
				b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(n), "cpu-ns/rec")
			}
		})
	}
}

func kafkaConfigForBench() kafka.Config { return kafkatest.Config("127.0.0.1:1") }
