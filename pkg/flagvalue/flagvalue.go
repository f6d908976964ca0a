// Package flagvalue has flag.Value types for configuration fields that the
// standard flag package lacks.
package flagvalue

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// Strings is a comma-separated list on the command line and a sequence (or a
// comma-separated string) in YAML.
type Strings []string

// String implements flag.Value.
func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value: it replaces the list.
func (s *Strings) Set(v string) error {
	*s = nil
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// UnmarshalYAML accepts a sequence of strings or one comma-separated string.
func (s *Strings) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return s.Set(n.Value)
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*s = list
	return nil
}
