// Package spanattr lends the attribute lists given to a span's
// SetAttributes, which copies them: at 100 % sampling tracing's cost is
// mostly allocation and its garbage collection. It depends on the
// OpenTelemetry API only, so that any package may use it.
package spanattr

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Get returns an empty list of span attributes from a pool, for Set: a
// span's SetAttributes copies what it is given, so the list passed to it is
// garbage the moment it returns. Append to it, then hand it to Set, which
// gives it back.
func Get() *[]attribute.KeyValue { return attrPool.Get().(*[]attribute.KeyValue) }

// Set sets the attributes a holds on span, in one call (each call grows
// the span's own list), and returns a to the pool.
func Set(span trace.Span, a *[]attribute.KeyValue) {
	span.SetAttributes(*a...)
	if cap(*a) > 32 {
		return
	}
	clear(*a) // no strings kept alive
	*a = (*a)[:0]
	attrPool.Put(a)
}

var attrPool = sync.Pool{New: func() any { a := make([]attribute.KeyValue, 0, 10); return &a }}
