package kafka

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
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
