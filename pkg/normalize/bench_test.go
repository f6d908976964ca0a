package normalize

import (
	"testing"
	"time"
)

// benchRecords is a mix of typical ~300-byte records in the three formats.
var benchRecords = [][]byte{
	[]byte(`{"type":"event","identity":"u-1001","name":"Added To Cart","ts":"2026-11-27T10:00:00Z","properties":{"ProductId":"sku-42","Price":899.0,"Currency":"CAD","Category":"Watches","Quantity":1,"Tags":["gift","sale"],"Source":{"campaign":"bf-2026","medium":"email"}},"id":"e-0001"}`),
	[]byte(`{"type":"event","identity":"u-1001","name":"Charged","ts":1764237900,"properties":{"ProductId":"sku-42","Amount":899.0,"Currency":"CAD","PaymentMode":"card","Items":[{"sku":"sku-42","qty":1}],"Coupon":"MT50","Store":"Toronto Eaton Centre"}}`),
	[]byte(`{"type":"profile","identity":"u-1001","ts":"2026-11-27T09:59:00Z","properties":{"Email":"jack@example.com","Name":"Jack","Country":"Canada","City":"Toronto","Timezone":"America/Toronto","Push_token":"19403aa5d3bb376769a8101c9cbf22159cb1836117659cc684a71243589982ea","Last Score":308}}`),
	[]byte(`{"type":"track","userId":"u-3001","event":"Order Completed","properties":{"order_id":"50314b8e","total":27.5,"revenue":25.0,"shipping":3,"tax":2,"currency":"USD","products":[{"product_id":"507f1f77","sku":"45790-32","price":19}]},"timestamp":"2026-11-27T10:05:00.000Z","messageId":"ajs-2"}`),
	[]byte(`{"type":"identify","userId":"u-3001","traits":{"email":"ann@example.com","name":"Ann Smith","phone":"+1-555-0100","plan":"premium","address":{"city":"Austin","country":"USA","street":"6th St"},"logins":5},"context":{"timezone":"America/Chicago","ip":"8.8.8.8"},"timestamp":"2026-11-27T10:00:00.000Z","messageId":"ajs-1"}`),
	[]byte(`{"d":[{"identity":"u-2001","ts":1764237600,"type":"event","evtName":"Product viewed","evtData":{"Product name":"Casio Chronograph Watch","Category":"Mens Watch","Price":59.99,"Brand":"Casio","Color":"Black","InStock":true,"Rating":4.5,"Reviews":1203,"Seller":"Casio Store"}}]}`),
}

// BenchmarkNormalize reports records/s for the mix above on one goroutine.
func BenchmarkNormalize(b *testing.B) {
	n := New(DefaultLimits(), func() time.Time { return testNow })
	var bytesIn int
	for _, r := range benchRecords {
		bytesIn += len(r)
		for _, res := range n.Normalize(r) {
			if res.Err != nil {
				b.Fatalf("%s: %v", r, res.Err)
			}
		}
	}
	b.SetBytes(int64(bytesIn / len(benchRecords)))
	b.ReportAllocs()
	records, cpu0 := 0, processCPU()
	for i := 0; b.Loop(); i++ {
		records += len(n.Normalize(benchRecords[i%len(benchRecords)]))
	}
	reportRates(b, records, cpu0)
}

func BenchmarkSplitBody(b *testing.B) {
	var body []byte
	for range 100 {
		for _, r := range benchRecords {
			body = append(append(body, r...), '\n')
		}
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SplitBody(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNormalizeFlat is BenchmarkNormalize through the path the ingest
// consumer takes: AppendFlat with a reused Scratch, then AppendProto into a
// reused buffer, allocating nothing per valid record.
func BenchmarkNormalizeFlat(b *testing.B) {
	n := New(DefaultLimits(), func() time.Time { return testNow })
	var bytesIn int
	for _, r := range benchRecords {
		bytesIn += len(r)
	}
	b.SetBytes(int64(bytesIn / len(benchRecords)))
	b.ReportAllocs()
	var (
		s     Scratch
		flats []Flat
		buf   []byte
	)
	records, cpu0 := 0, processCPU()
	for i := 0; b.Loop(); i++ {
		flats = n.AppendFlat(flats[:0], benchRecords[i%len(benchRecords)], testNow, &s)
		buf = buf[:0]
		for k := range flats {
			if flats[k].Err != nil {
				b.Fatal(flats[k].Err)
			}
			buf = flats[k].AppendProto(buf)
		}
		s.Reset()
		records += len(flats)
	}
	reportRates(b, records, cpu0)
}

// reportRates reports records/s and, where the process's CPU time can be
// read, cpu-ns/rec: the CPU time (GC included) per record since cpu0, which
// other load on the machine distorts less than the wall-clock rate.
func reportRates(b *testing.B, records int, cpu0 time.Duration) {
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
	if cpu0 > 0 {
		b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/float64(records), "cpu-ns/rec")
	}
}
