package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec describes a topic Hookstream creates when it is missing.
type TopicSpec struct {
	Name       string
	Partitions int32
	Compacted  bool
}

// TopicSpecs lists every contract topic with its layout. Topics keyed by
// user share one partition count so that a user's events, timers and state
// line up; the campaigns topic is a single compacted partition so that every
// reader sees applies in one order.
func (c *Config) TopicSpecs() []TopicSpec {
	t := c.Topics()
	n := int32(c.Partitions)
	return []TopicSpec{
		{Name: t.EventsRaw, Partitions: n},
		{Name: t.Events, Partitions: n},
		{Name: t.EventsDLQ, Partitions: 1},
		{Name: t.Campaigns, Partitions: 1, Compacted: true},
		{Name: t.Timers, Partitions: n, Compacted: true},
		{Name: t.Triggers, Partitions: n},
		{Name: t.Deliveries, Partitions: n},
		{Name: t.DispatchDLQ, Partitions: 1},
		{Name: t.EvaluatorChangelog, Partitions: n, Compacted: true},
		{Name: t.DispatchRetry, Partitions: n},
		{Name: t.Conversions, Partitions: n},
	}
}

// EnsureTopics creates the topics in specs that do not exist yet. Existing
// topics are not altered.
func EnsureTopics(ctx context.Context, cl *kgo.Client, replicationFactor int16, specs []TopicSpec) error {
	adm := kadm.NewClient(cl)
	var errs []error
	for _, s := range specs {
		var configs map[string]*string
		if s.Compacted {
			compact := "compact"
			configs = map[string]*string{"cleanup.policy": &compact}
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, replicationFactor, configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("create topic %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}
