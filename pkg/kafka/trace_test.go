package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
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
// of the producer's span; the consumer's receive span continues that trace
// and is the record's Context. The spans say where the record is, never
// its key (a user identity).
func TestRecordsCarryTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	setTracing(t, tp)
	c := kafkatest.New(t)
	cfg := c.Config()
	prod, err := kafka.NewClient(cfg, quiet(), "producer")
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
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
	pub, recv := spans["traced publish"], spans["traced receive"]
	if pub == nil || recv == nil || spans["dispatcher.deliver"] == nil {
		t.Fatalf("spans: %v", exp.GetSpans())
	}
	if pub.Parent().SpanID() != parent.SpanContext().SpanID() || pub.SpanKind() != trace.SpanKindProducer {
		t.Errorf("publish span: parent %s kind %s", pub.Parent().SpanID(), pub.SpanKind())
	}
	if recv.Parent().SpanID() != pub.SpanContext().SpanID() || recv.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("receive span: parent %s kind %s, want the publish span %s", recv.Parent().SpanID(), recv.SpanKind(), pub.SpanContext().SpanID())
	}
	if spans["dispatcher.deliver"].Parent().SpanID() != recv.SpanContext().SpanID() {
		t.Errorf("process span is not a child of the receive span")
	}
	attrs := map[string]string{}
	for _, a := range recv.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for _, k := range []string{"messaging.system", "messaging.source.name", "messaging.kafka.source.partition", "messaging.kafka.message.offset", "messaging.kafka.client_id"} {
		if attrs[k] == "" {
			t.Errorf("receive span has no %s: %v", k, attrs)
		}
	}
	pubAttrs := map[string]bool{}
	for _, a := range pub.Attributes() {
		pubAttrs[string(a.Key)] = true
	}
	for _, k := range []string{"messaging.destination.name", "messaging.kafka.destination.partition", "messaging.kafka.message.offset"} {
		if !pubAttrs[k] {
			t.Errorf("publish span has no %s", k)
		}
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
