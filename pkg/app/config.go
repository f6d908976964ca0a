// Package app is what every Hookstream process shares: configuration loading,
// the module registry that turns a target into ordered services, the HTTP
// server with /healthz, /readyz and /metrics, and signal handling.
package app

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is a process's configuration: it registers its flags (which sets
// its defaults) and validates itself.
type Config interface {
	RegisterFlags(fs *flag.FlagSet)
	Validate() error
}

// LoadOptions are the inputs of LoadConfig; zero values use the process's.
type LoadOptions struct {
	// LookupEnv resolves ${NAME} in the YAML file; default os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Loaded says what the command line asked for besides the configuration.
type Loaded struct {
	// Verify is -config.verify: validate and exit.
	Verify bool
	// File is the YAML file that was read, if any.
	File string
}

// LoadConfig fills cfg in three layers: the defaults (from its flags), then
// the YAML file named by -config.file (strict: unknown keys are errors; with
// ${NAME} and ${NAME:-default} replaced from the environment unless
// -config.expand-env=false), then the flags given on the command line. It
// then validates cfg.
func LoadConfig(cfg Config, fs *flag.FlagSet, args []string, opts LoadOptions) (Loaded, error) {
	var l Loaded
	expand := true
	fs.StringVar(&l.File, "config.file", "", "YAML configuration file.")
	fs.BoolVar(&l.Verify, "config.verify", false, "Load and validate the configuration, print it and exit.")
	fs.BoolVar(&expand, "config.expand-env", true, "Replace ${NAME} and ${NAME:-default} in the configuration file from the environment.")
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		return l, err
	}
	if l.File != "" {
		data, err := os.ReadFile(l.File)
		if err != nil {
			return l, fmt.Errorf("config: %w", err)
		}
		if expand {
			lookup := opts.LookupEnv
			if lookup == nil {
				lookup = os.LookupEnv
			}
			if data, err = ExpandEnv(data, lookup); err != nil {
				return l, fmt.Errorf("config %s: %w", l.File, err)
			}
		}
		if err := DecodeStrict(data, cfg); err != nil {
			return l, fmt.Errorf("config %s: %w", l.File, err)
		}
		// The command line wins over the file: parse it again on top.
		if err := fs.Parse(args); err != nil {
			return l, err
		}
	}
	if err := cfg.Validate(); err != nil {
		return l, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return l, nil
}

var envRef = regexp.MustCompile(`\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// ExpandEnv replaces ${NAME} with the variable's value and ${NAME:-default}
// with its value or default; $$ is a literal $. A variable that is not set
// and has no default is an error naming its line, so that a missing secret
// is not silently empty.
func ExpandEnv(data []byte, lookup func(string) (string, bool)) ([]byte, error) {
	var errs []error
	lines := bytes.Split(data, []byte("\n"))
	for i, line := range lines {
		lines[i] = envRef.ReplaceAllFunc(line, func(m []byte) []byte {
			if string(m) == "$$" {
				return []byte("$")
			}
			sub := envRef.FindSubmatch(m)
			name := string(sub[1])
			if v, ok := lookup(name); ok {
				return []byte(v)
			}
			if sub[2] != nil {
				return sub[3]
			}
			errs = append(errs, fmt.Errorf("line %d: environment variable %s is not set (write ${%s:-default} for a default)", i+1, name, name))
			return m
		})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return bytes.Join(lines, []byte("\n")), nil
}

var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type `)

// DecodeStrict decodes YAML into v, refusing unknown keys and reporting each
// problem on its own line as "line N: reason".
func DecodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownField.FindStringSubmatch(e); m != nil {
			e = fmt.Sprintf("line %s: unknown key %q", m[1], m[2])
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "\n"))
}
