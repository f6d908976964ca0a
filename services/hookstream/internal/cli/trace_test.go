package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

// One event for an inaction_within_time campaign gives one connected trace
// from ingest, through the evaluator, the timer that waited and the
// evaluator again, to the dispatcher's HTTP attempt; the receiver sees the
// same trace id in traceparent.
func TestDevTraceFromIngestToWebhook(t *testing.T) {
	var mu sync.Mutex
	var traceparents []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("traceparent"))
		mu.Unlock()
	}))
	defer recv.Close()
	manifests := fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: r}
spec: {url: %s/hook}
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
	d := startInProcessDev(t, manifests, process.Options{Tracing: telemetry.TracingOptions{Exporter: exp, Sync: true, Sampler: sdktrace.AlwaysSample()}})
	ctx := context.Background()
	kafkaAddr := d.kafkaAddr
	cl, err := kafka.NewClient(kafkatest.Config(kafkaAddr), nilLogger(), "test-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := kafka.ProduceSync(ctx, cl, &kgo.Record{Topic: "hookstream.events.raw", Key: []byte("u-1"),
		Value: []byte(`{"type":"event","identity":"u-1","name":"Added To Cart","id":"e-1"}`)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(traceparents)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no webhook arrived")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // the attempt's span ends after the response
	mu.Lock()
	tp := traceparents[0]
	mu.Unlock()
	parts := strings.Split(tp, "-")
	if len(parts) != 4 {
		t.Fatalf("receiver got traceparent %q", tp)
	}
	traceID := parts[1]
	names := map[string]bool{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID().String() == traceID {
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
	for _, want := range []string{"ingest.normalize", "evaluator.schedule_timer", "timer.fire", "evaluator.trigger", "dispatcher.deliver"} {
		if !names[want] {
			t.Errorf("trace %s has no %q span; it has %v", traceID, want, keys(names))
		}
	}
	var http bool
	for n := range names {
		if strings.HasPrefix(n, "HTTP ") || strings.HasPrefix(n, "POST") {
			http = true
		}
	}
	if !http {
		t.Errorf("trace %s has no HTTP client span: %v", traceID, keys(names))
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
