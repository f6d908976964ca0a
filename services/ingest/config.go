// Package ingest accepts events and profile updates from {prefix}events.raw
// and POST /v1/events, normalises them and writes them to {prefix}events
// keyed by identity; bad records go to {prefix}events.dlq with the reason.
package ingest

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/flagvalue"
	"github.com/hookstream/hookstream/pkg/normalize"
)

// Config of the ingest service.
type Config struct {
	// MaxRecordBytes, default 64 KiB.
	MaxRecordBytes int `yaml:"max_record_bytes"`
	// MaxProperties per record, default 256.
	MaxProperties int `yaml:"max_properties"`
	// MaxDepth of nested properties, default 5.
	MaxDepth int `yaml:"max_depth"`
	// MaxFuture refuses timestamps further ahead, default 24h.
	MaxFuture duration.Duration `yaml:"max_future"`
	// MaxBodyBytes of one POST /v1/events body after decompression,
	// default 10 MiB; larger bodies get 413.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// Tokens are the bearer tokens accepted on POST /v1/events. Empty: no
	// authentication (only sensible on loopback, as `hookstream dev` does).
	Tokens flagvalue.Strings `yaml:"tokens"`
	// AdminTokens are the bearer tokens accepted by the admin API (POST
	// /v1/apply, GET|DELETE /v1/{kind}...). Empty: no authentication (only
	// sensible on loopback, as `hookstream dev` does).
	AdminTokens flagvalue.Strings `yaml:"admin_tokens"`
	// AllowUnauthenticated lets the API serve without tokens on an address
	// beyond loopback (a test installation); see CheckAuth.
	AllowUnauthenticated bool `yaml:"allow_unauthenticated"`
}

// RegisterFlags registers the flags under prefix "ingest.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	d := normalize.DefaultLimits()
	fs.IntVar(&c.MaxRecordBytes, "ingest.max-record-bytes", d.MaxRecordBytes, "Largest accepted record.")
	fs.IntVar(&c.MaxProperties, "ingest.max-properties", d.MaxProperties, "Most properties per record.")
	fs.IntVar(&c.MaxDepth, "ingest.max-depth", d.MaxDepth, "Deepest nesting of properties.")
	c.MaxFuture = duration.Duration(d.MaxFuture)
	fs.Var(&c.MaxFuture, "ingest.max-future", "How far in the future a timestamp may be.")
	fs.IntVar(&c.MaxBodyBytes, "ingest.max-body-bytes", 10<<20, "Largest POST /v1/events body (after gzip).")
	fs.Var(&c.Tokens, "ingest.tokens", "Comma-separated bearer tokens for POST /v1/events (empty: no auth).")
	fs.Var(&c.AdminTokens, "ingest.admin-tokens", "Comma-separated bearer tokens for the admin API: apply, get, delete, pause, resume (empty: no auth).")
	fs.BoolVar(&c.AllowUnauthenticated, "ingest.allow-unauthenticated", false, "Serve the API without tokens on an address beyond loopback (a test installation only).")
}

// CheckAuth refuses an API without tokens (ingest.tokens or
// ingest.admin_tokens empty) that listens beyond loopback: anyone who
// reaches it could send events, or change and delete campaigns. Loopback
// (`hookstream dev`, a sidecar) is allowed, as is anything with
// AllowUnauthenticated.
func (c *Config) CheckAuth(listen string) error {
	if c.AllowUnauthenticated || len(c.Tokens) > 0 && len(c.AdminTokens) > 0 || Loopback(listen) {
		return nil
	}
	var missing []string
	if len(c.Tokens) == 0 {
		missing = append(missing, "ingest.tokens")
	}
	if len(c.AdminTokens) == 0 {
		missing = append(missing, "ingest.admin_tokens")
	}
	return fmt.Errorf("%s empty and the API listens on %q, beyond loopback: anyone who reaches it could send events or change campaigns; set the tokens (or ingest.allow_unauthenticated: true for a test installation)", strings.Join(missing, " and "), listen)
}

// Loopback reports whether a listen address (host:port) accepts loopback
// connections only.
func Loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxRecordBytes < 1024 {
		errs = append(errs, errors.New("ingest.max_record_bytes: must be at least 1024"))
	}
	if c.MaxBodyBytes < c.MaxRecordBytes {
		errs = append(errs, errors.New("ingest.max_body_bytes: must be at least max_record_bytes"))
	}
	if c.MaxFuture.Std() < time.Minute {
		errs = append(errs, errors.New("ingest.max_future: must be at least 1m"))
	}
	return errors.Join(errs...)
}

func (c *Config) limits() normalize.Limits {
	l := normalize.DefaultLimits()
	l.MaxRecordBytes, l.MaxProperties, l.MaxDepth, l.MaxFuture = c.MaxRecordBytes, c.MaxProperties, c.MaxDepth, c.MaxFuture.Std()
	return l
}
