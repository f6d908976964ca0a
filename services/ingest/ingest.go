package ingest

import (
	"context"
	"log/slog"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/normalize"
	"github.com/hookstream/hookstream/pkg/service"
)

// DLQ headers of CONTRACT.md section 1.
const (
	HeaderError           = "hookstream-error"
	HeaderErrorCode       = "hookstream-error-code"
	HeaderSourceTopic     = "hookstream-source-topic"
	HeaderSourcePartition = "hookstream-source-partition"
	HeaderSourceOffset    = "hookstream-source-offset"
	// HeaderSourceIndex is the element of a CleverTap upload {"d": [...]}.
	HeaderSourceIndex = "hookstream-source-index"
	// HeaderTruncated, on the rare dead letter whose original bytes with
	// the headers would not fit in a produce batch, gives the original's
	// length: the value is then only its beginning, and the source headers
	// lead to the whole record on the raw topic.
	HeaderTruncated = "hookstream-truncated"
)

// batchOverhead is room left in a produce batch for the batch and record
// framing around a dead letter's key, value and headers.
const batchOverhead = 512

// Ingest is the ingest service.
type Ingest struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	norm   *normalize.Normalizer
	cons   *kafka.Consumer
	// producer is the consumer's client while the service runs, nil
	// otherwise; POST /v1/events produces through it. Atomic because the
	// HTTP server runs before the service starts and after it stops.
	producer atomic.Pointer[kgo.Client]

	accepted, rejected metric.Int64Counter
	tracer             oteltrace.Tracer
	traced             bool // tracing is on: records get an ingest.normalize span

	// mem is the memory of the consumer's batches (see handle).
	mem batchMem
}

// New returns an ingest service.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, meter metric.Meter) (*Ingest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := &Ingest{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "ingest"), norm: normalize.New(cfg.limits(), time.Now), tracer: kafka.Tracer("ingest"), traced: kafka.Tracing()}
	var err error
	if i.accepted, err = meter.Int64Counter("hookstream_ingest_accepted_total", metric.WithDescription("Records normalised onto the events topic, by source and format.")); err != nil {
		return nil, err
	}
	if i.rejected, err = meter.Int64Counter("hookstream_ingest_rejected_total", metric.WithDescription("Records rejected, by source and error code.")); err != nil {
		return nil, err
	}
	return i, nil
}

// Service returns the ingest consumer's lifecycle. The HTTP endpoint is
// served by the process's server (see Register) and produces through the same
// client once the service runs.
func (i *Ingest) Service() *service.Service {
	return service.New("ingest",
		func(ctx context.Context) error {
			var err error
			i.cons, err = kafka.NewConsumer(i.kcfg, i.log, "ingest", kafka.ConsumerConfig{
				Group: i.kcfg.Group("ingest"), Topics: []string{i.topics.EventsRaw},
			}, i.handle)
			if err != nil {
				return err
			}
			i.producer.Store(i.cons.Client())
			return nil
		},
		func(ctx context.Context) error { return i.cons.Run(ctx) },
		func(error) error {
			i.producer.Store(nil)
			if i.cons != nil {
				i.cons.Close()
			}
			return nil
		})
}

// handle normalises a batch of raw records. Every valid record goes to the
// events topic, every invalid one to the DLQ; the batch is committed only
// after the broker has acknowledged all of them.
func (i *Ingest) handle(ctx context.Context, recs []*kgo.Record) error {
	// The consumer hands over one batch at a time, so i.mem is this
	// batch's alone; once ProduceSync has returned, franz-go has called
	// every record's promise and holds none of them any more.
	out, counts := i.outputs(recs, &i.mem)
	if err := kafka.ProduceSync(ctx, i.cons.Client(), out...); err != nil {
		return err
	}
	counts.add(ctx, i, "kafka")
	return nil
}

// minChunk is the fewest raw records worth a goroutine of their own.
const minChunk = 256

// outputs returns the events and dead letters of recs, in the order of
// recs (so a user's records keep their order), built in mem: they are valid
// until mem is used again. Large batches are split into contiguous chunks
// normalised in parallel, one per CPU: normalising is the costliest part of
// a batch and would otherwise run on one core while the others wait.
func (i *Ingest) outputs(recs []*kgo.Record, mem *batchMem) ([]*kgo.Record, *counts) {
	now := i.norm.Now() // one clock read for the batch
	n := max(1, min(runtime.GOMAXPROCS(0), len(recs)/minChunk))
	for len(mem.chunks) < n {
		mem.chunks = append(mem.chunks, chunk{})
	}
	chunks := mem.chunks[:n]
	if n == 1 {
		i.normalizeChunk(&chunks[0], recs, now)
		return chunks[0].out, &chunks[0].counts
	}
	size := (len(recs) + n - 1) / n
	var wg sync.WaitGroup
	for k := range chunks {
		part := recs[min(k*size, len(recs)):min((k+1)*size, len(recs))]
		wg.Go(func() { i.normalizeChunk(&chunks[k], part, now) })
	}
	wg.Wait()
	out := mem.out[:0]
	for k := range chunks {
		out = append(out, chunks[k].out...)
		if k > 0 {
			chunks[0].counts.merge(&chunks[k].counts)
		}
	}
	mem.out = out
	return out, &chunks[0].counts
}

// batchMem is the memory of a batch's outputs, reused batch after batch.
// The zero value is ready to use. Records of an earlier, larger batch stay in
// the slab until overwritten, with their trace headers and contexts: at most
// one batch's worth.
type batchMem struct {
	chunks []chunk
	out    []*kgo.Record
}

// chunk is the work, and the memory, of one goroutine of outputs.
type chunk struct {
	out    []*kgo.Record
	counts counts
	// buf holds the events' keys and values; slab their records.
	buf     []byte
	slab    []kgo.Record
	scratch normalize.Scratch
	flats   []normalize.Flat
}

// maxKeptBuf bounds the event buffer a chunk keeps for the next batch, so
// that one batch of huge records does not hold on to its memory for good.
const maxKeptBuf = 8 << 20

// normalizeChunk fills c with the outputs of recs, normalised at now (which
// is also their records' timestamp, sparing the producer a clock read per
// record). Events are encoded straight from the normaliser's flat form
// (normalize.AppendFlat, which allocates nothing for a valid record) into
// one buffer sized for the whole chunk, and their records are carved from
// one slab, both kept for the next batch: a valid record costs no
// allocation. (An event is about as large as its raw JSON; if the buffer
// must grow, the slices handed out keep the old backing array.)
func (i *Ingest) normalizeChunk(c *chunk, recs []*kgo.Record, now time.Time) {
	c.out = c.out[:0]
	c.counts.reset()
	size := 0
	for _, r := range recs {
		size += len(r.Value) + 64
	}
	buf := c.buf[:0]
	if cap(buf) < size || cap(buf) > max(size, maxKeptBuf) {
		buf = make([]byte, 0, size)
	}
	if cap(c.slab) < len(recs) {
		c.slab = make([]kgo.Record, len(recs))
	}
	slab := c.slab[:len(recs)]
	next := func() *kgo.Record {
		if len(slab) == 0 { // more events than records: CleverTap uploads
			slab = make([]kgo.Record, max(len(recs)/4, 16))
		}
		r := &slab[0]
		slab = slab[1:]
		return r
	}
	scratch, flats := &c.scratch, c.flats[:0]
	var accepted [3]int64 // native, segment, clevertap: counted here, not in a map per record
	for _, r := range recs {
		// With tracing on, outputs continue an ingest.normalize span
		// through their Context (the Kafka hooks write their traceparent):
		// the producer's trace, or a new one that the sampler decides on.
		// With tracing off, the input's trace headers are passed on as they
		// are, at no cost.
		var trace []kgo.RecordHeader // shared by every output of r
		var start time.Time
		if i.traced {
			start = time.Now()
		} else if len(r.Headers) > 0 {
			trace = traceHeaders(r.Headers)
		}
		first := len(c.out)
		flats = i.norm.AppendFlat(flats[:0], r.Value, now, scratch)
		for k := range flats {
			f := &flats[k]
			if f.Err != nil {
				c.counts.reject(f.Err.Code)
				dl := i.deadLetter(r, f.Index, f.Raw, f.Err)
				dl.Timestamp = now
				c.out = append(c.out, dl)
				continue
			}
			out := next()
			buf = i.appendEvent(out, buf, f, trace)
			out.Timestamp = now
			switch f.Format {
			case normalize.FormatNative:
				accepted[0]++
			case normalize.FormatSegment:
				accepted[1]++
			case normalize.FormatCleverTap:
				accepted[2]++
			}
			c.out = append(c.out, out)
		}
		scratch.Reset() // the events are encoded: nothing points into it
		if i.traced {
			i.traceOutputs(r, start, c.out[first:])
		}
	}
	c.counts.acceptN(normalize.FormatNative, accepted[0])
	c.counts.acceptN(normalize.FormatSegment, accepted[1])
	c.counts.acceptN(normalize.FormatCleverTap, accepted[2])
	if cap(buf) <= maxKeptBuf {
		c.buf = buf
	}
	c.flats = flats[:0]
}

var sourceKafka = attribute.String("source", "kafka")

// traceOutputs gives the outputs of raw record r, normalised since start,
// the context of its ingest.normalize span. A record that becomes one
// output (an event, or a dead letter), nearly every one, gets a producer
// span that is also that output's publish span, ended by the Kafka hook
// when the broker has it: one span per event. A record that becomes several
// (a CleverTap upload) or none gets a consumer span, ended here, and each
// output its own publish span.
func (i *Ingest) traceOutputs(r *kgo.Record, start time.Time, outs []*kgo.Record) {
	if len(outs) == 1 {
		outs[0].Context, _ = kafka.ProcessAndPublishSpan(r, i.tracer, "ingest.normalize", start, sourceKafka)
		return
	}
	ctx, span := kafka.ProcessSpanSince(r, i.tracer, "ingest.normalize", start, sourceKafka)
	for _, o := range outs {
		o.Context = ctx
	}
	span.End()
}

// counts are a batch's accepted records by format and rejected ones by
// error code, added to the metrics once the batch is stored.
type counts struct {
	accepted, rejected map[string]int64
}

func (c *counts) accept(format string) { c.acceptN(format, 1) }

func (c *counts) acceptN(format string, n int64) {
	if n == 0 {
		return
	}
	if c.accepted == nil {
		c.accepted = map[string]int64{}
	}
	c.accepted[format] += n
}

func (c *counts) reject(code string) {
	if c.rejected == nil {
		c.rejected = map[string]int64{}
	}
	c.rejected[code]++
}

// reset empties c, keeping its maps.
func (c *counts) reset() {
	clear(c.accepted)
	clear(c.rejected)
}

func (c *counts) merge(o *counts) {
	if c.accepted == nil {
		c.accepted = map[string]int64{}
	}
	for format, n := range o.accepted {
		c.accepted[format] += n
	}
	if c.rejected == nil {
		c.rejected = map[string]int64{}
	}
	for code, n := range o.rejected {
		c.rejected[code] += n
	}
}

func (c *counts) add(ctx context.Context, i *Ingest, source string) {
	for format, n := range c.accepted {
		i.accepted.Add(ctx, n, metric.WithAttributes(attribute.String("source", source), attribute.String("format", format)))
	}
	for code, n := range c.rejected {
		i.rejected.Add(ctx, n, metric.WithAttributes(attribute.String("source", source), attribute.String("code", code)))
	}
}

// appendEvent makes r the events record of f, keyed by identity, with key
// and value appended to buf; it returns the grown buf.
func (i *Ingest) appendEvent(r *kgo.Record, buf []byte, f *normalize.Flat, trace []kgo.RecordHeader) []byte {
	start := len(buf)
	buf = append(buf, f.Identity...)
	keyEnd := len(buf)
	buf = f.AppendProto(buf)
	*r = kgo.Record{Topic: i.topics.Events, Key: buf[start:keyEnd:keyEnd], Value: buf[keyEnd:len(buf):len(buf)], Headers: trace}
	return buf
}

// deadLetter keeps the original bytes (of the element, for a CleverTap
// upload) and says why and where from in headers.
//
// A raw record close to the broker's size limit would, with our headers, no
// longer fit in a produce batch: the producer would refuse it every time, the
// batch would be retried forever and the partition would stop. Such a value
// is cut to fit, and HeaderTruncated says so.
func (i *Ingest) deadLetter(r *kgo.Record, index int, raw []byte, rerr *normalize.Error) *kgo.Record {
	if raw == nil {
		raw = r.Value
	}
	// The header values share one allocation, and so do the headers.
	reason := rerr.Error()
	vals := make([]byte, 0, len(reason)+len(rerr.Code)+len(r.Topic)+3*20)
	val := func(from int) []byte { return vals[from:len(vals):len(vals)] }
	vals = append(vals, reason...)
	errVal := val(0)
	at := len(vals)
	vals = append(vals, rerr.Code...)
	codeVal := val(at)
	at = len(vals)
	vals = append(vals, r.Topic...)
	topicVal := val(at)
	at = len(vals)
	vals = strconv.AppendInt(vals, int64(r.Partition), 10)
	partVal := val(at)
	at = len(vals)
	vals = strconv.AppendInt(vals, r.Offset, 10)
	offVal := val(at)
	at = len(vals)
	vals = strconv.AppendInt(vals, int64(index), 10)
	idxVal := val(at)
	h := make([]kgo.RecordHeader, 0, 6+len(r.Headers)+1)
	h = append(h,
		kgo.RecordHeader{Key: HeaderError, Value: errVal},
		kgo.RecordHeader{Key: HeaderErrorCode, Value: codeVal},
		kgo.RecordHeader{Key: HeaderSourceTopic, Value: topicVal},
		kgo.RecordHeader{Key: HeaderSourcePartition, Value: partVal},
		kgo.RecordHeader{Key: HeaderSourceOffset, Value: offVal},
		kgo.RecordHeader{Key: HeaderSourceIndex, Value: idxVal},
	)
	for _, x := range r.Headers {
		if isTraceHeader(x.Key) {
			h = append(h, x)
		}
	}
	size := len(r.Key) + len(raw) + len(HeaderTruncated) + 20
	for _, x := range h {
		size += len(x.Key) + len(x.Value)
	}
	if limit := i.kcfg.ProduceBatchBytes - batchOverhead; limit > 0 && size > limit {
		h = append(h, kgo.RecordHeader{Key: HeaderTruncated, Value: []byte(strconv.Itoa(len(raw)))})
		raw = raw[:max(0, len(raw)-(size-limit))]
	}
	return &kgo.Record{Topic: i.topics.EventsDLQ, Key: r.Key, Value: raw, Headers: h}
}

// traceHeaders keeps the W3C trace context of the input record.
func traceHeaders(hs []kgo.RecordHeader) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for _, h := range hs {
		if isTraceHeader(h.Key) {
			out = append(out, h)
		}
	}
	return out
}

func isTraceHeader(key string) bool {
	return key == "traceparent" || key == "tracestate" || key == "baggage"
}
