// Package dispatcher turns Triggers into webhook requests: deduplicated,
// capped, throttled, rendered, signed and sent, with every attempt recorded,
// retries made durable through the timer service, and each webhook isolated
// from the others (its own queue, in-flight limit and circuit breaker).
package dispatcher

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/flagvalue"
)

// Config of the dispatcher.
type Config struct {
	// AllowPrivateNetworks lets webhooks and linked content reach loopback,
	// private and link-local addresses. Off by default (SSRF guard);
	// `hookstream dev` turns it on.
	AllowPrivateNetworks bool `yaml:"allow_private_networks"`
	// SecretDirs are the directories that {file: PATH} secret references
	// may read, default /var/run/secrets and /etc/hookstream/secrets.
	SecretDirs flagvalue.Strings `yaml:"secret_dirs"`
	// AllowedNetworks are CIDR exceptions to the SSRF guard (an internal
	// CRM, say), checked against the dialled address. Empty by default.
	AllowedNetworks flagvalue.Strings `yaml:"allowed_networks"`
	// FollowRedirects is how many redirects a webhook request follows,
	// default 0: a 3xx is a final failure. Every hop passes the SSRF guard.
	FollowRedirects int `yaml:"follow_redirects"`
	// DedupeTTL is how long a trigger id is remembered, default 7d: longer
	// than the longest retry horizon.
	DedupeTTL duration.Duration `yaml:"dedupe_ttl"`
	// LeaseTTL is how long a trigger is reserved for the dispatcher that
	// handles it, default 2m: a crash mid-attempt lets it be sent by
	// another once the lease expires.
	LeaseTTL duration.Duration `yaml:"lease_ttl"`
	// Concurrency is how many requests one dispatcher sends at once over
	// all webhooks, default 256. Each webhook is further limited by its own
	// maxInFlight, so a hanging endpoint holds at most that many.
	Concurrency int `yaml:"concurrency"`
	// MaxPending caps the deliveries held in memory (queued, in flight or
	// being recorded); polling pauses above it. Default 10000.
	MaxPending int `yaml:"max_pending"`
	// MaxQueueWait is the longest a delivery may wait in a webhook's queue,
	// by the webhook's recent latency; a delivery that would wait longer is
	// handed to the timer service instead (reason busy), default 5s. It
	// also bounds how long one webhook can fill MaxPending and so pause
	// polling for the others.
	MaxQueueWait duration.Duration `yaml:"max_queue_wait"`
	// LocalDelay is the longest delay (throttle, rate limit) a delivery
	// waits in memory; longer ones go through the timer service. Default 1s.
	LocalDelay duration.Duration `yaml:"local_delay"`
	// ThrottleMaxDelay is how far a campaign's throttle may push a send;
	// beyond it the trigger is suppressed as throttled. Default 24h.
	ThrottleMaxDelay duration.Duration `yaml:"throttle_max_delay"`
	// CircuitFailures opens a webhook's circuit after this many
	// consecutive failed attempts (network errors, timeouts, 408, 5xx),
	// default 5.
	CircuitFailures int `yaml:"circuit_failures"`
	// CircuitCooldown is how long an open circuit waits before a half-open
	// probe, default 30s; it doubles after a failed probe, up to 10m.
	CircuitCooldown duration.Duration `yaml:"circuit_cooldown"`
	// CommitInterval is how often completed offsets are committed,
	// default 500ms.
	CommitInterval duration.Duration `yaml:"commit_interval"`
	// RenderTimeout bounds the Liquid rendering of one request, default
	// 250ms.
	RenderTimeout duration.Duration `yaml:"render_timeout"`
	// MaxTimeout caps a webhook's timeout, default 30s.
	MaxTimeout duration.Duration `yaml:"max_timeout"`
}

// RegisterFlags registers the flags under prefix "dispatcher.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.BoolVar(&c.AllowPrivateNetworks, "dispatcher.allow-private-networks", false, "Allow webhooks to loopback, private, link-local and metadata addresses.")
	c.SecretDirs = flagvalue.Strings{"/var/run/secrets", "/etc/hookstream/secrets"}
	fs.Var(&c.SecretDirs, "dispatcher.secret-dirs", "Comma-separated directories that {file: PATH} secret references may read.")
	fs.Var(&c.AllowedNetworks, "dispatcher.allowed-networks", "Comma-separated CIDRs the SSRF guard lets through.")
	fs.IntVar(&c.FollowRedirects, "dispatcher.follow-redirects", 0, "Redirects a webhook request follows (0: none).")
	c.DedupeTTL = duration.Duration(7 * 24 * time.Hour)
	fs.Var(&c.DedupeTTL, "dispatcher.dedupe-ttl", "How long a trigger id is remembered for deduplication.")
	c.LeaseTTL = duration.Duration(2 * time.Minute)
	fs.Var(&c.LeaseTTL, "dispatcher.lease-ttl", "How long a trigger is reserved for the dispatcher delivering it.")
	fs.IntVar(&c.Concurrency, "dispatcher.concurrency", 256, "Requests sent at once over all webhooks.")
	fs.IntVar(&c.MaxPending, "dispatcher.max-pending", 10000, "Deliveries held in memory before polling pauses.")
	c.MaxQueueWait = duration.Duration(5 * time.Second)
	fs.Var(&c.MaxQueueWait, "dispatcher.max-queue-wait", "Longest wait in a webhook's queue before a delivery is handed to the timer.")
	c.LocalDelay = duration.Duration(time.Second)
	fs.Var(&c.LocalDelay, "dispatcher.local-delay", "Longest throttle or rate-limit delay waited in memory.")
	c.ThrottleMaxDelay = duration.Duration(24 * time.Hour)
	fs.Var(&c.ThrottleMaxDelay, "dispatcher.throttle-max-delay", "How far a campaign throttle may delay a send before it is suppressed.")
	fs.IntVar(&c.CircuitFailures, "dispatcher.circuit-failures", 5, "Consecutive failures that open a webhook's circuit.")
	c.CircuitCooldown = duration.Duration(30 * time.Second)
	fs.Var(&c.CircuitCooldown, "dispatcher.circuit-cooldown", "Wait before an open circuit sends a probe.")
	c.CommitInterval = duration.Duration(500 * time.Millisecond)
	fs.Var(&c.CommitInterval, "dispatcher.commit-interval", "How often completed offsets are committed.")
	c.RenderTimeout = duration.Duration(250 * time.Millisecond)
	fs.Var(&c.RenderTimeout, "dispatcher.render-timeout", "Time limit of rendering one request's templates.")
	c.MaxTimeout = duration.Duration(30 * time.Second)
	fs.Var(&c.MaxTimeout, "dispatcher.max-timeout", "Upper bound of any webhook's timeout.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.DedupeTTL.Std() < time.Hour {
		errs = append(errs, errors.New("dispatcher.dedupe_ttl: must be at least 1h"))
	}
	if c.LeaseTTL.Std() < 10*time.Second {
		errs = append(errs, errors.New("dispatcher.lease_ttl: must be at least 10s"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("dispatcher.concurrency: must be at least 1"))
	}
	if c.MaxPending < 1 {
		errs = append(errs, errors.New("dispatcher.max_pending: must be at least 1"))
	}
	if c.MaxQueueWait.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.max_queue_wait: must be positive"))
	}
	if c.LocalDelay.Std() < 0 || c.LocalDelay.Std() > time.Minute {
		errs = append(errs, errors.New("dispatcher.local_delay: must be between 0 and 1m"))
	}
	if c.ThrottleMaxDelay.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.throttle_max_delay: must be positive"))
	}
	if c.CircuitFailures < 1 {
		errs = append(errs, errors.New("dispatcher.circuit_failures: must be at least 1"))
	}
	if c.CircuitCooldown.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.circuit_cooldown: must be positive"))
	}
	if c.CommitInterval.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.commit_interval: must be positive"))
	}
	if c.RenderTimeout.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.render_timeout: must be positive"))
	}
	if c.MaxTimeout.Std() <= 0 {
		errs = append(errs, errors.New("dispatcher.max_timeout: must be positive"))
	}
	if horizon := c.MaxQueueWait.Std() + c.MaxTimeout.Std() + maxLinger; c.LeaseTTL.Std() <= horizon {
		// A trigger is leased from its check until its outcome is recorded:
		// a batch's linger, the wait in its webhook's queue and the attempt.
		errs = append(errs, fmt.Errorf("dispatcher.lease_ttl: must be longer than max_queue_wait + max_timeout + 1m (the longest batch linger), %s", horizon))
	}
	if c.FollowRedirects < 0 {
		errs = append(errs, errors.New("dispatcher.follow_redirects: must not be negative"))
	}
	if _, err := c.allowedNetworks(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) allowedNetworks() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.AllowedNetworks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("dispatcher.allowed_networks: %q is not a CIDR or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}
