package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
)

// The timers topic is created with min.compaction.lag.ms, so that a move
// written just before one of the timer service's conditional records
// survives compaction until a restarted owner has read both
// (docs/timers.md); the other topics keep the broker's default.
func TestEnsureTopicsSetsTheTimersCompactionLag(t *testing.T) {
	c := kafkatest.New(t)
	cfg := c.Config()
	cl, err := kafka.NewClient(cfg, quiet(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := kafka.EnsureTopics(ctx, cl, -1, cfg.TopicSpecs()); err != nil {
		t.Fatal(err)
	}
	topics := cfg.Topics()
	configs, err := kadm.NewClient(cl).DescribeTopicConfigs(ctx, topics.Timers, topics.Campaigns, topics.Events)
	if err != nil {
		t.Fatal(err)
	}
	lagOf := func(topic string) (policy, lag string) {
		t.Helper()
		rc, err := configs.On(topic, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range rc.Configs {
			if c.Value == nil {
				continue
			}
			switch c.Key {
			case "cleanup.policy":
				policy = *c.Value
			case "min.compaction.lag.ms":
				lag = *c.Value
			}
		}
		return policy, lag
	}
	policy, lag := lagOf(topics.Timers)
	ms, err := strconv.ParseInt(lag, 10, 64)
	if err != nil || time.Duration(ms)*time.Millisecond < time.Hour {
		t.Errorf("%s: min.compaction.lag.ms=%q, want at least an hour", topics.Timers, lag)
	}
	if policy != "compact" {
		t.Errorf("%s: cleanup.policy=%q beside the lag, want compact", topics.Timers, policy)
	}
	for _, topic := range []string{topics.Campaigns, topics.Events} {
		if _, lag := lagOf(topic); lag != "" {
			t.Errorf("%s: min.compaction.lag.ms=%q, want the broker's default", topic, lag)
		}
	}
}
