package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/telemetry"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// pipelineRun is one measured run of the whole pipeline.
type pipelineRun struct {
	rate  float64       // events/s from the first produce to the last webhook
	cpu   time.Duration // CPU time of the whole process per event over that time
	alloc float64       // bytes allocated per event over that time (steady on a noisy machine)
}

// pipelineRate runs `dev` in-process with the given tracing, sends n raw
// events that each cause one webhook to a local receiver, and measures from
// producing them to the last webhook arriving. The dev process is stopped
// before it returns, so that runs do not share the machine with the idle
// services of earlier ones.
func pipelineRate(b *testing.B, n int, tracing telemetry.TracingOptions) pipelineRun {
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
	addr, stop := startBenchDev(b, m, process.Options{Tracing: tracing})
	defer stop()
	ctx := context.Background()
	// The events come from outside Hookstream (the customer's producer):
	// their client's own spans are not part of the pipeline's cost.
	cl, err := kafka.NewUntracedClient(kafkatest.Config(addr), nilLogger(), "bench", kgo.ProducerLinger(5*time.Millisecond))
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
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuTime(b)
	start := time.Now()
	if err := kafka.ProduceSync(ctx, cl, recs...); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d webhooks arrived", got.Load(), n)
	}
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	runtime.ReadMemStats(&m1)
	return pipelineRun{rate: float64(n) / elapsed.Seconds(), cpu: cpu / time.Duration(n), alloc: float64(m1.TotalAlloc-m0.TotalAlloc) / float64(n)}
}

// startBenchDev starts `hookstream dev` in the test's process with manifests, on
// free ports and in memory, and returns the broker's address and a
// function that stops it and waits until it has.
func startBenchDev(b *testing.B, manifests string, opts process.Options) (string, func()) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(manifests), 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	exited := make(chan error, 1)
	var addr string
	go func() {
		exited <- dev([]string{"--ephemeral", "--kafka-port", "0", "--listen", "127.0.0.1:0", "-f", dir, "--log.level", "error"}, io.Discard, io.Discard, devHooks{
			ctx: ctx, ready: ready, options: opts,
			started: func(_ *process.Process, a string) { addr = a },
		})
	}()
	stop := func() {
		cancel()
		if err := <-exited; err != nil {
			b.Errorf("dev: %v", err)
		}
	}
	select {
	case <-ready:
	case err := <-exited:
		b.Fatalf("dev: %v", err)
	case <-time.After(60 * time.Second):
		stop()
		b.Fatal("dev not ready in 60s")
	}
	return addr, stop
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPipelineTracing measures the whole pipeline (ingest, evaluator,
// dispatcher, webhook to a local receiver) with tracing off, with every
// span sampled, and with 10 % of the traces sampled (the production
// setting of docs/operations.md), to an exporter that drops the spans
// (through the batch span processor, as in production), in the same run.
// Each iteration is one run of each, in an order that rotates from one
// iteration to the next so that a drift of the machine's load favours none;
// the medians of the rates, of the CPU time per event and of the
// iterations' overheads over tracing off are reported. On a shared machine,
// trust the CPU figures more than the rates.
func BenchmarkPipelineTracing(b *testing.B) {
	const n = 20000
	configs := []struct {
		name    string
		tracing telemetry.TracingOptions
	}{
		{"off", telemetry.TracingOptions{}},
		{"100%", telemetry.TracingOptions{Exporter: &countingExporter{}, Sampler: sdktrace.AlwaysSample()}},
		{"10%", telemetry.TracingOptions{Exporter: &countingExporter{}, Sampler: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.1))}},
	}
	// HOOKSTREAM_BENCH_TRACING=off|100%|10% runs one configuration alone
	// (to profile it: -cpuprofile).
	if only := os.Getenv("HOOKSTREAM_BENCH_TRACING"); only != "" {
		k := slices.IndexFunc(configs, func(c struct {
			name    string
			tracing telemetry.TracingOptions
		}) bool {
			return c.name == only
		})
		if k < 0 {
			b.Fatalf("HOOKSTREAM_BENCH_TRACING=%s: want off, 100%% or 10%%", only)
		}
		configs = configs[k : k+1]
	}
	rates := make([][]float64, len(configs))
	cpus := make([][]float64, len(configs))
	overheads := make([][]float64, len(configs))
	cpuOverheads := make([][]float64, len(configs))
	allocs := make([][]float64, len(configs))
	for i := 0; i < b.N; i++ {
		runs := make([]pipelineRun, len(configs))
		for k := range configs {
			c := (i + k) % len(configs)
			runs[c] = pipelineRate(b, n, configs[c].tracing)
		}
		line := fmt.Sprintf("iteration %d:", i)
		for c, r := range runs {
			rates[c] = append(rates[c], r.rate)
			cpus[c] = append(cpus[c], float64(r.cpu.Nanoseconds())/1e3)
			allocs[c] = append(allocs[c], r.alloc)
			line += fmt.Sprintf(" %s %.0f events/s (%s CPU/event, %.1f KB/event)", configs[c].name, r.rate, r.cpu.Round(100*time.Nanosecond), r.alloc/1024)
			if c > 0 {
				overheads[c] = append(overheads[c], 1-r.rate/runs[0].rate)
				cpuOverheads[c] = append(cpuOverheads[c], float64(r.cpu)/float64(runs[0].cpu)-1)
				line += fmt.Sprintf(" [overhead %.2f, CPU %+.2f]", 1-r.rate/runs[0].rate, float64(r.cpu)/float64(runs[0].cpu)-1)
			}
			line += ";"
		}
		b.Log(line)
	}
	for c, cfg := range configs {
		if e, ok := cfg.tracing.Exporter.(*countingExporter); ok {
			// Spans exported per event, every run of the configuration
			// together (the last batch of a run may be cut off at its stop).
			b.ReportMetric(float64(e.n.Load())/float64(n*b.N), "spans/event-"+cfg.name)
		}
		b.ReportMetric(median(rates[c]), "events/s-tracing-"+cfg.name)
		b.ReportMetric(median(cpus[c]), "cpu-us/event-"+cfg.name)
		b.ReportMetric(median(allocs[c]), "alloc-B/event-"+cfg.name)
		if c > 0 {
			b.ReportMetric(median(overheads[c]), "overhead-"+cfg.name)
			b.ReportMetric(median(cpuOverheads[c]), "cpu-overhead-"+cfg.name)
		}
	}
}

// countingExporter drops the spans it is given, as the no-op exporter
// does, and counts them.
type countingExporter struct{ n atomic.Int64 }

func (e *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.n.Add(int64(len(spans)))
	return nil
}

func (*countingExporter) Shutdown(context.Context) error { return nil }

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
