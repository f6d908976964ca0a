package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
)

// ProcessSpan starts the span of processing a consumed record: a consumer
// span that continues the trace the record's headers carry (the child of
// its publish span), or a new trace when the record carries none. It says
// where the record is (topic, partition, offset), never its key. Outputs
// produced with the returned context as their Context continue the trace.
// End the span when done.
//
// There is no separate receive span per fetched record (kotel's tracer
// makes one): its topic, partition and offset are those of the publish
// span it would be the child of, and its time is the moment the record was
// polled. A record's trace gets a span in a consumer only where the
// consumer does something with it, which is the process span.
func ProcessSpan(r *kgo.Record, tracer trace.Tracer, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	return ProcessSpanSince(r, tracer, name, time.Time{}, attrs...)
}

// ProcessSpanSince is ProcessSpan for processing that began at start (now
// when start is zero).
func ProcessSpanSince(r *kgo.Record, tracer trace.Tracer, name string, start time.Time, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	opts := [2]trace.SpanStartOption{consumerKind}
	o := opts[:1]
	if !start.IsZero() {
		o = append(o, trace.WithTimestamp(start))
	}
	ctx, span := tracer.Start(ctx, name, o...)
	if span.IsRecording() {
		a := spanattr.Get()
		*a = append(*a, attrKafka, attrSource.String(r.Topic), attrSrcPartition.Int(int(r.Partition)), attrOffset.Int64(r.Offset))
		*a = append(*a, attrs...)
		spanattr.Set(span, a)
	}
	return ctx, span
}

// ProcessAndPublishSpan starts the span of processing a consumed record r
// that emits exactly one record: a producer span, the child of r's publish
// span (or the root of a new trace), that is also the emitted record's
// publish span. Produce that record with the returned context as its
// Context: the Kafka hook then makes no publish span of its own, and ends
// this one when the broker has the record, with where it went
// (messaging.destination.name, messaging.kafka.destination.partition,
// messaging.kafka.message.offset). Where r was is recorded as
// messaging.source.name, messaging.kafka.source.partition and
// hookstream.source.offset. start is when the processing began (a stage
// that knows only afterwards how many records it emits starts the span
// then). One span per record instead of two (process, then publish) on the
// hot path; a record that leads to several, or none, gets ProcessSpan and
// its outputs their own publish spans.
func ProcessAndPublishSpan(r *kgo.Record, tracer trace.Tracer, name string, start time.Time, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, span := tracer.Start(ctx, name, producerKind, trace.WithTimestamp(start))
	if span.IsRecording() {
		a := spanattr.Get()
		*a = append(*a, attrSource.String(r.Topic), attrSrcPartition.Int(int(r.Partition)), attrSrcOffset.Int64(r.Offset))
		*a = append(*a, attrs...)
		ctx = spanattr.Defer(ctx, a) // set with the destination's, by the hook
	}
	return ctx, span
}

// Tracing reports whether spans can record: the global tracer provider is
// the SDK's (telemetry.NewTracing installs it when tracing is on, and a
// no-op provider when it is off; before either, OpenTelemetry's default
// records nothing and propagates nothing). A stage that starts a trace of
// its own (ingest, for records that arrive without one) asks it once, so
// that with tracing off it costs nothing.
func Tracing() bool {
	_, on := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	return on
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
	// attrSrcOffset is the consumed record's offset on a span that also
	// publishes (ProcessAndPublishSpan), where messaging.kafka.message.offset
	// is the produced record's.
	attrSrcOffset = attribute.Key("hookstream.source.offset")
)

var attrKafka = attrSystem.String("kafka")

// recordTracer is a client's hooks that carry the W3C trace context in
// record headers (through franz-go kotel's RecordCarrier) and make a
// "<topic> publish" span per produced record, as kotel's tracer does, at a
// fraction of its cost: span names and constant attributes are made once
// per topic, and the attributes are those that say where the record is
// (topic, partition, offset) and which client moved it. Record keys (user
// identities) are never recorded. A fetched record gets the context its
// headers carry, and no span of its own: see ProcessSpan.
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
	publish     string
	destination attribute.KeyValue
}

// tracerName is the instrumentation scope of the hooks' own spans.
const tracerName = "github.com/hookstream/hookstream/kafka"

var (
	consumerKind = trace.WithSpanKind(trace.SpanKindConsumer)
	producerKind = trace.WithSpanKind(trace.SpanKindProducer)
)

func newRecordTracer(tp trace.TracerProvider, prop propagation.TextMapPropagator, clientID string) *recordTracer {
	_, off := tp.(noop.TracerProvider)
	return &recordTracer{
		tracer:      tp.Tracer(tracerName),
		prop:        prop,
		clientID:    attrClientID.String(clientID),
		passthrough: off,
	}
}

func (t *recordTracer) spans(topic string) *topicSpans {
	if s, ok := t.topics.Load(topic); ok {
		return s.(*topicSpans)
	}
	s := &topicSpans{publish: topic + " publish", destination: attrDestination.String(topic)}
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
	// The context is passed on as it is, with no publish span, within a
	// trace that is not sampled (a publish span would not record either:
	// the samplers follow the parent's decision), and when the caller's
	// span is this record's producer span (the span of the decision that
	// emits it), which is then the record's publish span, ended by
	// OnProduceRecordUnbuffered: a span fewer per record on the hot path.
	span := trace.SpanFromContext(ctx)
	if sc := span.SpanContext(); sc.IsValid() && !sc.IsSampled() || isProducerSpan(span) {
		t.prop.Inject(ctx, kotel.NewRecordCarrier(r))
		return
	}
	s := t.spans(r.Topic)
	ctx, span = t.tracer.Start(ctx, s.publish, producerKind)
	if span.SpanContext().IsValid() {
		t.prop.Inject(ctx, kotel.NewRecordCarrier(r))
	}
	// Replaced, so that the unbuffered hook never ends a span of the
	// caller's other than a producer span.
	r.Context = ctx
}

// isProducerSpan reports whether span records and is of kind producer.
func isProducerSpan(span trace.Span) bool {
	ro, ok := span.(sdktrace.ReadOnlySpan)
	return ok && span.IsRecording() && ro.SpanKind() == trace.SpanKindProducer
}

// OnProduceRecordUnbuffered ends the publish span (the hook's own, or the
// caller's producer span) with where the record went, or its error. The
// attributes are set in one call, when all are known: each call grows the
// span's attribute list. The client id goes on the hook's own spans only:
// a decision's span has attributes of its own, and more than eight make
// the SDK's end-of-span deduplication build a larger map.
func (t *recordTracer) OnProduceRecordUnbuffered(r *kgo.Record, err error) {
	if t.passthrough {
		return
	}
	span := trace.SpanFromContext(r.Context)
	if !span.IsRecording() {
		return
	}
	s := t.spans(r.Topic)
	a := spanattr.Deferred(r.Context) // the decision's own attributes, if it deferred them
	*a = append(*a, attrKafka, s.destination, attrDestPartition.Int(int(r.Partition)), attrOffset.Int64(r.Offset))
	if ro, ok := span.(sdktrace.ReadOnlySpan); ok && ro.InstrumentationScope().Name == tracerName {
		*a = append(*a, t.clientID)
	}
	spanattr.Set(span, a)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// OnFetchRecordBuffered gives the record the trace context its headers
// carry, as its Context: the handler's process span (ProcessSpan) continues
// it, and records produced within it carry it on. It makes no span.
func (t *recordTracer) OnFetchRecordBuffered(r *kgo.Record) {
	if len(r.Headers) == 0 {
		return
	}
	ctx := r.Context
	if ctx == nil {
		ctx = context.Background()
	}
	r.Context = t.prop.Extract(ctx, kotel.NewRecordCarrier(r))
}

var (
	_ kgo.HookProduceRecordBuffered   = (*recordTracer)(nil)
	_ kgo.HookProduceRecordUnbuffered = (*recordTracer)(nil)
	_ kgo.HookFetchRecordBuffered     = (*recordTracer)(nil)
)
