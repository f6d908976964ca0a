// Package timer is Hookstream's durable clock. It keeps the timers of the
// compacted {prefix}timers topic in Pebble and, when one is due, produces its
// payload to its destination, then a fired marker for it; and it emits the
// run markers of scheduled campaigns. docs/timers.md describes the design.
package timer

import (
	"errors"
	"flag"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// Config of the timer service.
type Config struct {
	// DataDir holds the timers (Pebble); default "data/timer".
	DataDir string `yaml:"data_dir"`
	// InstanceID enables static group membership (one per pod).
	InstanceID string `yaml:"instance_id"`
	// FireRate caps timers fired per second (recovery storms), default 5000.
	FireRate int `yaml:"fire_rate"`
	// Tick is how often due timers are looked for, default 100ms.
	Tick duration.Duration `yaml:"tick"`
	// MarkerTTL is how long a fired timer's marker stays on the topic
	// before a tombstone removes it, and how long a cancelled timer is
	// remembered; default 1m. Any value is correct; a longer one saves
	// writes when timers are rescheduled right after firing.
	MarkerTTL duration.Duration `yaml:"marker_ttl"`
	// MissedRuns is how many of the most recent runs of a scheduled campaign
	// are emitted after a downtime that missed them, default 1.
	MissedRuns int `yaml:"missed_runs"`
}

// RegisterFlags registers the flags under prefix "timer.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "timer.data-dir", "data/timer", "Directory of the timer service's state (Pebble).")
	fs.StringVar(&c.InstanceID, "timer.instance-id", "", "Static consumer-group member id (e.g. the pod name).")
	fs.IntVar(&c.FireRate, "timer.fire-rate", 5000, "Most timers fired per second.")
	c.Tick = duration.Duration(100 * time.Millisecond)
	fs.Var(&c.Tick, "timer.tick", "How often due timers are looked for.")
	c.MarkerTTL = duration.Duration(time.Minute)
	fs.Var(&c.MarkerTTL, "timer.marker-ttl", "How long a fired timer's marker is kept before a tombstone removes it.")
	fs.IntVar(&c.MissedRuns, "timer.missed-runs", 1, "Most recent missed runs of a scheduled campaign emitted after a downtime.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("timer.data_dir: is required"))
	}
	if c.FireRate < 1 {
		errs = append(errs, errors.New("timer.fire_rate: must be at least 1"))
	}
	if c.Tick.Std() <= 0 || c.Tick.Std() > time.Second {
		errs = append(errs, errors.New("timer.tick: must be between 1ns and 1s"))
	}
	if c.MarkerTTL.Std() <= 0 {
		errs = append(errs, errors.New("timer.marker_ttl: must be positive"))
	}
	if c.MissedRuns < 1 {
		errs = append(errs, errors.New("timer.missed_runs: must be at least 1"))
	}
	return errors.Join(errs...)
}
