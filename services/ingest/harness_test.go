package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// group is the ingest consumer group (see Service).
const group = "hookstream-ingest"

// traceparent is a valid W3C trace context put on input records.
const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

var quiet = slog.New(slog.DiscardHandler)

// defaultConfig is the ingest configuration with its flag defaults.
func defaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("ingest", flag.ContinueOnError))
	return c
}

// env is a kfake broker with the contract's topics and a client for the
// test's own produce, read and admin requests.
type env struct {
	t      testing.TB
	kc     *kafkatest.Cluster
	kcfg   kafka.Config
	topics kafka.Topics
	cl     *kgo.Client
	adm    *kadm.Client
}

func newEnv(t testing.TB) *env {
	t.Helper()
	kc := kafkatest.New(t)
	return newEnvWith(t, kc, kc.Config())
}

func newEnvWith(t testing.TB, kc *kafkatest.Cluster, kcfg kafka.Config) *env {
	t.Helper()
	cl, err := kafka.NewClient(kcfg, quiet, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cl, int16(kcfg.ReplicationFactor), kcfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, kc: kc, kcfg: kcfg, topics: kcfg.Topics(), cl: cl, adm: kadm.NewClient(cl)}
}

// start runs an ingest service with cfg until the test ends (or stop is
// called) and returns it once it is running.
func (e *env) start(cfg Config) (*Ingest, func()) {
	e.t.Helper()
	in, err := New(cfg, e.kcfg, quiet, noop.NewMeterProvider().Meter("ingest"))
	if err != nil {
		e.t.Fatal(err)
	}
	svc := in.Service()
	if err := svc.StartAsync(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	stop := func() {
		svc.StopAsync()
		if err := svc.AwaitTerminated(context.Background()); err != nil {
			e.t.Errorf("ingest stopped with %v", err)
		}
	}
	e.t.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.AwaitRunning(ctx); err != nil {
		e.t.Fatalf("ingest not running: %v", err)
	}
	return in, stop
}

// produce writes values (with keys, when given) to topic and waits for the
// broker's acknowledgement.
func (e *env) produce(topic string, recs ...*kgo.Record) {
	e.t.Helper()
	for _, r := range recs {
		r.Topic = topic
	}
	if err := e.cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		e.t.Fatalf("produce to %s: %v", topic, err)
	}
}

// endOffsets returns the end offset of every partition of topic.
func (e *env) endOffsets(topic string) map[int32]int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := e.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = l.Error()
	}
	if err != nil {
		e.t.Fatalf("end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	l.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// committed returns the ingest group's committed offsets on topic; a
// partition without a commit is absent.
func (e *env) committed(topic string) map[int32]int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := e.adm.FetchOffsets(ctx, group)
	out := map[int32]int64{}
	if errors.Is(err, kerr.GroupIDNotFound) {
		return out // the group has not joined yet
	}
	if err != nil {
		e.t.Fatalf("committed offsets of %s: %v", group, err)
	}
	for p, r := range rs[topic] {
		if r.Err == nil && r.At >= 0 {
			out[p] = r.At
		}
	}
	return out
}

// waitCaughtUp waits until the ingest group has committed every record of
// the raw topic. The consumer commits only after the broker acknowledged
// the batch's output, so afterwards every output is readable.
func (e *env) waitCaughtUp(timeout time.Duration) {
	e.t.Helper()
	end := e.endOffsets(e.topics.EventsRaw)
	deadline := time.Now().Add(timeout)
	for {
		got := e.committed(e.topics.EventsRaw)
		done := true
		for p, o := range end {
			if o > 0 && got[p] < o {
				done = false
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("ingest did not catch up within %v: committed %v, end offsets %v", timeout, got, end)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reader reads a topic from the start, in steps: each readNew returns what
// was appended since the previous call, up to the end offsets of that moment.
type reader struct {
	e     *env
	topic string
	cl    *kgo.Client
	next  map[int32]int64
}

func (e *env) reader(topic string) *reader {
	e.t.Helper()
	cl, err := kafka.NewClient(e.kcfg, quiet, "test-reader",
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(cl.Close)
	return &reader{e: e, topic: topic, cl: cl, next: map[int32]int64{}}
}

// readNew returns every record appended to the topic since the last call.
func (r *reader) readNew() []*kgo.Record {
	r.e.t.Helper()
	end := r.e.endOffsets(r.topic)
	var out []*kgo.Record
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for !r.reached(end) {
		fs := r.cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			r.e.t.Fatalf("reading %s: got to %v of %v: %v", r.topic, r.next, end, err)
		}
		fs.EachError(func(t string, p int32, err error) { r.e.t.Fatalf("fetch %s/%d: %v", t, p, err) })
		fs.EachRecord(func(rec *kgo.Record) {
			out = append(out, rec)
			r.next[rec.Partition] = rec.Offset + 1
		})
	}
	return out
}

func (r *reader) reached(end map[int32]int64) bool {
	for p, o := range end {
		if r.next[p] < o {
			return false
		}
	}
	return true
}

// header returns the value of the header key, and whether it is present.
func header(r *kgo.Record, key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// decodeEvent decodes an events record.
func decodeEvent(t testing.TB, r *kgo.Record) *hookstreamv1.Event {
	t.Helper()
	var ev hookstreamv1.Event
	if err := proto.Unmarshal(r.Value, &ev); err != nil {
		t.Fatalf("events record %s is not a hookstream.v1.Event: %v", pos(r), err)
	}
	return &ev
}

// keyedByIdentity reports whether an events record is keyed by its event's
// identity, as the contract requires.
func keyedByIdentity(r *kgo.Record, ev *hookstreamv1.Event) bool {
	return ev.GetIdentity() != "" && string(r.Key) == ev.GetIdentity()
}

// pos names a record for messages.
func pos(r *kgo.Record) string { return fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset) }
