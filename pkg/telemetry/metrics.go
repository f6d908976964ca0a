// Package telemetry sets up OpenTelemetry metrics (exported in Prometheus
// format on /metrics) and logging for a process.
package telemetry

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics is a process's meter provider and its /metrics handler.
type Metrics struct {
	Provider *sdkmetric.MeterProvider
	Handler  http.Handler
}

// NewMetrics returns a meter provider whose instruments, together with the Go
// runtime and process collectors, are served in Prometheus text format by
// Handler. Each call has its own registry, so tests may run several.
func NewMetrics() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	// Shared libraries (the Kafka consume loop, kotel) use the global one.
	otel.SetMeterProvider(mp)
	return &Metrics{Provider: mp, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}, nil
}

// Meter returns the meter of a component.
func (m *Metrics) Meter(component string) metric.Meter {
	return m.Provider.Meter("github.com/hookstream/hookstream/" + component)
}
