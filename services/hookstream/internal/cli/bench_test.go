package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/telemetry"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// pipelineRate runs `dev` in-process and returns events/s from producing n
// raw events to the last webhook arriving, with the given tracing.
func pipelineRate(b *testing.B, n int, tracing telemetry.TracingOptions) float64 {
	var got atomic.Int64
	done := make(chan struct{})
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if got.Add(1) == int64(n) {
			close(done)
		}
	}))
	defer recv.Close()
	m := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: r}
spec: {url: %s/hook, maxInFlight: 64}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: c}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: E, where: [{property: n, op: gte, value: 0}]}}
  what: {payload: {profileVariables: [Identity, Event_properties]}}
`, recv.URL)
	d := startInProcessDev(b, m, process.Options{Tracing: tracing})
	ctx := context.Background()
	addr := d.kafkaAddr
	cl, err := kafka.NewClient(kafkatest.Config(addr), nilLogger(), "bench", kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		u := fmt.Sprintf("u-%d", i%5000)
		recs[i] = &kgo.Record{Topic: "hookstream.events.raw", Key: []byte(u),
			Value: []byte(fmt.Sprintf(`{"type":"event","identity":"%s","name":"E","properties":{"n":%d},"id":"e-%d"}`, u, i, i))}
	}
	start := time.Now()
	if err := kafka.ProduceSync(ctx, cl, recs...); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d webhooks arrived", got.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkPipelineTracing measures the whole pipeline (ingest, evaluator,
// dispatcher, webhook to a local receiver) with tracing off and with every
// span sampled to an exporter that drops them, in the same run.
func BenchmarkPipelineTracing(b *testing.B) {
	const n = 20000
	// Each iteration measures off and on back to back; the machine is
	// shared and noisy, so the median of the paired overheads is reported.
	var offs, ons, overheads []float64
	for i := 0; i < b.N; i++ {
		off := pipelineRate(b, n, telemetry.TracingOptions{})
		on := pipelineRate(b, n, telemetry.TracingOptions{Exporter: tracetest.NewNoopExporter(), Sampler: sdktrace.AlwaysSample()})
		offs, ons, overheads = append(offs, off), append(ons, on), append(overheads, 1-on/off)
		b.Logf("pair %d: off %.0f events/s, 100%% %.0f events/s, overhead %.2f", i, off, on, 1-on/off)
	}
	b.ReportMetric(median(offs), "events/s-tracing-off")
	b.ReportMetric(median(ons), "events/s-tracing-100%")
	b.ReportMetric(median(overheads), "overhead-median")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
