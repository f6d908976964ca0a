// Package embedded runs an in-process Kafka broker (franz-go's kfake) on a
// real TCP port, so that `hookstream dev` needs no Kafka and any Kafka client
// (kcat, librdkafka, Java) can produce to it.
package embedded

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hookstream/hookstream/pkg/service"
)

// Config of the embedded broker.
type Config struct {
	// Port to listen on at 127.0.0.1; 0 picks a free one. `hookstream dev`
	// uses 9092.
	Port int
	// DataDir keeps topics, offsets and groups across restarts; empty keeps
	// everything in memory.
	DataDir string
	// Partitions is the default partition count of auto-created topics.
	Partitions int
	// CleanerInterval is how often compacted topics are compacted; default
	// 30s. kfake compacts every compacted partition in full on its request
	// loop, so a short interval costs a lot of CPU at volume (with 500ms it
	// took more than half of the process's CPU at 5 000 events/s). Tests
	// that wait for compaction shorten it.
	CleanerInterval time.Duration
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
}

// Start starts the broker. kfake compacts compacted topics only when a
// cleaner backoff is configured, so one is always set.
func Start(cfg Config, log *slog.Logger) (*Broker, error) {
	if cfg.CleanerInterval <= 0 {
		cfg.CleanerInterval = 30 * time.Second
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": strconv.FormatInt(cfg.CleanerInterval.Milliseconds(), 10)}),
		kfake.WithLogger(logger{log}),
	}
	if cfg.Partitions > 0 {
		opts = append(opts, kfake.DefaultNumPartitions(cfg.Partitions))
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka on 127.0.0.1:%d: %w", cfg.Port, err)
	}
	return &Broker{cluster: c}, nil
}

// Addr is the broker's host:port.
func (b *Broker) Addr() string { return b.cluster.ListenAddrs()[0] }

// Port is the broker's port.
func (b *Broker) Port() int {
	_, p, _ := net.SplitHostPort(b.Addr())
	n, _ := strconv.Atoi(p)
	return n
}

// Cluster gives tests access to kfake's fault injection.
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Close stops the broker, saving its state when it has a data directory.
func (b *Broker) Close() { b.cluster.Close() }

// NewService wraps the broker in a service that starts it and, after every
// service that depends on it has stopped, closes it. onStart receives the
// running broker.
func NewService(cfg Config, log *slog.Logger, onStart func(*Broker)) *service.Service {
	var b *Broker
	return service.New("kafka-embedded",
		func(context.Context) error {
			var err error
			b, err = Start(cfg, log)
			if err != nil {
				return err
			}
			if onStart != nil {
				onStart(b)
			}
			return nil
		},
		nil,
		func(error) error {
			if b != nil {
				b.Close()
			}
			return nil
		})
}

type logger struct{ log *slog.Logger }

func (l logger) Logf(level kfake.LogLevel, msg string, args ...any) {
	var lv slog.Level
	switch level {
	case kfake.LogLevelError:
		lv = slog.LevelError
	case kfake.LogLevelWarn:
		lv = slog.LevelWarn
	default:
		lv = slog.LevelDebug - 4 // kfake's info is chatty: below our debug
	}
	if !l.log.Enabled(context.Background(), lv) {
		return
	}
	l.log.Log(context.Background(), lv, fmt.Sprintf(msg, args...), "component", "kafka-embedded")
}
