package kafka

import (
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// NewRecordTracerForBenchmark gives the external tests the record hooks.
func NewRecordTracerForBenchmark(tp trace.TracerProvider, prop propagation.TextMapPropagator, clientID string) *recordTracer {
	return newRecordTracer(tp, prop, clientID)
}
