package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TopicSpec describes a topic Hookstream creates when it is missing.
type TopicSpec struct {
	Name       string
	Partitions int32
	Compacted  bool
	// Configs are more topic configs set at creation, beside the
	// cleanup.policy that Compacted sets.
	Configs map[string]string
}

// TimersMinCompactionLag is min.compaction.lag.ms of the timers topic: no
// record of it is compacted away before it is this old. The timer service
// writes conditional records (fired markers, clean-ups) that a schedule or
// move written just before them overrides only once the service has read
// both; if it crashes in between, the move must still be on the topic when
// an owner reads it again, after a restart or on a new disk. An hour covers
// a restart and a rebuild of ten million timers many times over; it keeps
// that last hour of commands uncompacted. See docs/timers.md.
const TimersMinCompactionLag = time.Hour

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
		{Name: t.Timers, Partitions: n, Compacted: true, Configs: map[string]string{
			"min.compaction.lag.ms": strconv.FormatInt(TimersMinCompactionLag.Milliseconds(), 10),
		}},
		{Name: t.Triggers, Partitions: n},
		{Name: t.Deliveries, Partitions: n},
		{Name: t.DispatchDLQ, Partitions: 1},
		{Name: t.EvaluatorChangelog, Partitions: n, Compacted: true},
		{Name: t.DispatchRetry, Partitions: n},
		{Name: t.Conversions, Partitions: n},
	}
}

// EnsureTopics creates the topics in specs that do not exist yet, with
// their configs. Existing topics are not altered: a config added to a spec
// reaches an existing topic only by hand (kafka-configs --alter).
func EnsureTopics(ctx context.Context, cl *kgo.Client, replicationFactor int16, specs []TopicSpec) error {
	adm := kadm.NewClient(cl)
	var errs []error
	for _, s := range specs {
		configs := make(map[string]*string, len(s.Configs)+1)
		for k, v := range s.Configs {
			configs[k] = &v
		}
		if s.Compacted {
			compact := "compact"
			configs["cleanup.policy"] = &compact
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
