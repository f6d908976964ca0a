package telemetry

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a process's tracer provider.
type Tracing struct {
	// Provider is a no-op provider when tracing is off, so that spans cost
	// nothing measurable.
	Provider trace.TracerProvider
	// Enabled reports whether spans are recorded and exported.
	Enabled  bool
	shutdown func(context.Context) error
}

// TracingOptions override what the standard OTEL_* environment says.
type TracingOptions struct {
	// Exporter, when set, receives the spans (tests and benchmarks).
	Exporter sdktrace.SpanExporter
	// Sync exports each span as it ends instead of in batches (tests that
	// read spans right away).
	Sync bool
	// Sampler, when set, replaces the one OTEL_TRACES_SAMPLER names.
	Sampler sdktrace.Sampler
}

// NewTracing sets up tracing for a process named service from the
// standard environment: tracing is on when OTEL_TRACES_EXPORTER is "otlp",
// or when it is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; spans go over OTLP/HTTP
// (OTEL_EXPORTER_OTLP_PROTOCOL grpc is not supported: use http/protobuf);
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose the sampling
// (default parentbased_always_on); OTEL_SERVICE_NAME overrides the service
// name. It also installs the W3C trace-context and baggage propagators and
// the provider as the global ones, for the HTTP and Redis instrumentation.
func NewTracing(ctx context.Context, service string, opts TracingOptions) (*Tracing, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	exporter := opts.Exporter
	if exporter == nil && enabledByEnv() {
		if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); strings.HasPrefix(p, "grpc") {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: only http/protobuf is supported", p)
		}
		var err error
		if exporter, err = otlptracehttp.New(ctx); err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
	}
	if exporter == nil {
		t := &Tracing{Provider: noop.NewTracerProvider(), shutdown: func(context.Context) error { return nil }}
		otel.SetTracerProvider(t.Provider)
		return t, nil
	}
	name := service
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		name = n
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		return nil, err
	}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if opts.Sync {
		topts = append(topts, sdktrace.WithSyncer(exporter))
	} else {
		topts = append(topts, sdktrace.WithBatcher(exporter))
	}
	if opts.Sampler != nil {
		topts = append(topts, sdktrace.WithSampler(opts.Sampler))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	otel.SetTracerProvider(tp)
	return &Tracing{Provider: tp, Enabled: true, shutdown: tp.Shutdown}, nil
}

func enabledByEnv() bool {
	switch strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "otlp":
		return true
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	}
	return false
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// Tracer returns the tracer of a component.
func (t *Tracing) Tracer(component string) trace.Tracer {
	return t.Provider.Tracer("github.com/hookstream/hookstream/" + component)
}
