// Package spanattr lends the attribute lists given to a span's
// SetAttributes, which copies them: at 100 % sampling tracing's cost is
// mostly allocation and its garbage collection. It depends on the
// OpenTelemetry API only, so that any package may use it.
package spanattr

import (
	"context"
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

type deferredKey struct{}

// Defer returns ctx carrying a (from Get), attributes of the producer span
// in ctx that wait for those the Kafka hook adds when the broker has the
// record (where it went): the hook sets them all in one call (Deferred),
// so that the span's list is allocated once instead of grown. ctx must be
// the Context of one record only.
func Defer(ctx context.Context, a *[]attribute.KeyValue) context.Context {
	return context.WithValue(ctx, deferredKey{}, a)
}

// Deferred returns the list Defer put into ctx, for the caller to append
// to and Set; or an empty one from the pool.
func Deferred(ctx context.Context) *[]attribute.KeyValue {
	if ctx != nil {
		if a, ok := ctx.Value(deferredKey{}).(*[]attribute.KeyValue); ok {
			return a
		}
	}
	return Get()
}
