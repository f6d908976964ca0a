// Package evaluator judges every user event, profile update, timer firing
// and scheduled-run marker against the live campaigns and emits Triggers.
package evaluator

import (
	"errors"
	"flag"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// Config of the evaluator.
type Config struct {
	// DataDir holds the evaluator's Pebble state; default "data/evaluator".
	DataDir string `yaml:"data_dir"`
	// InstanceID enables static group membership (one per pod).
	InstanceID string `yaml:"instance_id"`
	// MaxProfileProperties bounds a user's profile; updates past it are
	// dropped and counted. Default 512.
	MaxProfileProperties int `yaml:"max_profile_properties"`
	// MaxEventNames bounds the event names remembered per user; events of
	// further names are not remembered (counted). Default 256.
	MaxEventNames int `yaml:"max_event_names"`
	// RecentPerEvent is how many recent occurrences (with properties) are
	// kept per event name for filtered history conditions. Default 16.
	RecentPerEvent int `yaml:"recent_per_event"`
	// Retention of daily event counts, default 90d.
	Retention duration.Duration `yaml:"retention"`
	// Lateness: an action whose timer is already due fires at once unless
	// it is older than this; then it is counted and dropped. Default 1h.
	Lateness duration.Duration `yaml:"lateness"`
	// BlockCacheBytes is the size of the state store's block cache, default
	// 128 MiB: it keeps the index and filter blocks of a few million users'
	// state in memory, so that reading a user costs one data block. It comes
	// on top of the Go heap, with two 32 MiB memtables.
	BlockCacheBytes int64 `yaml:"block_cache_bytes"`
}

// RegisterFlags registers the flags under prefix "evaluator.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "evaluator.data-dir", "data/evaluator", "Directory of the evaluator's local state (Pebble).")
	fs.StringVar(&c.InstanceID, "evaluator.instance-id", "", "Static consumer-group member id (e.g. the pod name).")
	fs.IntVar(&c.MaxProfileProperties, "evaluator.max-profile-properties", 512, "Most properties kept per profile.")
	fs.IntVar(&c.MaxEventNames, "evaluator.max-event-names", 256, "Most event names remembered per user.")
	fs.IntVar(&c.RecentPerEvent, "evaluator.recent-per-event", 16, "Recent occurrences kept per event name.")
	c.Retention = duration.Duration(90 * 24 * time.Hour)
	fs.Var(&c.Retention, "evaluator.retention", "How long daily event counts are kept.")
	c.Lateness = duration.Duration(time.Hour)
	fs.Var(&c.Lateness, "evaluator.lateness", "How late an already-due action may arrive and still fire.")
	fs.Int64Var(&c.BlockCacheBytes, "evaluator.block-cache-bytes", 128<<20, "Size of the state store's block cache, in bytes.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("evaluator.data_dir: is required"))
	}
	if c.MaxProfileProperties < 1 || c.MaxEventNames < 1 || c.RecentPerEvent < 1 {
		errs = append(errs, errors.New("evaluator: max_profile_properties, max_event_names and recent_per_event must be at least 1"))
	}
	if c.Retention.Std() < 24*time.Hour {
		errs = append(errs, errors.New("evaluator.retention: must be at least 1d"))
	}
	if c.Lateness.Std() < 0 {
		errs = append(errs, errors.New("evaluator.lateness: must not be negative"))
	}
	if c.BlockCacheBytes < 1<<20 {
		errs = append(errs, errors.New("evaluator.block_cache_bytes: must be at least 1 MiB"))
	}
	return errors.Join(errs...)
}
