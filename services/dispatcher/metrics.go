package dispatcher

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the dispatcher's instruments (docs/dispatcher.md lists them).
type metrics struct {
	setsMu sync.RWMutex
	sets   map[labels]metric.MeasurementOption

	attempts   metric.Int64Counter
	profiles   metric.Int64Counter
	suppressed metric.Int64Counter
	delayed    metric.Int64Counter
	latency    metric.Float64Histogram
}

// labels are up to three key-value pairs.
type labels [6]string

// opts returns the attribute set of key-value pairs kv (at most three
// pairs), built once: the label values (campaigns, webhooks, outcomes,
// reasons) are few.
func (m *metrics) opts(kv ...string) metric.MeasurementOption {
	var key labels
	copy(key[:], kv)
	m.setsMu.RLock()
	o, ok := m.sets[key]
	m.setsMu.RUnlock()
	if ok {
		return o
	}
	attrs := make([]attribute.KeyValue, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		attrs = append(attrs, attribute.String(kv[i], kv[i+1]))
	}
	o = metric.WithAttributeSet(attribute.NewSet(attrs...))
	m.setsMu.Lock()
	m.sets[key] = o
	m.setsMu.Unlock()
	return o
}

func newMetrics(meter metric.Meter, d *Dispatcher) (*metrics, error) {
	m := &metrics{sets: map[labels]metric.MeasurementOption{}}
	var err error
	if m.attempts, err = meter.Int64Counter("hookstream_delivery_attempts_total",
		metric.WithDescription("Webhook requests made, by campaign, webhook and outcome (delivered, retrying, failed).")); err != nil {
		return nil, err
	}
	if m.profiles, err = meter.Int64Counter("hookstream_delivery_profiles_total",
		metric.WithDescription("Profiles in webhook requests, by campaign and outcome (delivered, retrying, failed); a batch counts each profile.")); err != nil {
		return nil, err
	}
	if m.suppressed, err = meter.Int64Counter("hookstream_suppressed_total",
		metric.WithDescription("Profiles not sent, by campaign and reason.")); err != nil {
		return nil, err
	}
	if m.delayed, err = meter.Int64Counter("hookstream_dispatch_delayed_total",
		metric.WithDescription("Profiles handed to the timer service to be sent later, by campaign and reason (quiet_hours, throttled, rate_limited, circuit_open, busy, leased, stopping).")); err != nil {
		return nil, err
	}
	if m.latency, err = meter.Float64Histogram("hookstream_delivery_latency_seconds",
		metric.WithDescription("Webhook attempt latency, by webhook."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	inFlight, err := meter.Int64ObservableGauge("hookstream_webhook_in_flight",
		metric.WithDescription("Requests in flight, by webhook."))
	if err != nil {
		return nil, err
	}
	queued, err := meter.Int64ObservableGauge("hookstream_webhook_queued",
		metric.WithDescription("Requests waiting in the webhook's queue, by webhook."))
	if err != nil {
		return nil, err
	}
	circuit, err := meter.Int64ObservableGauge("hookstream_webhook_circuit_state",
		metric.WithDescription("Circuit breaker state by webhook: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return nil, err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		d.mu.Lock()
		eps := make([]*endpoint, 0, len(d.endpoints))
		for _, e := range d.endpoints {
			eps = append(eps, e)
		}
		d.mu.Unlock()
		for _, e := range eps {
			n, q, st := e.stats()
			attrs := m.opts("webhook", e.name)
			o.ObserveInt64(inFlight, int64(n), attrs)
			o.ObserveInt64(queued, int64(q), attrs)
			o.ObserveInt64(circuit, int64(st), attrs)
		}
		return nil
	}, inFlight, queued, circuit)
	return m, err
}
