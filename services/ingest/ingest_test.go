package ingest

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"

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
