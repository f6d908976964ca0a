package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/telemetry"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// traceOneEvent runs hookstream dev with tracing to an in-memory exporter
// and the given sampler, produces one Added To Cart for an
// inaction_within_time campaign (with ctx as the producer's context), and
// returns the traceparents of the requests the webhook's receiver got, and
// the exporter. The receiver answers the statuses of answers in turn (then
// 200); it returns once len(answers)+1 requests arrived.
func traceOneEvent(t *testing.T, ctx context.Context, sampler sdktrace.Sampler, answers ...int) ([]string, *tracetest.InMemoryExporter) {
	t.Helper()
	var mu sync.Mutex
	var traceparents []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if n := len(traceparents); n < len(answers) {
			w.WriteHeader(answers[n])
		}
		traceparents = append(traceparents, r.Header.Get("traceparent"))
	}))
	defer recv.Close()
	manifests := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: r}
spec: {url: %s/hook, retry: {schedule: [1s]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: inaction_within_time, action: {event: Added To Cart}, inaction: {event: Charged}, within: 2s}
  what: {payload: {profileVariables: [Identity]}}
`, recv.URL)
	exp := tracetest.NewInMemoryExporter()
	d := startInProcessDev(t, manifests, process.Options{Tracing: telemetry.TracingOptions{Exporter: exp, Sync: true, Sampler: sampler}})
	kafkaAddr := d.kafkaAddr
	cl, err := kafka.NewClient(kafkatest.Config(kafkaAddr), nilLogger(), "test-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.ProduceSync(ctx, cl, &kgo.Record{Topic: "hookstream.events.raw", Key: []byte("u-1"),
		Value: []byte(`{"type":"event","identity":"u-1","name":"Added To Cart","id":"e-1"}`), Context: ctx}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(traceparents)
		mu.Unlock()
		if n > len(answers) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no webhook arrived")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the attempt's span ends after the response
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(traceparents), exp
}

// One event for an inaction_within_time campaign gives one connected trace
// from ingest, through the evaluator, the timer that waited and the
// evaluator again, to the dispatcher's HTTP attempt; the receiver sees the
// same trace, and the attempt's span, in traceparent.
func TestDevTraceFromIngestToWebhook(t *testing.T) {
	tps, exp := traceOneEvent(t, context.Background(), sdktrace.AlwaysSample())
	tp := tps[0]
	parts := strings.Split(tp, "-")
	if len(parts) != 4 {
		t.Fatalf("receiver got traceparent %q", tp)
	}
	traceID, parentID := parts[1], parts[2]
	spans := map[string]tracetest.SpanStub{} // by span id
	byName := map[string]tracetest.SpanStub{}
	names := map[string]bool{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() == traceID {
			spans[s.SpanContext.SpanID().String()] = s
			byName[s.Name] = s
			names[s.Name] = true
		}
	}
	if t.Failed() {
		return
	}
	defer func() {
		if t.Failed() {
			byTrace := map[string][]string{}
			for _, s := range exp.GetSpans() {
				id := s.SpanContext.TraceID().String()
				byTrace[id] = append(byTrace[id], s.Name+"<-"+s.Parent.SpanID().String()+"/"+s.SpanContext.SpanID().String())
			}
			for id, names := range byTrace {
				t.Logf("trace %s: %v", id, names)
			}
		}
	}()
	// No personal data: the user's identity is in no span attribute.
	for _, s := range exp.GetSpans() {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.Emit(), "u-1") {
				t.Errorf("span %s carries the identity in %s=%s", s.Name, a.Key, a.Value.Emit())
			}
		}
	}
	// One connected trace: from the attempt, through its parents, back to
	// the producer's record, in pipeline order.
	want := []string{"dispatcher.deliver", "evaluator.trigger", "timer.fire", "evaluator.schedule_timer",
		"ingest.normalize", "hookstream.events.raw publish"}
	deliver, ok := byName["dispatcher.deliver"]
	if !ok {
		t.Fatalf("trace %s has no dispatcher.deliver span; it has %v", traceID, keys(names))
	}
	var chain []string
	for s, ok := deliver, true; ok; s, ok = spans[s.Parent.SpanID().String()] {
		chain = append(chain, s.Name)
	}
	if strings.Join(chain, " <- ") != strings.Join(want, " <- ") {
		t.Errorf("parent chain of the attempt:\n got %s\nwant %s", strings.Join(chain, " <- "), strings.Join(want, " <- "))
	}
	// The attempt's span is the HTTP client span: the receiver's
	// traceparent names it.
	if got := deliver.SpanContext.SpanID().String(); got != parentID {
		t.Errorf("receiver's traceparent names span %s, want the attempt's %s", parentID, got)
	}
	attrs := func(s tracetest.SpanStub) map[string]string {
		m := map[string]string{}
		for _, a := range s.Attributes {
			m[string(a.Key)] = a.Value.Emit()
		}
		return m
	}
	da := attrs(deliver)
	if deliver.SpanKind != trace.SpanKindClient || da["http.request.method"] != "POST" || da["http.response.status_code"] != "200" ||
		da["server.address"] != "127.0.0.1" || da["campaign"] != "cart" || da["attempt"] != "1" || da["webhook_id"] == "" {
		t.Errorf("dispatcher.deliver: kind %s, attributes %v", deliver.SpanKind, da)
	}
	// The decisions are the producer spans of what they emit.
	for name, topic := range map[string]string{"evaluator.trigger": "hookstream.triggers", "evaluator.schedule_timer": "hookstream.timers", "timer.fire": "hookstream.events"} {
		s := byName[name]
		a := attrs(s)
		if s.SpanKind != trace.SpanKindProducer || a["messaging.destination.name"] != topic || a["messaging.kafka.message.offset"] == "" || a["campaign"] == "" && name != "timer.fire" {
			t.Errorf("%s: kind %s, attributes %v; want a producer span to %s", name, s.SpanKind, a, topic)
		}
	}
	// The decisions' own attributes, set with where the record went.
	for name, keys := range map[string][]string{"evaluator.trigger": {"webhook_id", "trigger_type", "control"}, "evaluator.schedule_timer": {"timer_id", "due_ms"}, "timer.fire": {"timer_id", "due_ms", "lateness_ms"}} {
		a := attrs(byName[name])
		for _, k := range keys {
			if a[k] == "" {
				t.Errorf("%s has no %s: %v", name, k, a)
			}
		}
	}
	if fire := byName["timer.fire"]; len(fire.Links) != 1 || fire.Links[0].SpanContext.SpanID() != byName["evaluator.schedule_timer"].SpanContext.SpanID() {
		t.Errorf("timer.fire links %v, want the scheduling span", fire.Links)
	}
	// An event's normalisation is also its publish span: where the raw
	// record was, and where the event went.
	if a := attrs(byName["ingest.normalize"]); byName["ingest.normalize"].SpanKind != trace.SpanKindProducer ||
		a["messaging.source.name"] != "hookstream.events.raw" || a["hookstream.source.offset"] != "0" ||
		a["messaging.destination.name"] != "hookstream.events" || a["messaging.kafka.message.offset"] == "" {
		t.Errorf("ingest.normalize: kind %s, attributes %v", byName["ingest.normalize"].SpanKind, a)
	}
	if names["hookstream.events publish"] {
		t.Errorf("an event has a hookstream.events publish span besides its ingest.normalize span")
	}
}

// An event whose producer's trace is not sampled makes no span anywhere
// (with the parent-based sampler of production), and the receiver gets the
// producer's trace, still not sampled.
func TestDevUnsampledTraceMakesNoSpans(t *testing.T) {
	const upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": upstream})
	tps, exp := traceOneEvent(t, ctx, sdktrace.ParentBased(sdktrace.AlwaysSample()))
	tp := tps[0]
	if parts := strings.Split(tp, "-"); len(parts) != 4 || parts[1] != "4bf92f3577b34da6a3ce929d0e0e4736" || parts[3] != "00" {
		t.Errorf("receiver got traceparent %q, want the producer's unsampled trace", tp)
	}
	if spans := exp.GetSpans(); len(spans) != 0 {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Errorf("%d spans of an unsampled trace: %v", len(spans), names)
	}
}

// A retried delivery stays in the event's trace: the second attempt is the
// child of the timer firing that brought it back, which is the child of
// the first attempt.
func TestDevRetryStaysInTheTrace(t *testing.T) {
	tps, exp := traceOneEvent(t, context.Background(), sdktrace.AlwaysSample(), http.StatusServiceUnavailable)
	var ids [2][]string
	for i, tp := range tps {
		if ids[i] = strings.Split(tp, "-"); len(ids[i]) != 4 {
			t.Fatalf("request %d: traceparent %q", i, tp)
		}
	}
	if ids[0][1] != ids[1][1] {
		t.Fatalf("the retry is in trace %s, the first attempt in %s", ids[1][1], ids[0][1])
	}
	spans := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		spans[s.SpanContext.SpanID().String()] = s
	}
	second, ok := spans[ids[1][2]]
	if !ok {
		t.Fatalf("no span %s for the second attempt", ids[1][2])
	}
	fire := spans[second.Parent.SpanID().String()]
	first := spans[fire.Parent.SpanID().String()]
	if second.Name != "dispatcher.deliver" || fire.Name != "timer.fire" || first.Name != "dispatcher.deliver" || first.SpanContext.SpanID().String() != ids[0][2] {
		t.Errorf("second attempt %q <- %q <- %q (%s), want dispatcher.deliver <- timer.fire <- the first attempt %s",
			second.Name, fire.Name, first.Name, first.SpanContext.SpanID(), ids[0][2])
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func nilLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
