package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// setTracing installs tp and the W3C propagator as the global ones for the
// test.
func setTracing(t *testing.T, tp trace.TracerProvider) {
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })
}

// tracedProducer installs an SDK tracer provider with sampler, exporting
// to the returned in-memory exporter, and returns a traced producer on a
// new broker.
func tracedProducer(t *testing.T, sampler sdktrace.Sampler) (*tracetest.InMemoryExporter, *sdktrace.TracerProvider, kafka.Config, *kgo.Client) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sampler))
	setTracing(t, tp)
	cfg := kafkatest.New(t).Config()
	prod, err := kafka.NewClient(cfg, quiet(), "producer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	return exp, tp, cfg, prod
}

func consumeOne(t *testing.T, cl *kgo.Client) *kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		fs := cl.PollRecords(ctx, 1)
		if err := ctx.Err(); err != nil {
			t.Fatal("no record consumed")
		}
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0]
		}
	}
}

// A produced record carries the trace context of its publish span, a child
// of the producer's span; the consumed record's Context continues that
// trace, and the consumer's process span is the publish span's child (no
// receive span in between). The spans say where the record is, never its
// key (a user identity).
func TestRecordsCarryTheTrace(t *testing.T) {
	exp, tp, cfg, prod := tracedProducer(t, sdktrace.AlwaysSample())
	cons, err := kafka.NewClient(cfg, quiet(), "consumer", kgo.ConsumeTopics("traced"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	if err := kafka.EnsureTopics(context.Background(), prod, -1, []kafka.TopicSpec{{Name: "traced", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "evaluator.trigger")
	if err := kafka.ProduceSync(context.Background(), prod, &kgo.Record{Topic: "traced", Key: []byte("user-42"), Value: []byte("v"), Context: ctx}); err != nil {
		t.Fatal(err)
	}
	parent.End()
	r := consumeOne(t, cons)
	if sc := trace.SpanContextFromContext(r.Context); sc.TraceID() != parent.SpanContext().TraceID() {
		t.Fatalf("consumed record's context is in trace %s, want %s", sc.TraceID(), parent.SpanContext().TraceID())
	}
	_, process := kafka.ProcessSpan(r, tp.Tracer("test"), "dispatcher.deliver")
	process.End()

	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range exp.GetSpans().Snapshots() {
		spans[s.Name()] = s
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), "user-42") {
				t.Errorf("span %s carries the record key in %s", s.Name(), a.Key)
			}
		}
	}
	if len(spans) != 3 {
		t.Errorf("spans %v, want the producer's, the publish and the process span", keys(spans))
	}
	pub, proc := spans["traced publish"], spans["dispatcher.deliver"]
	if pub == nil || proc == nil {
		t.Fatalf("spans: %v", keys(spans))
	}
	if pub.Parent().SpanID() != parent.SpanContext().SpanID() || pub.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span: parent %s kind %s", pub.Parent().SpanID(), pub.SpanKind())
	}
	if proc.Parent().SpanID() != pub.SpanContext().SpanID() || proc.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("process span: parent %s kind %s, want the publish span %s", proc.Parent().SpanID(), proc.SpanKind(), pub.SpanContext().SpanID())
	}
	for _, c := range []struct {
		span sdktrace.ReadOnlySpan
		want []string
	}{
		{proc, []string{"messaging.system", "messaging.source.name", "messaging.kafka.source.partition", "messaging.kafka.message.offset"}},
		{pub, []string{"messaging.system", "messaging.destination.name", "messaging.kafka.destination.partition", "messaging.kafka.message.offset", "messaging.kafka.client_id"}},
	} {
		span, want := c.span, c.want
		attrs := map[string]string{}
		for _, a := range span.Attributes() {
			attrs[string(a.Key)] = a.Value.Emit()
		}
		for _, k := range want {
			if attrs[k] == "" {
				t.Errorf("%s span has no %s: %v", span.Name(), k, attrs)
			}
		}
		if attrs["messaging.kafka.message.offset"] != "0" {
			t.Errorf("%s span: offset %q, want 0", span.Name(), attrs["messaging.kafka.message.offset"])
		}
	}
}

// A record produced within a producer span (the span of the decision that
// emits it) has that span as its publish span: no "<topic> publish" span
// is made under it, and the hooks end it with where the record went. A
// record produced within a trace that is not sampled gets that trace's
// context, and no span at all.
func TestProducerSpansAndUnsampledTraces(t *testing.T) {
	exp, tp, _, prod := tracedProducer(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	if err := kafka.EnsureTopics(context.Background(), prod, -1, []kafka.TopicSpec{{Name: "out", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	ctx, decision := tp.Tracer("test").Start(context.Background(), "evaluator.trigger", trace.WithSpanKind(trace.SpanKindProducer))
	if err := kafka.ProduceSync(context.Background(), prod, &kgo.Record{Topic: "out", Value: []byte("v"), Context: ctx}); err != nil {
		t.Fatal(err)
	}
	got := exp.GetSpans()
	if len(got) != 1 || got[0].Name != "evaluator.trigger" {
		t.Fatalf("spans %v, want the decision's alone, ended by the hooks", got)
	}
	attrs := map[string]string{}
	for _, a := range got[0].Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["messaging.destination.name"] != "out" || attrs["messaging.kafka.message.offset"] != "0" {
		t.Errorf("decision span attributes %v, want where the record went", attrs)
	}
	decision.End()

	const unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	exp.Reset()
	upstream := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": unsampled})
	r := &kgo.Record{Topic: "out", Value: []byte("w"), Context: upstream}
	if err := kafka.ProduceSync(context.Background(), prod, r); err != nil {
		t.Fatal(err)
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Errorf("%d spans for a record of an unsampled trace", n)
	}
	if len(r.Headers) != 1 || string(r.Headers[0].Value) != unsampled {
		t.Errorf("headers %v, want the unsampled traceparent passed on", r.Headers)
	}
}

// A consumed record that becomes one produced record gets one span, the
// child of the consumed record's publish span, that is also the produced
// record's publish span: it starts when the processing began, says where
// the input was and where the output went, and ends when the broker has
// the output.
func TestProcessAndPublishSpan(t *testing.T) {
	exp, tp, _, prod := tracedProducer(t, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	if err := kafka.EnsureTopics(context.Background(), prod, -1, []kafka.TopicSpec{{Name: "out", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	upstream, producer := tp.Tracer("test").Start(context.Background(), "producer")
	in := &kgo.Record{Topic: "raw", Partition: 2, Offset: 41, Context: upstream}
	start := time.Now().Add(-time.Second)
	ctx, _ := kafka.ProcessAndPublishSpan(in, tp.Tracer("test"), "ingest.normalize", start, attribute.String("source", "kafka"))
	if err := kafka.ProduceSync(context.Background(), prod, &kgo.Record{Topic: "out", Value: []byte("v"), Context: ctx}); err != nil {
		t.Fatal(err)
	}
	producer.End()
	var got []tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name != "producer" {
			got = append(got, s)
		}
	}
	if len(got) != 1 || got[0].Name != "ingest.normalize" {
		t.Fatalf("spans %v, want ingest.normalize alone (no out publish span), ended by the hooks", got)
	}
	s := got[0]
	if s.SpanKind != trace.SpanKindProducer || s.Parent.SpanID() != producer.SpanContext().SpanID() || !s.StartTime.Equal(start) {
		t.Errorf("kind %s, parent %s (want %s), start %s (want %s)", s.SpanKind, s.Parent.SpanID(), producer.SpanContext().SpanID(), s.StartTime, start)
	}
	attrs := map[string]string{}
	for _, a := range s.Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	want := map[string]string{"source": "kafka", "messaging.source.name": "raw", "messaging.kafka.source.partition": "2", "hookstream.source.offset": "41",
		"messaging.destination.name": "out", "messaging.kafka.destination.partition": "0", "messaging.kafka.message.offset": "0"}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("%s = %q, want %q (attributes %v)", k, attrs[k], v, attrs)
		}
	}
}

// A record that arrives without a trace context starts a new trace at its
// process span.
func TestProcessSpanStartsATrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	_, span := kafka.ProcessSpan(&kgo.Record{Topic: "hookstream.events.raw", Partition: 3, Offset: 7}, tp.Tracer("test"), "ingest.normalize")
	span.End()
	got := exp.GetSpans()
	if len(got) != 1 || got[0].Parent.IsValid() || !got[0].SpanContext.IsValid() || got[0].SpanKind != trace.SpanKindConsumer {
		t.Fatalf("spans %v, want one root consumer span", got)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// BenchmarkHop measures what tracing adds to one Kafka hop of a sampled
// record, the hooks called directly (no broker): the publish span with the
// context written into the record's headers, then, on the consumer's side,
// the context read back and the process span. Compare sub-benchmarks in
// the same run: "off" is the no-op provider's pass-through.
func BenchmarkHop(b *testing.B) {
	for _, tc := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", noop.NewTracerProvider()},
		{"sampled", sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))},
	} {
		b.Run(tc.name, func(b *testing.B) {
			prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
			hooks := kafka.NewRecordTracerForBenchmark(tc.tp, prop, "bench")
			tr := tc.tp.Tracer("bench")
			ctx, root := tr.Start(context.Background(), "root")
			defer root.End()
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				r := &kgo.Record{Topic: "hookstream.triggers", Value: []byte("v"), Context: ctx}
				hooks.OnProduceRecordBuffered(r)
				hooks.OnProduceRecordUnbuffered(r, nil)
				in := &kgo.Record{Topic: r.Topic, Headers: r.Headers, Offset: int64(i)}
				hooks.OnFetchRecordBuffered(in)
				_, span := kafka.ProcessSpan(in, tr, "dispatcher.deliver")
				span.End()
			}
		})
	}
}

// With tracing off (the no-op provider) there are no spans, and a record
// gets trace headers only when it is produced within a trace context, such
// as the one a consumed record arrived with from a traced producer, which
// is so passed on.
func TestTracingOffPassesTheContextOn(t *testing.T) {
	setTracing(t, noop.NewTracerProvider())
	c := kafkatest.New(t)
	cfg := c.Config()
	prod, err := kafka.NewClient(cfg, quiet(), "producer")
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	cons, err := kafka.NewClient(cfg, quiet(), "consumer", kgo.ConsumeTopics("plain"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	if err := kafka.EnsureTopics(context.Background(), prod, -1, []kafka.TopicSpec{{Name: "plain", Partitions: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := kafka.ProduceSync(context.Background(), prod, &kgo.Record{Topic: "plain", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if r := consumeOne(t, cons); len(r.Headers) != 0 || r.Context != nil {
		t.Fatalf("headers %v, context %v with tracing off and no trace", r.Headers, r.Context)
	}

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	upstream := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	if err := kafka.ProduceSync(context.Background(), prod, &kgo.Record{Topic: "plain", Value: []byte("w"), Context: upstream}); err != nil {
		t.Fatal(err)
	}
	r := consumeOne(t, cons)
	if len(r.Headers) != 1 || string(r.Headers[0].Value) != tp {
		t.Fatalf("headers %v, want the producer's traceparent %s", r.Headers, tp)
	}
	if sc := trace.SpanContextFromContext(r.Context); sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("consumed record's context %v, want the producer's trace", sc)
	}
}
