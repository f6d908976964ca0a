package charttest

import (
	"encoding/json"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Value is one documented value of values.yaml: a key with a `# --` comment (helm-docs style).
// A key without one is documented through its children, each of which must have one.
type Value struct {
	// Key is the dotted path, e.g. "kafka.sasl.mechanism".
	Key string
	// Type is bool, int, float, string, list, object or null.
	Type string
	// Default is the value as compact JSON.
	Default string
	// Description is the text after `# --`, with its continuation lines.
	Description string
}

// ParseValues returns the documented values of a values.yaml in file order, and the keys that
// are documented neither themselves nor through their children.
func ParseValues(data []byte) (values []Value, undocumented []string, err error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("values.yaml: want a mapping at the top")
	}
	var walk func(prefix string, m *yaml.Node) error
	walk = func(prefix string, m *yaml.Node) error {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := prefix + k.Value
			if desc, ok := description(k.HeadComment); ok {
				var x any
				if err := v.Decode(&x); err != nil {
					return fmt.Errorf("%s: %w", key, err)
				}
				js, err := json.Marshal(x)
				if err != nil {
					return fmt.Errorf("%s: %w", key, err)
				}
				values = append(values, Value{Key: key, Type: typeOf(v), Default: string(js), Description: desc})
				continue
			}
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 {
				if err := walk(key+".", v); err != nil {
					return err
				}
				continue
			}
			undocumented = append(undocumented, key)
		}
		return nil
	}
	err = walk("", doc.Content[0])
	return values, undocumented, err
}

// description returns the helm-docs description of a head comment: the text after its last
// `# --`, with the comment lines that follow it.
func description(head string) (string, bool) {
	lines := strings.Split(head, "\n")
	start := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "# --") {
			start = i
		}
	}
	if start < 0 {
		return "", false
	}
	parts := []string{strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[start]), "# --"))}
	for _, l := range lines[start+1:] {
		parts = append(parts, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "#")))
	}
	return strings.TrimSpace(strings.Join(parts, " ")), true
}

func typeOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "object"
	case yaml.SequenceNode:
		return "list"
	}
	switch n.Tag {
	case "!!bool":
		return "bool"
	case "!!int":
		return "int"
	case "!!float":
		return "float"
	case "!!null":
		return "null"
	}
	return "string"
}

// Table is the Markdown table of values that charts/hookstream/README.md holds between
// TableStart and TableEnd.
func Table(values []Value) string {
	var b strings.Builder
	b.WriteString("| Key | Type | Default | Description |\n| --- | --- | --- | --- |\n")
	esc := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, v := range values {
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | %s |\n", v.Key, v.Type, esc.Replace(v.Default), esc.Replace(v.Description))
	}
	return b.String()
}

// The markers around the generated table in the chart's README.
const (
	TableStart = "<!-- values:start (generated from values.yaml by `go test ./tools/charttest -update`) -->"
	TableEnd   = "<!-- values:end -->"
)

// SchemaPaths returns the dotted paths of the properties of a JSON schema, down to the objects
// that declare no properties of their own.
func SchemaPaths(schema []byte) (map[string]bool, error) {
	type node struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	paths := map[string]bool{}
	var walk func(prefix string, raw json.RawMessage) error
	walk = func(prefix string, raw json.RawMessage) error {
		var n node
		if err := json.Unmarshal(raw, &n); err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		for k, sub := range n.Properties {
			p := prefix + k
			paths[p] = true
			if err := walk(p+".", sub); err != nil {
				return err
			}
		}
		return nil
	}
	return paths, walk("", schema)
}
