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

	TLS  TLSConfig  `yaml:"tls"`
	SASL SASLConfig `yaml:"sasl"`
}

// TLSConfig enables TLS to the brokers.
type TLSConfig struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// SASLConfig authenticates to managed Kafka.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty disables SASL.
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
	fs.BoolVar(&c.TLS.Enabled, prefix+"tls.enabled", false, "Use TLS to the brokers.")
	fs.StringVar(&c.TLS.CAFile, prefix+"tls.ca-file", "", "PEM file of CAs to trust (default: the system's).")
	fs.StringVar(&c.TLS.CertFile, prefix+"tls.cert-file", "", "PEM client certificate for mutual TLS.")
	fs.StringVar(&c.TLS.KeyFile, prefix+"tls.key-file", "", "PEM client key for mutual TLS.")
	fs.StringVar(&c.TLS.ServerName, prefix+"tls.server-name", "", "Server name to verify (default: the broker's host).")
	fs.BoolVar(&c.TLS.InsecureSkipVerify, prefix+"tls.insecure-skip-verify", false, "Do not verify the brokers' certificates.")
	fs.StringVar(&c.SASL.Mechanism, prefix+"sasl.mechanism", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL).")
	fs.StringVar(&c.SASL.Username, prefix+"sasl.username", "", "SASL user name.")
	fs.StringVar(&c.SASL.Password, prefix+"sasl.password", "", "SASL password (use ${ENV} in the YAML file).")
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
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("kafka.tls: cert_file and key_file go together"))
	}
	if c.FetchMaxRecords < 1 {
		errs = append(errs, fmt.Errorf("kafka.fetch_max_records: must be at least 1, got %d", c.FetchMaxRecords))
	}
	return errors.Join(errs...)
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
