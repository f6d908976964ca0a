package ingest

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

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
)

// Ingest is the ingest service.
type Ingest struct {
	cfg    Config
	kcfg   kafka.Config
	topics kafka.Topics
	log    *slog.Logger
	norm   *normalize.Normalizer
	cons   *kafka.Consumer

	accepted, rejected metric.Int64Counter
}

// New returns an ingest service.
func New(cfg Config, kcfg kafka.Config, log *slog.Logger, meter metric.Meter) (*Ingest, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := &Ingest{cfg: cfg, kcfg: kcfg, topics: kcfg.Topics(), log: log.With("component", "ingest"), norm: normalize.New(cfg.limits(), time.Now)}
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
// served by the process's server (see Handler) and produces through the same
// client once the service runs.
func (i *Ingest) Service() *service.Service {
	return service.New("ingest",
		func(ctx context.Context) error {
			var err error
			i.cons, err = kafka.NewConsumer(i.kcfg, i.log, "ingest", kafka.ConsumerConfig{
				Group: "hookstream-ingest", Topics: []string{i.topics.EventsRaw},
			}, i.handle)
			return err
		},
		func(ctx context.Context) error { return i.cons.Run(ctx) },
		func(error) error {
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
	out := make([]*kgo.Record, 0, len(recs))
	for _, r := range recs {
		for _, res := range i.norm.Normalize(r.Value) {
			if res.Err != nil {
				i.rejected.Add(ctx, 1, metric.WithAttributes(attribute.String("source", "kafka"), attribute.String("code", res.Err.Code)))
				out = append(out, i.deadLetter(r, res))
				continue
			}
			rec, err := i.eventRecord(res, r.Headers)
			if err != nil {
				return err
			}
			i.accepted.Add(ctx, 1, metric.WithAttributes(attribute.String("source", "kafka"), attribute.String("format", res.Event.SourceFormat)))
			out = append(out, rec)
		}
	}
	return kafka.ProduceSync(ctx, i.cons.Client(), out...)
}

func (i *Ingest) eventRecord(res normalize.Result, headers []kgo.RecordHeader) (*kgo.Record, error) {
	v, err := proto.Marshal(res.Event)
	if err != nil {
		return nil, err
	}
	return &kgo.Record{Topic: i.topics.Events, Key: []byte(res.Event.Identity), Value: v, Headers: traceHeaders(headers)}, nil
}

// deadLetter keeps the original bytes (of the element, for a CleverTap
// upload) and says why and where from in headers.
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
	return &kgo.Record{Topic: i.topics.EventsDLQ, Key: r.Key, Value: raw, Headers: append(h, traceHeaders(r.Headers)...)}
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
