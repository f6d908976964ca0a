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
	"google.golang.org/protobuf/proto"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/normalize"
	"github.com/hookstream/hookstream/pkg/service"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
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
}

// New returns an ingest service.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, meter metric.Meter) (*Ingest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := &Ingest{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "ingest"), norm: normalize.New(cfg.limits(), time.Now), tracer: kafka.Tracer("ingest")}
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
				Group: "hookstream-ingest", Topics: []string{i.topics.EventsRaw},
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
	out, counts := i.outputs(recs)
	if err := kafka.ProduceSync(ctx, i.cons.Client(), out...); err != nil {
		return err
	}
	counts.add(ctx, i, "kafka")
	return nil
}

// minChunk is the fewest raw records worth a goroutine of their own.
const minChunk = 256

// outputs returns the events and dead letters of recs, in the order of
// recs (so a user's records keep their order). Large batches are split into
// contiguous chunks normalised in parallel, one per CPU: normalising is the
// costliest part of a batch and would otherwise run on one core while the
// others wait.
func (i *Ingest) outputs(recs []*kgo.Record) ([]*kgo.Record, *counts) {
	n := min(runtime.GOMAXPROCS(0), len(recs)/minChunk)
	if n <= 1 {
		var c chunk
		i.normalizeChunk(&c, recs)
		return c.out, &c.counts
	}
	chunks := make([]chunk, n)
	size := (len(recs) + n - 1) / n
	var wg sync.WaitGroup
	for k := range chunks {
		part := recs[min(k*size, len(recs)):min((k+1)*size, len(recs))]
		wg.Go(func() { i.normalizeChunk(&chunks[k], part) })
	}
	wg.Wait()
	total := 0
	for k := range chunks {
		total += len(chunks[k].out)
	}
	out := make([]*kgo.Record, 0, total)
	for k := range chunks {
		out = append(out, chunks[k].out...)
		if k > 0 {
			chunks[0].counts.merge(&chunks[k].counts)
		}
	}
	return out, &chunks[0].counts
}

// chunk is the work of one goroutine of outputs.
type chunk struct {
	out    []*kgo.Record
	counts counts
}

// normalizeChunk fills c with the outputs of recs. Output records are
// carved from one slab, and keys and values from one buffer sized for the
// whole chunk (an event is about as large as its raw JSON; if the buffer
// must grow, the slices handed out keep the old backing array), to spare the
// allocator per-record work.
func (i *Ingest) normalizeChunk(c *chunk, recs []*kgo.Record) {
	c.out = make([]*kgo.Record, 0, len(recs))
	slab := make([]kgo.Record, len(recs))
	size := 0
	for _, r := range recs {
		size += len(r.Value) + 64
	}
	buf := make([]byte, 0, size)
	next := func() *kgo.Record {
		if len(slab) == 0 {
			slab = make([]kgo.Record, max(len(recs)/4, 16))
		}
		r := &slab[0]
		slab = slab[1:]
		return r
	}
	for _, r := range recs {
		// With tracing on and the record sampled, outputs continue an
		// ingest.normalize span through their Context (the Kafka hooks write
		// their traceparent). Otherwise the input's trace headers are passed
		// on as they are, at no cost.
		var trace []kgo.RecordHeader // shared by every output of r
		var span oteltrace.Span
		ctx := r.Context
		if ctx != nil && oteltrace.SpanContextFromContext(ctx).IsSampled() {
			ctx, span = i.tracer.Start(ctx, "ingest.normalize", oteltrace.WithAttributes(attribute.String("source", "kafka")))
		} else if len(r.Headers) > 0 {
			trace = traceHeaders(r.Headers)
		}
		first := len(c.out)
		for _, res := range i.norm.Normalize(r.Value) {
			if res.Err != nil {
				c.counts.reject(res.Err.Code)
				c.out = append(c.out, i.deadLetter(r, res))
				continue
			}
			out := next()
			var err error
			if buf, err = i.appendEvent(out, buf, res.Event, trace); err != nil {
				// proto.Marshal fails only on invalid UTF-8 in a string
				// field, which the normaliser has already refused.
				c.counts.reject(normalize.CodeInvalidUTF8)
				c.out = append(c.out, i.deadLetter(r, normalize.Result{Index: res.Index, Raw: res.Raw,
					Err: &normalize.Error{Code: normalize.CodeInvalidUTF8, Reason: "record: " + err.Error()}}))
				continue
			}
			c.counts.accept(res.Event.SourceFormat)
			c.out = append(c.out, out)
		}
		if span != nil {
			for _, o := range c.out[first:] {
				o.Context = ctx
			}
			span.End()
		}
	}
}

// counts are a batch's accepted records by format and rejected ones by
// error code, added to the metrics once the batch is stored.
type counts struct {
	accepted, rejected map[string]int64
}

func (c *counts) accept(format string) {
	if c.accepted == nil {
		c.accepted = map[string]int64{}
	}
	c.accepted[format]++
}

func (c *counts) reject(code string) {
	if c.rejected == nil {
		c.rejected = map[string]int64{}
	}
	c.rejected[code]++
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

// eventRecord returns the events record of ev.
func (i *Ingest) eventRecord(ev *hookstreamv1.Event, trace []kgo.RecordHeader) (*kgo.Record, error) {
	r := new(kgo.Record)
	_, err := i.appendEvent(r, nil, ev, trace)
	return r, err
}

// appendEvent makes r the events record of ev, keyed by identity, with key
// and value appended to buf; it returns the grown buf.
func (i *Ingest) appendEvent(r *kgo.Record, buf []byte, ev *hookstreamv1.Event, trace []kgo.RecordHeader) ([]byte, error) {
	start := len(buf)
	buf = append(buf, ev.Identity...)
	keyEnd := len(buf)
	grown, err := marshal.MarshalAppend(buf, ev)
	if err != nil {
		return buf[:start], err
	}
	*r = kgo.Record{Topic: i.topics.Events, Key: grown[start:keyEnd:keyEnd], Value: grown[keyEnd:len(grown):len(grown)], Headers: trace}
	return grown, nil
}

var marshal = proto.MarshalOptions{}

// deadLetter keeps the original bytes (of the element, for a CleverTap
// upload) and says why and where from in headers.
//
// A raw record close to the broker's size limit would, with our headers, no
// longer fit in a produce batch: the producer would refuse it every time, the
// batch would be retried forever and the partition would stop. Such a value
// is cut to fit, and HeaderTruncated says so.
func (i *Ingest) deadLetter(r *kgo.Record, res normalize.Result) *kgo.Record {
	raw := res.Raw
	if raw == nil {
		raw = r.Value
	}
	h := []kgo.RecordHeader{
		{Key: HeaderError, Value: []byte(res.Err.Error())},
		{Key: HeaderErrorCode, Value: []byte(res.Err.Code)},
		{Key: HeaderSourceTopic, Value: []byte(r.Topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
		{Key: HeaderSourceIndex, Value: []byte(strconv.Itoa(res.Index))},
	}
	h = append(h, traceHeaders(r.Headers)...)
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
		if h.Key == "traceparent" || h.Key == "tracestate" || h.Key == "baggage" {
			out = append(out, h)
		}
	}
	return out
}
