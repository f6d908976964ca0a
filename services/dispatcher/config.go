// Package dispatcher turns Triggers into webhook requests: deduplicated,
// rendered, signed and sent, with every attempt recorded.
package dispatcher

import (
	"errors"
	"flag"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// Config of the dispatcher.
type Config struct {
	// AllowPrivateNetworks lets webhooks reach loopback, private and
	// link-local addresses. Off by default (SSRF guard); `hookstream dev`
	// turns it on.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// DedupeTTL is how long a trigger id is remembered, default 7d: longer
	// than the longest retry horizon.
	DedupeTTL duration.Duration `yaml:"dedupe_ttl"`
	// Concurrency is how many requests one dispatcher sends at once,
	// default 64.
	Concurrency int `yaml:"concurrency"`
}

// RegisterFlags registers the flags under prefix "dispatcher.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.AllowPrivateNetworks, "dispatcher.allow-private-networks", false, "Allow webhooks to loopback, private, link-local and metadata addresses.")
	c.DedupeTTL = duration.Duration(7 * 24 * time.Hour)
	fs.Var(&c.DedupeTTL, "dispatcher.dedupe-ttl", "How long a trigger id is remembered for deduplication.")
	fs.IntVar(&c.Concurrency, "dispatcher.concurrency", 64, "Requests sent at once.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	if c.DedupeTTL.Std() < time.Hour {
		return errors.New("dispatcher.dedupe_ttl: must be at least 1h")
	}
	if c.Concurrency < 1 {
		return errors.New("dispatcher.concurrency: must be at least 1")
	}
	return nil
}
