package telemetry

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Attrs is a list of span attributes from a pool, for SetAttrs: a span's
// SetAttributes copies what it is given, so the list passed to it is garbage
// the moment it returns, and at 100 % sampling tracing's cost is mostly
// allocation and its garbage collection. Append to it, then hand it to
// SetAttrs, which gives it back.
func Attrs() *[]attribute.KeyValue { return attrPool.Get().(*[]attribute.KeyValue) }

// SetAttrs sets the attributes a holds on span, in one call (each call
// grows the span's own list), and returns a to the pool.
func SetAttrs(span trace.Span, a *[]attribute.KeyValue) {
	span.SetAttributes(*a...)
	if cap(*a) > 32 {
		return
	}
	clear(*a) // no strings kept alive
	*a = (*a)[:0]
	attrPool.Put(a)
}

var attrPool = sync.Pool{New: func() any { a := make([]attribute.KeyValue, 0, 10); return &a }}
