package ingest

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// TestOutputsKeepOrder checks the batch step the consumer runs: however a
// batch is split for parallel normalising, its outputs come out in the order
// of the raw records (a user's events must not be reordered), and the
// counts add up. The cases share one batchMem, as the consumer's batches do.
func TestOutputsKeepOrder(t *testing.T) {
	kcfg := kafkatest.Config("127.0.0.1:1") // never dialled
	in, err := New(defaultConfig(), kcfg, quiet, noop.NewMeterProvider().Meter("ingest"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		records int
		// invalid reports whether raw record k is invalid.
		invalid func(k int) bool
	}{
		{"one record", 1, func(int) bool { return false }},
		{"small batch, sequential", minChunk - 1, func(k int) bool { return k%3 == 0 }},
		{"large batch, first chunk all invalid", 4 * minChunk, func(k int) bool { return k < 2*minChunk }},
		{"large batch, last chunk all invalid", 4*minChunk + 7, func(k int) bool { return k >= 2*minChunk }},
		{"large batch, mixed", 1000, func(k int) bool { return k%7 == 0 }},
	}
	mem := new(batchMem)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := make([]*kgo.Record, tt.records)
			wantValid := 0
			for k := range recs {
				v := fmt.Sprintf(`{"type":"event","identity":"u-%d","name":"N"}`, k)
				if tt.invalid(k) {
					v = fmt.Sprintf(`{"type":"event","identity":"u-%d"}`, k) // no name
				} else {
					wantValid++
				}
				recs[k] = &kgo.Record{Topic: kcfg.Topics().EventsRaw, Partition: 0, Offset: int64(k), Value: []byte(v)}
			}
			out, counts := in.outputs(recs, mem)
			if len(out) != len(recs) {
				t.Fatalf("%d outputs for %d records", len(out), len(recs))
			}
			for k, r := range out {
				switch {
				case tt.invalid(k):
					if off, _ := header(r, HeaderSourceOffset); r.Topic != kcfg.Topics().EventsDLQ || off != fmt.Sprint(k) {
						t.Fatalf("output %d: %s with source offset %q, want the dead letter of raw record %d", k, r.Topic, off, k)
					}
				default:
					if ev := decodeEvent(t, r); r.Topic != kcfg.Topics().Events || ev.GetIdentity() != fmt.Sprintf("u-%d", k) || !keyedByIdentity(r, ev) {
						t.Fatalf("output %d: %s key %q identity %q, want the event of raw record %d", k, r.Topic, r.Key, ev.GetIdentity(), k)
					}
				}
			}
			if got := counts.accepted["native"]; got != int64(wantValid) {
				t.Errorf("accepted count %d, want %d", got, wantValid)
			}
			if got := counts.rejected["missing_name"]; got != int64(len(recs)-wantValid) {
				t.Errorf("rejected count %d, want %d", got, len(recs)-wantValid)
			}
		})
	}
}

// With tracing on, a raw record that becomes one output (an event, or a
// dead letter) gets one ingest.normalize span, of kind producer, that the
// output carries as its publish span (the Kafka hook ends it at the
// broker's ack); a CleverTap upload that becomes several events gets a
// consumer span, ended at once, under which each event gets a publish span
// of its own.
func TestTracedOutputs(t *testing.T) {
	kcfg := kafkatest.Config("127.0.0.1:1") // never dialled
	in, err := New(defaultConfig(), kcfg, quiet, noop.NewMeterProvider().Meter("ingest"))
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	in.tracer, in.traced = tp.Tracer("ingest"), true
	raw := kcfg.Topics().EventsRaw
	recs := []*kgo.Record{
		{Topic: raw, Offset: 0, Value: []byte(`{"type":"event","identity":"u-1","name":"N"}`)},
		{Topic: raw, Offset: 1, Value: []byte(`{"d":[{"identity":"u-2","type":"event","evtName":"A"},{"identity":"u-3","type":"event","evtName":"B"}]}`)},
		{Topic: raw, Offset: 2, Value: []byte(`{"type":"event","identity":"u-4"}`)}, // no name: a dead letter
	}
	out, _ := in.outputs(recs, new(batchMem))
	if len(out) != 4 {
		t.Fatalf("%d outputs, want 4", len(out))
	}
	span := func(r *kgo.Record) trace.Span { return trace.SpanFromContext(r.Context) }
	kind := func(s trace.Span) trace.SpanKind { return s.(sdktrace.ReadOnlySpan).SpanKind() }
	for _, k := range []int{0, 3} {
		s := span(out[k])
		if !s.IsRecording() || kind(s) != trace.SpanKindProducer {
			t.Errorf("output %d (%s): span recording %v kind %s, want an open producer span for the hook to end", k, out[k].Topic, s.IsRecording(), kind(s))
		}
	}
	if span(out[0]).SpanContext().SpanID() == span(out[3]).SpanContext().SpanID() {
		t.Error("two raw records share a span")
	}
	upload := span(out[1])
	if upload.SpanContext().SpanID() != span(out[2]).SpanContext().SpanID() || upload.IsRecording() || kind(upload) != trace.SpanKindConsumer {
		t.Errorf("the upload's events: spans %s and %s, recording %v, kind %s; want one ended consumer span",
			upload.SpanContext().SpanID(), span(out[2]).SpanContext().SpanID(), upload.IsRecording(), kind(upload))
	}
	if got := exp.GetSpans(); len(got) != 1 || got[0].Name != "ingest.normalize" {
		t.Errorf("ended spans %v, want the upload's ingest.normalize alone", got)
	}
}
