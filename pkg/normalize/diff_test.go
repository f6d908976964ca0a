package normalize

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/normalize/internal/reference"
)

// diffSeeds are records that exercise every branch of the normaliser.
var diffSeeds = []string{
	`{"type":"event","identity":"u","name":"N","ts":"2026-11-27T10:00:00+05:30","properties":{ "a" : [ 1 , { "b" : "c d" } ] }}`,
	`{"type":"event","identity":"u\u00e9","name":"A\"B","id":"i\/1","properties":{"\u0061":1}}`,
	`{"type":"identify","userId":"u","traits":{"email":"a@b","name":"Ann","phone":"+1","address":{"city":"T","country":"C","street":"1"},"plan":"pro"},"context":{"timezone":"America/Toronto"}}`,
	`{"type":"identify","userId":"u","traits":{"email":"a","Email":"b","em\u0061il":"c","address":{"city":1,"c\u0069ty":"x"},"City":"Y"},"context":{"timezone":2}}`,
	`{"type":"identify","userId":"u","traits":{ "email" : "a" , "address" : { "city" : "x" } }, "context" : { "timezone" : "UTC" } }`,
	`{"type":"page","userId":"u","name":"Home","properties":{"url":"https://x/"}}`,
	`{"type":"screen","anonymousId":"a","properties":{"n\u0061me":"x"},"name":"Cart"}`,
	`{"type":"track","userId":"","anonymousId":"a","event":"E","originalTimestamp":"1764237600","messageId":7}`,
	`{"d":[{"identity":"u","type":"event","evtName":"E","evtData":{"a":1}},"junk",{"type":"event","evtName":"E"},{"objectId":"o","type":"profile","profileData":{ "x" : 1 }}]}`,
	`{"type":null,"d":[{"identity":"i","type":"profile","ts":1764237600123.6}]}`,
	`{"type":"event","identity":-12,"name":"N","ts":"1.7e9"}`,
	`{"type":"event","identity":"u","name":"N","ts":"2026-02-30T10:00:00Z"}`,
	`{"type":"event","identity":"u","name":"N","ts":"2026-11-27T10:00:00.123456789-00:00"}`,
	"\xef\xbb\xbf {\"type\":\"profile\",\"identity\":\"u\"}\n",
}

// FuzzNormalizeMatchesReference checks the normaliser against the first
// implementation, kept in internal/reference: for any input, the same
// results, errors (code and reason) and events. It also checks the
// allocation-free path: AppendFlat with a reused Scratch gives the same
// events, and AppendProto the bytes proto.Marshal gives.
func FuzzNormalizeMatchesReference(f *testing.F) {
	fuzzSeeds(f)
	for _, s := range diffSeeds {
		f.Add([]byte(s))
	}
	for _, r := range benchRecords {
		f.Add(r)
	}
	small := Limits{MaxRecordBytes: 512, MaxProperties: 4, MaxDepth: 2, MaxIdentityBytes: 8, MaxFuture: time.Hour,
		MaxUploadBytes: 2048, MaxUploadRecords: 4}
	clock := func() time.Time { return testNow }
	type pair struct {
		n   *Normalizer
		ref *reference.Normalizer
	}
	pairs := []pair{
		{New(DefaultLimits(), clock), reference.New(reference.DefaultLimits(), clock)},
		{New(small, clock), reference.New(reference.Limits(small), clock)},
	}
	var s Scratch
	s.buf = append(s.buf, "left over from an earlier record"...)
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, p := range pairs {
			got, want := p.n.Normalize(raw), p.ref.Normalize(raw)
			if len(got) != len(want) {
				t.Fatalf("%d results, reference %d", len(got), len(want))
			}
			for i := range got {
				g, w := got[i], want[i]
				if g.Index != w.Index || !bytes.Equal(g.Raw, w.Raw) {
					t.Fatalf("result %d: index %d raw %q, reference %d %q", i, g.Index, g.Raw, w.Index, w.Raw)
				}
				if (g.Err == nil) != (w.Err == nil) {
					t.Fatalf("result %d: err %v, reference %v", i, g.Err, w.Err)
				}
				if g.Err != nil && (g.Err.Code != w.Err.Code || g.Err.Reason != w.Err.Reason) {
					t.Fatalf("result %d: err %s %q, reference %s %q", i, g.Err.Code, g.Err.Reason, w.Err.Code, w.Err.Reason)
				}
				if !proto.Equal(g.Event, w.Event) {
					t.Fatalf("result %d: event %v, reference %v", i, g.Event, w.Event)
				}
			}
			flats := p.n.AppendFlat(nil, raw, testNow, &s)
			if len(flats) != len(got) {
				t.Fatalf("AppendFlat: %d results, Normalize %d", len(flats), len(got))
			}
			for i := range flats {
				fl := &flats[i]
				if fl.Index != got[i].Index || !bytes.Equal(fl.Raw, got[i].Raw) || (fl.Err == nil) != (got[i].Err == nil) {
					t.Fatalf("AppendFlat result %d differs from Normalize", i)
				}
				if fl.Err != nil {
					if fl.Identity != nil || fl.Properties != nil {
						t.Fatalf("AppendFlat result %d: error with fields", i)
					}
					continue
				}
				if ev := fl.Event(); !proto.Equal(ev, got[i].Event) {
					t.Fatalf("AppendFlat result %d: event %v, Normalize %v", i, ev, got[i].Event)
				}
				wantBytes, err := proto.Marshal(got[i].Event)
				if err != nil {
					t.Fatalf("result %d: proto.Marshal: %v", i, err)
				}
				if b := fl.AppendProto([]byte("prefix")); string(b[:6]) != "prefix" || !bytes.Equal(b[6:], wantBytes) {
					t.Fatalf("result %d: AppendProto %x, proto.Marshal %x", i, b[6:], wantBytes)
				}
			}
			// Flats stay valid while the Scratch grows; only Reset
			// invalidates them.
			again := p.n.AppendFlat(nil, raw, testNow, &s)
			for i := range flats {
				if flats[i].Err == nil && !proto.Equal(flats[i].Event(), again[i].Event()) {
					t.Fatalf("result %d changed when the Scratch was used again", i)
				}
			}
			s.Reset()
		}
	})
}

// BenchmarkNormalizeReference is BenchmarkNormalize on the first
// implementation, for comparisons within one run.
func BenchmarkNormalizeReference(b *testing.B) {
	n := reference.New(reference.DefaultLimits(), func() time.Time { return testNow })
	b.ReportAllocs()
	records, cpu0 := 0, processCPU()
	for i := 0; b.Loop(); i++ {
		records += len(n.Normalize(benchRecords[i%len(benchRecords)]))
	}
	reportRates(b, records, cpu0)
}
