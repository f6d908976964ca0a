package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"github.com/twmb/franz-go/plugin/kotel"
	"github.com/twmb/franz-go/plugin/kslog"
	"go.opentelemetry.io/otel"
)

// NewClient returns a franz-go client for cfg with the given extra options
// (consumer group, topics, ...). component names the client in broker logs
// and in our own. Its records carry trace context and make spans.
//
// A client that joins a consumer group through opts gets cfg's
// SessionTimeout, HeartbeatInterval and RebalanceTimeout; opts may override
// them (NewConsumer does for static members).
func NewClient(cfg Config, log *slog.Logger, component string, opts ...kgo.Opt) (*kgo.Client, error) {
	return newClient(cfg, log, component, true, opts...)
}

// NewUntracedClient is NewClient without tracing, for Hookstream's internal
// bookkeeping (the catalog, state changelogs and restores, topic admin,
// stats), whose records are not part of any user's trace and would each
// start a trace of their own.
func NewUntracedClient(cfg Config, log *slog.Logger, component string, opts ...kgo.Opt) (*kgo.Client, error) {
	return newClient(cfg, log, component, false, opts...)
}

func newClient(cfg Config, log *slog.Logger, component string, traced bool, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID + "-" + component),
		kgo.WithLogger(kslog.New(slog.New(quieter{log.Handler()}).With("lib", "franz-go", "client", component))),
		kgo.ProducerLinger(cfg.ProduceLinger.Std()),
		kgo.ProducerBatchMaxBytes(int32(cfg.ProduceBatchBytes)),
		// franz-go retries a produce without limit by default; bound it so
		// that a handler sees an outage as an error (its batch is then
		// retried, uncommitted, until it succeeds or a stop is requested)
		// instead of blocking forever.
		kgo.RecordDeliveryTimeout(2 * time.Minute),
		kgo.ProduceRequestTimeout(30 * time.Second),
	}
	base = append(base, groupTimeouts(cfg)...)
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		base = append(base, kgo.DialTLSConfig(tc))
	}
	switch strings.ToUpper(cfg.SASL.Mechanism) {
	case "":
	case "PLAIN":
		base = append(base, kgo.SASL(plain.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		base = append(base, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		base = append(base, kgo.SASL(scram.Auth{User: cfg.SASL.Username, Pass: cfg.SASL.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("kafka: unknown SASL mechanism %q", cfg.SASL.Mechanism)
	}
	// kotel's produce and fetch metrics; W3C trace context in record
	// headers, with publish spans (trace.go), through the global tracer
	// provider (see telemetry.NewTracing, which must run first; with
	// tracing off, the context records arrive with is only passed on).
	hooks := kotel.NewKotel(kotel.WithMeter(kotel.NewMeter(kotel.MeterProvider(otel.GetMeterProvider())))).Hooks()
	if traced {
		hooks = append(hooks, newRecordTracer(otel.GetTracerProvider(), otel.GetTextMapPropagator(), cfg.ClientID+"-"+component))
	}
	base = append(base, kgo.WithHooks(hooks...))
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client %s: %w", component, err)
	}
	return cl, nil
}

// groupTimeouts returns the consumer-group options of cfg. Group options
// are inert on a client that joins no group. Unset (zero) values keep
// franz-go's defaults, so that a Config made without RegisterFlags still
// works.
func groupTimeouts(cfg Config) []kgo.Opt {
	var opts []kgo.Opt
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout.Std()))
	}
	if cfg.HeartbeatInterval > 0 {
		opts = append(opts, kgo.HeartbeatInterval(cfg.HeartbeatInterval.Std()))
	}
	if cfg.RebalanceTimeout > 0 {
		opts = append(opts, kgo.RebalanceTimeout(cfg.RebalanceTimeout.Std()))
	}
	return opts
}

// Ping waits until a broker answers or ctx ends.
func Ping(ctx context.Context, cl *kgo.Client) error {
	for {
		err := cl.Ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka unreachable: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// quieter demotes franz-go's info logs (connections, metadata, group
// joins) to debug: they are useful when debugging and noise otherwise.
type quieter struct{ slog.Handler }

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return q.Handler.Enabled(ctx, l)
}

func (q quieter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return q.Handler.Handle(ctx, r)
}

func (q quieter) WithAttrs(as []slog.Attr) slog.Handler { return quieter{q.Handler.WithAttrs(as)} }

func (q quieter) WithGroup(name string) slog.Handler { return quieter{q.Handler.WithGroup(name)} }
