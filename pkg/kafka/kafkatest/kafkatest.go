// Package kafkatest gives tests a real in-process Kafka (kfake) and the
// kafka.Config that points at it.
package kafkatest

import (
	"flag"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/embedded"
	"github.com/hookstream/hookstream/pkg/testenv"
)

// Cluster is a test broker.
type Cluster struct {
	*embedded.Broker
}

// New starts an in-memory broker on a free port, closed when the test ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	b, err := embedded.Start(embedded.Config{Partitions: 3, CleanerInterval: 500 * time.Millisecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(b.Close)
	return &Cluster{Broker: b}
}

// Config returns a kafka.Config with the defaults, pointed at the broker,
// with 3 partitions per keyed topic.
func (c *Cluster) Config() kafka.Config {
	return Config(c.Addr())
}

// Config returns the default kafka.Config pointed at addr.
func Config(addr string) kafka.Config {
	var cfg kafka.Config
	cfg.RegisterFlags("", flag.NewFlagSet("kafka", flag.ContinueOnError))
	cfg.Brokers = []string{addr}
	cfg.Partitions = 3
	return cfg
}

// Kfake is the underlying cluster, for ControlKey fault injection.
func (c *Cluster) Kfake() *kfake.Cluster { return c.Cluster() }

// RequireKcat returns the path of kcat or ends the test (see testenv).
func RequireKcat(t testing.TB) string {
	t.Helper()
	return testenv.RequireTool(t, "kcat", "kcat")
}
