// Package process builds a Hookstream process: its configuration and the
// modules that a target (ingest, evaluator, timer, dispatcher, all) runs.
package process

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/telemetry"
	"github.com/hookstream/hookstream/services/dispatcher"
	"github.com/hookstream/hookstream/services/evaluator"
	"github.com/hookstream/hookstream/services/ingest"
	"github.com/hookstream/hookstream/services/timer"
)

// Config is the whole configuration of a process (the YAML file's root).
type Config struct {
	// Target is what this process runs: ingest, evaluator, timer,
	// dispatcher or all.
	Target     string            `yaml:"target"`
	Log        LogConfig         `yaml:"log"`
	Server     app.ServerConfig  `yaml:"server"`
	Kafka      kafka.Config      `yaml:"kafka"`
	Redis      redisconn.Config  `yaml:"redis"`
	Ingest     ingest.Config     `yaml:"ingest"`
	Evaluator  evaluator.Config  `yaml:"evaluator"`
	Timer      timer.Config      `yaml:"timer"`
	Dispatcher dispatcher.Config `yaml:"dispatcher"`
}

// LogConfig configures logging.
type LogConfig struct {
	// Level: debug, info (default), warn, error.
	Level string `yaml:"level"`
	// Format: json (default) or text.
	Format string `yaml:"format"`
}

// RegisterFlags registers every flag and sets the defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Target, "target", "all", "What to run: ingest, evaluator, timer, dispatcher or all.")
	fs.StringVar(&c.Log.Level, "log.level", "info", "debug, info, warn or error.")
	fs.StringVar(&c.Log.Format, "log.format", "json", "json or text.")
	c.Server.RegisterFlags("server.", fs)
	c.Kafka.RegisterFlags("kafka.", fs)
	c.Redis.RegisterFlags("redis.", fs)
	c.Ingest.RegisterFlags(fs)
	c.Evaluator.RegisterFlags(fs)
	c.Timer.RegisterFlags(fs)
	c.Dispatcher.RegisterFlags(fs)
}

// Validate checks every part, reporting all problems.
func (c *Config) Validate() error {
	var errs []error
	switch c.Target {
	case "ingest", "evaluator", "timer", "dispatcher", "all":
	default:
		errs = append(errs, fmt.Errorf("target: must be ingest, evaluator, timer, dispatcher or all, got %q", c.Target))
	}
	if _, err := c.Log.level(); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs = append(errs, fmt.Errorf("log.format: must be json or text, got %q", c.Log.Format))
	}
	for _, v := range []interface{ Validate() error }{&c.Kafka, &c.Redis, &c.Ingest, &c.Evaluator, &c.Timer, &c.Dispatcher} {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckAuth refuses, for a target that serves the API (ingest, all), an
// API without tokens beyond loopback (ingest.Config.CheckAuth). It is not
// part of Validate: a configuration file shared by every target is valid
// for the others without the tokens only ingest pods are given.
func (c *Config) CheckAuth() error {
	if c.Target != ModIngest && c.Target != ModAll {
		return nil
	}
	return c.Ingest.CheckAuth(c.Server.ListenAddress)
}

func (l LogConfig) level() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToLower(l.Level))); err != nil {
		return 0, fmt.Errorf("log.level: must be debug, info, warn or error, got %q", l.Level)
	}
	return lv, nil
}

// Logger returns the process logger.
func (l LogConfig) Logger() *slog.Logger {
	lv, _ := l.level()
	opts := &slog.HandlerOptions{Level: lv}
	if l.Format == "text" {
		return slog.New(telemetry.TraceHandler{Handler: slog.NewTextHandler(os.Stderr, opts)})
	}
	return slog.New(telemetry.TraceHandler{Handler: slog.NewJSONHandler(os.Stderr, opts)})
}
