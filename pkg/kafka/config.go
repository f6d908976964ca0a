// Package kafka builds franz-go clients from configuration, creates the
// contract's topics and runs consume loops that commit only after processing.
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/flagvalue"
)

// Config says how to reach Kafka and how the topics are laid out. The zero
// value is not useful: call RegisterFlags (which sets the defaults) first.
type Config struct {
	// Brokers are the seed brokers, default 127.0.0.1:9092.
	Brokers flagvalue.Strings `yaml:"brokers"`
	// TopicPrefix is put before every topic name, default "hookstream.".
	TopicPrefix string `yaml:"topic_prefix"`
	// ClientID is sent to the brokers, default "hookstream".
	ClientID string `yaml:"client_id"`
	// Partitions is the partition count of the keyed topics when Hookstream
	// creates them, default 6. Existing topics are left as they are.
	Partitions int `yaml:"partitions"`
	// ReplicationFactor of created topics; -1 (default) uses the broker's.
	ReplicationFactor int `yaml:"replication_factor"`
	// CreateTopics creates missing topics at start, default true.
	CreateTopics bool `yaml:"create_topics"`
	// ProduceLinger is how long the producer waits to fill a batch, default 5ms.
	ProduceLinger duration.Duration `yaml:"produce_linger"`
	// ProduceBatchBytes caps one produced batch, default 1 MiB.
	ProduceBatchBytes int `yaml:"produce_batch_bytes"`
	// FetchMaxRecords caps the records handled per poll, default 1000.
	FetchMaxRecords int `yaml:"fetch_max_records"`

	// GroupPrefix is put before the component's name to make a consumer
	// group's id ("hookstream-" + "ingest"), default "hookstream-". See
	// Group.
	GroupPrefix string `yaml:"group_prefix"`
	// SessionTimeout is how long the group coordinator waits without a
	// heartbeat from a member that has no instance id (ingest, dispatcher,
	// and the evaluator and timer when run without one) before it gives the
	// member's partitions to the others, default 10s (franz-go's and Kafka's
	// own default is 45s). A member that stops gracefully leaves the group
	// at once and does not wait for it. It must lie within the brokers'
	// group.min.session.timeout.ms and group.max.session.timeout.ms (6s and
	// 30m unless changed).
	SessionTimeout duration.Duration `yaml:"session_timeout"`
	// StaticSessionTimeout is SessionTimeout for static members, those with
	// an instance id (the evaluator and timer pods of a StatefulSet), default
	// 45s. A static member does not leave the group when it stops, so that
	// its restart within this timeout gets its partitions back without a
	// rebalance (and without another pod restoring their state meanwhile);
	// the price is that a static member that dies stalls its partitions this
	// long.
	StaticSessionTimeout duration.Duration `yaml:"static_session_timeout"`
	// HeartbeatInterval is how often a member heartbeats to the coordinator,
	// default 3s; at most a third of either session timeout.
	HeartbeatInterval duration.Duration `yaml:"heartbeat_interval"`
	// RebalanceTimeout is how long the coordinator waits for every member
	// to rejoin once a rebalance has begun, default 60s. A member rejoins
	// only after the batch in hand is handled and committed; a member that
	// takes longer is dropped from the group and its uncommitted batch is
	// handled again by the partitions' next owner.
	RebalanceTimeout duration.Duration `yaml:"rebalance_timeout"`

	TLS  TLSConfig  `yaml:"tls"`
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig enables TLS to the brokers. The other fields take effect only
// with Enabled: setting any of them without it is a validation error rather
// than a plaintext connection the operator did not mean. The files are read
// when a client is made (NewClient), not by Validate, so that a
// configuration can be verified where its secrets are not mounted.
type TLSConfig struct {
	// Enabled connects over TLS, default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the CAs to trust; empty: the system's.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// mutual TLS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name to verify; empty: the broker's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify does not verify the brokers' certificates.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASLConfig authenticates to managed Kafka.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (in any case);
	// empty disables SASL. A mechanism needs Username and Password.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// RegisterFlags registers the flags under prefix (e.g. "kafka.") and sets the
// defaults.
func (c *Config) RegisterFlags(prefix string, fs *flag.FlagSet) {
	c.Brokers = flagvalue.Strings{"127.0.0.1:9092"}
	fs.Var(&c.Brokers, prefix+"brokers", "Comma-separated seed brokers.")
	fs.StringVar(&c.TopicPrefix, prefix+"topic-prefix", "hookstream.", "Prefix of every topic name.")
	fs.StringVar(&c.ClientID, prefix+"client-id", "hookstream", "Client id sent to the brokers.")
	fs.IntVar(&c.Partitions, prefix+"partitions", 6, "Partitions of the keyed topics Hookstream creates.")
	fs.IntVar(&c.ReplicationFactor, prefix+"replication-factor", -1, "Replication factor of created topics (-1: broker default).")
	fs.BoolVar(&c.CreateTopics, prefix+"create-topics", true, "Create missing topics at start.")
	c.ProduceLinger = duration.Duration(5 * time.Millisecond)
	fs.Var(&c.ProduceLinger, prefix+"produce-linger", "How long the producer waits to fill a batch.")
	fs.IntVar(&c.ProduceBatchBytes, prefix+"produce-batch-bytes", 1<<20, "Maximum bytes of one produced batch.")
	fs.IntVar(&c.FetchMaxRecords, prefix+"fetch-max-records", 1000, "Records handled per poll.")
	fs.StringVar(&c.GroupPrefix, prefix+"group-prefix", "hookstream-", "Prefix of every consumer group id (the component's name follows).")
	c.SessionTimeout = duration.Duration(10 * time.Second)
	fs.Var(&c.SessionTimeout, prefix+"session-timeout", "How long a consumer-group member without an instance id may go without a heartbeat before its partitions go to the others (within the brokers' group.min/max.session.timeout.ms).")
	c.StaticSessionTimeout = duration.Duration(45 * time.Second)
	fs.Var(&c.StaticSessionTimeout, prefix+"static-session-timeout", "Session timeout of static members (with an instance id: evaluator and timer StatefulSet pods); a restart within it keeps the partitions without a rebalance.")
	c.HeartbeatInterval = duration.Duration(3 * time.Second)
	fs.Var(&c.HeartbeatInterval, prefix+"heartbeat-interval", "How often a consumer-group member heartbeats; at most a third of either session timeout.")
	c.RebalanceTimeout = duration.Duration(60 * time.Second)
	fs.Var(&c.RebalanceTimeout, prefix+"rebalance-timeout", "How long a rebalance waits for every member to finish its batch and rejoin.")
	fs.BoolVar(&c.TLS.Enabled, prefix+"tls.enabled", false, "Use TLS to the brokers.")
	fs.StringVar(&c.TLS.CAFile, prefix+"tls.ca-file", "", "PEM file of CAs to trust (default: the system's); needs TLS enabled.")
	fs.StringVar(&c.TLS.CertFile, prefix+"tls.cert-file", "", "PEM client certificate for mutual TLS; needs TLS enabled.")
	fs.StringVar(&c.TLS.KeyFile, prefix+"tls.key-file", "", "PEM client key for mutual TLS; needs TLS enabled.")
	fs.StringVar(&c.TLS.ServerName, prefix+"tls.server-name", "", "Server name to verify (default: the broker's host); needs TLS enabled.")
	fs.BoolVar(&c.TLS.InsecureSkipVerify, prefix+"tls.insecure-skip-verify", false, "Do not verify the brokers' certificates; needs TLS enabled.")
	fs.StringVar(&c.SASL.Mechanism, prefix+"sasl.mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL).")
	fs.StringVar(&c.SASL.Username, prefix+"sasl.username", "", "SASL user name, required with a mechanism.")
	fs.StringVar(&c.SASL.Password, prefix+"sasl.password", "", "SASL password, required with a mechanism (use ${ENV} in the YAML file).")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("kafka.partitions: must be at least 1, got %d", c.Partitions))
	}
	switch strings.ToUpper(c.SASL.Mechanism) {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		errs = append(errs, fmt.Errorf("kafka.sasl.mechanism: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", c.SASL.Mechanism))
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		errs = append(errs, errors.New("kafka.sasl.username: required with a SASL mechanism"))
	}
	if c.SASL.Mechanism != "" && c.SASL.Password == "" {
		errs = append(errs, errors.New("kafka.sasl.password: required with a SASL mechanism"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("kafka.tls: cert_file and key_file go together"))
	}
	if !c.TLS.Enabled {
		for _, o := range []struct {
			key string
			set bool
		}{
			{"ca_file", c.TLS.CAFile != ""},
			{"cert_file", c.TLS.CertFile != ""},
			{"key_file", c.TLS.KeyFile != ""},
			{"server_name", c.TLS.ServerName != ""},
			{"insecure_skip_verify", c.TLS.InsecureSkipVerify},
		} {
			if o.set {
				errs = append(errs, fmt.Errorf("kafka.tls.%s: set, but kafka.tls.enabled is false (set it to connect over TLS)", o.key))
			}
		}
	}
	if c.FetchMaxRecords < 1 {
		errs = append(errs, fmt.Errorf("kafka.fetch_max_records: must be at least 1, got %d", c.FetchMaxRecords))
	}
	if c.GroupPrefix == "" {
		errs = append(errs, errors.New("kafka.group_prefix: must not be empty"))
	}
	errs = append(errs, c.validateGroupTimeouts()...)
	return errors.Join(errs...)
}

// The brokers' defaults of group.min.session.timeout.ms and
// group.max.session.timeout.ms. A broker refuses a JoinGroup whose session
// timeout lies outside its bounds (INVALID_SESSION_TIMEOUT), and the member
// then retries forever without getting a partition: refuse such a value at
// start instead. Brokers configured with other bounds are rare; their
// operators can still choose within the intersection.
const (
	minSessionTimeout = 6 * time.Second
	maxSessionTimeout = 30 * time.Minute
)

func (c *Config) validateGroupTimeouts() []error {
	var errs []error
	for _, st := range []struct {
		key string
		d   time.Duration
	}{{"kafka.session_timeout", c.SessionTimeout.Std()}, {"kafka.static_session_timeout", c.StaticSessionTimeout.Std()}} {
		if st.d < minSessionTimeout || st.d > maxSessionTimeout {
			errs = append(errs, fmt.Errorf("%s: must be between %s and %s (the brokers' default group.min.session.timeout.ms and group.max.session.timeout.ms), got %s",
				st.key, duration.Format(minSessionTimeout), duration.Format(maxSessionTimeout), duration.Format(st.d)))
			continue
		}
		// Kafka's rule of thumb, which its Java client enforces in part
		// (heartbeat below the session timeout): two heartbeats may be
		// lost before a member is thought dead.
		if hb := c.HeartbeatInterval.Std(); hb > 0 && 3*hb > st.d {
			errs = append(errs, fmt.Errorf("kafka.heartbeat_interval: must be at most a third of %s (%s), got %s",
				st.key, duration.Format(st.d), duration.Format(hb)))
		}
	}
	if hb := c.HeartbeatInterval.Std(); hb < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("kafka.heartbeat_interval: must be at least 100ms, got %s", duration.Format(hb)))
	}
	if rt := c.RebalanceTimeout.Std(); rt < time.Second || rt > maxSessionTimeout {
		errs = append(errs, fmt.Errorf("kafka.rebalance_timeout: must be between 1s and %s, got %s", duration.Format(maxSessionTimeout), duration.Format(rt)))
	}
	return errs
}

// Group returns the consumer-group id of component: GroupPrefix followed by
// component, "hookstream-ingest" with the default prefix. Two installations
// that share a Kafka cluster need different group prefixes as they need
// different topic prefixes: otherwise their members join the same groups
// (and the static members of the evaluator and timer may fence each other).
func (c *Config) Group(component string) string {
	return c.GroupPrefix + component
}

func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // opt-in by the operator
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka tls ca %s: no certificate found", c.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Topics are the names of the contract's topics (CONTRACT.md section 6).
type Topics struct {
	EventsRaw, Events, EventsDLQ, Campaigns, Timers, Triggers, Deliveries, DispatchDLQ string
	// EvaluatorChangelog is the evaluator's compacted state changelog.
	EvaluatorChangelog string
	// DispatchRetry carries DeliveryRequests due for another attempt; the
	// timer service produces them there when their retry timer fires.
	DispatchRetry string
	// Conversions carries the evaluator's conversion records (goal events
	// after an exposure, for test and control users).
	Conversions string
}

// Topics returns the topic names under the configured prefix.
func (c *Config) Topics() Topics {
	p := c.TopicPrefix
	return Topics{
		EventsRaw:          p + "events.raw",
		Events:             p + "events",
		EventsDLQ:          p + "events.dlq",
		Campaigns:          p + "campaigns",
		Timers:             p + "timers",
		Triggers:           p + "triggers",
		Deliveries:         p + "deliveries",
		DispatchDLQ:        p + "dispatch.dlq",
		EvaluatorChangelog: p + "evaluator.changelog",
		DispatchRetry:      p + "dispatch.retry",
		Conversions:        p + "conversions",
	}
}
