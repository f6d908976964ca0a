package spanattr

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Set sets what the pooled list holds on the span, and a list taken
// from the pool afterwards starts empty: no attribute leaks into another
// span.
func TestSet(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	for i, want := range []string{"a", "b"} {
		_, span := tp.Tracer("t").Start(context.Background(), "s")
		a := Get()
		if len(*a) != 0 {
			t.Fatalf("span %d: list from the pool holds %v", i, *a)
		}
		*a = append(*a, attribute.String("campaign", want), attribute.Int("attempt", i))
		Set(span, a)
		span.End()
		got := exp.GetSpans()[i].Attributes
		if len(got) != 2 || got[0].Value.AsString() != want || got[1].Value.AsInt64() != int64(i) {
			t.Errorf("span %d attributes %v", i, got)
		}
	}
}

// A list deferred in a context comes back from Deferred, for the one call
// that sets it with the rest; a context without one gives an empty list.
func TestDeferred(t *testing.T) {
	a := Get()
	*a = append(*a, attribute.String("campaign", "cart"))
	ctx := Defer(context.Background(), a)
	if got := Deferred(ctx); got != a || len(*got) != 1 {
		t.Fatalf("Deferred gave %v, want the deferred list", got)
	}
	for _, ctx := range []context.Context{context.Background(), nil} {
		if got := Deferred(ctx); got == nil || len(*got) != 0 {
			t.Fatalf("Deferred without a deferred list gave %v, want an empty list", got)
		}
	}
}
