package kafka

import (
	"context"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ProcessSpan starts the span of processing a consumed record, the child of
// its receive span (which continues the producer's trace from the record's
// headers). Outputs produced with the returned context as their Context
// continue the trace. End the span when done.
func ProcessSpan(r *kgo.Record, tracer trace.Tracer, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	return tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// Tracer returns the tracer of a component from the global provider.
func Tracer(component string) trace.Tracer {
	return otel.GetTracerProvider().Tracer("github.com/hookstream/hookstream/" + component)
}

// Attributes of the Kafka spans (OpenTelemetry semantic conventions 1.18,
// as franz-go's kotel writes them).
const (
	attrSystem        = attribute.Key("messaging.system")
	attrDestination   = attribute.Key("messaging.destination.name")
	attrSource        = attribute.Key("messaging.source.name")
	attrDestPartition = attribute.Key("messaging.kafka.destination.partition")
	attrSrcPartition  = attribute.Key("messaging.kafka.source.partition")
	attrOffset        = attribute.Key("messaging.kafka.message.offset")
	attrClientID      = attribute.Key("messaging.kafka.client_id")
)

// recordTracer is a client's hooks that carry the W3C trace context in
// record headers and make a "<topic> publish" span per produced record and
// a "<topic> receive" span per fetched record, as franz-go's kotel tracer
// does (its RecordCarrier is used), at a fraction of its cost: span names
// and constant attributes are made once per topic, and the attributes are
// those that say where the record is (topic, partition, offset) and which
// client moved it. Record keys (user identities) are never recorded.
//
// With tracing off (passthrough), it makes no spans: it only carries the
// trace context a record arrived with (from a traced producer) on to the
// records produced within it, so that the webhook still gets the
// producer's traceparent.
type recordTracer struct {
	tracer      trace.Tracer
	prop        propagation.TextMapPropagator
	clientID    attribute.KeyValue
	passthrough bool
	topics      sync.Map // topic → *topicSpans
}

type topicSpans struct {
	publish, receive string
	publishOpts      []trace.SpanStartOption // read-only
	source           attribute.KeyValue
}

var consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)

func newRecordTracer(tp trace.TracerProvider, prop propagation.TextMapPropagator, clientID string) *recordTracer {
	_, off := tp.(noop.TracerProvider)
	return &recordTracer{
		tracer:      tp.Tracer("github.com/hookstream/hookstream/kafka"),
		prop:        prop,
		clientID:    attrClientID.String(clientID),
		passthrough: off,
	}
}

func (t *recordTracer) spans(topic string) *topicSpans {
	if s, ok := t.topics.Load(topic); ok {
		return s.(*topicSpans)
	}
	s := &topicSpans{
		publish: topic + " publish", receive: topic + " receive",
		publishOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attrSystem.String("kafka"), attrDestination.String(topic), t.clientID)},
		source: attrSource.String(topic),
	}
	v, _ := t.topics.LoadOrStore(topic, s)
	return v.(*topicSpans)
}

// OnProduceRecordBuffered starts the record's publish span, a child of the
// span in its Context, and writes the span's context into its headers.
func (t *recordTracer) OnProduceRecordBuffered(r *kgo.Record) {
	ctx := r.Context
	if t.passthrough {
		if ctx != nil && (trace.SpanContextFromContext(ctx).IsValid() || baggage.FromContext(ctx).Len() > 0) {
			t.prop.Inject(ctx, kotel.NewRecordCarrier(r))
		}
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	s := t.spans(r.Topic)
	ctx, span := t.tracer.Start(ctx, s.publish, s.publishOpts...)
	if span.SpanContext().IsValid() {
		t.prop.Inject(ctx, kotel.NewRecordCarrier(r))
	}
	// Always replaced, so that the unbuffered hook never ends a span of
	// the caller's.
	r.Context = ctx
}

// OnProduceRecordUnbuffered ends the publish span with where the record
// went, or its error.
func (t *recordTracer) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if t.passthrough {
		return
	}
	span := trace.SpanFromContext(r.Context)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attrDestPartition.Int(int(r.Partition)), attrOffset.Int64(r.Offset))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// OnFetchRecordBuffered starts the record's receive span, continuing the
// trace in its headers; the record's Context carries it to the handler.
func (t *recordTracer) OnFetchRecordBuffered(r *kgo.Record) {
	if t.passthrough && len(r.Headers) == 0 {
		return
	}
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	ctx = t.prop.Extract(ctx, kotel.NewRecordCarrier(r))
	if t.passthrough {
		r.Context = ctx
		return
	}
	s := t.spans(r.Topic)
	r.Context, _ = t.tracer.Start(ctx, s.receive, consumerKind, trace.WithAttributes(
		attrSystem.String("kafka"), s.source, attrSrcPartition.Int(int(r.Partition)), attrOffset.Int64(r.Offset), t.clientID))
}

// OnFetchRecordUnbuffered ends the receive span when the record is polled.
func (t *recordTracer) OnFetchRecordUnbuffered(r *kgo.Record, _ bool) {
	if !t.passthrough {
		trace.SpanFromContext(r.Context).End()
	}
}

var (
	_ kgo.HookProduceRecordBuffered   = (*recordTracer)(nil)
	_ kgo.HookProduceRecordUnbuffered = (*recordTracer)(nil)
	_ kgo.HookFetchRecordBuffered     = (*recordTracer)(nil)
	_ kgo.HookFetchRecordUnbuffered   = (*recordTracer)(nil)
)
