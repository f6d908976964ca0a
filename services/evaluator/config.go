// Package evaluator judges every user event, profile update and timer firing
// against the live campaigns and emits Triggers.
package evaluator

import (
	"errors"
	"flag"
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
}

// RegisterFlags registers the flags under prefix "evaluator.".
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DataDir, "evaluator.data-dir", "data/evaluator", "Directory of the evaluator's local state (Pebble).")
	fs.StringVar(&c.InstanceID, "evaluator.instance-id", "", "Static consumer-group member id (e.g. the pod name).")
	fs.IntVar(&c.MaxProfileProperties, "evaluator.max-profile-properties", 512, "Most properties kept per profile.")
}

// Validate reports configuration that cannot work.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("evaluator.data_dir: is required")
	}
	if c.MaxProfileProperties < 1 {
		return errors.New("evaluator.max_profile_properties: must be at least 1")
	}
	return nil
}
