// Package timer is Hookstream's durable clock: it keeps the timers of the
// compacted {prefix}timers topic in Pebble and, when one is due, produces its
// payload to its destination, then a tombstone for it.
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
}

// RegisterFlags registers the flags under prefix "timer.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "timer.data-dir", "data/timer", "Directory of the timer service's state (Pebble).")
	fs.StringVar(&c.InstanceID, "timer.instance-id", "", "Static consumer-group member id (e.g. the pod name).")
	fs.IntVar(&c.FireRate, "timer.fire-rate", 5000, "Most timers fired per second.")
	c.Tick = duration.Duration(100 * time.Millisecond)
	fs.Var(&c.Tick, "timer.tick", "How often due timers are looked for.")
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
	return errors.Join(errs...)
}
