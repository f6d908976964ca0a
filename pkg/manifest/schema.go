package manifest

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hookstream/hookstream/pkg/duration"
)

// Limits of one manifest document, so that hostile input (deep nesting,
// alias expansion) costs bounded work.
const (
	maxDepth = 64
	maxNodes = 200_000
)

var (
	durationType = reflect.TypeFor[duration.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
	secretType   = reflect.TypeFor[SecretRef]()
)

// walker checks a manifest's YAML node tree against its Go type before it is
// decoded: unknown fields, wrong types, duplicate fields, durations and
// times that do not parse, and secrets written as literal values. Each
// problem names the full path and the line; the offending value is replaced
// by null so that the rest of the document still decodes and can be
// validated.
type walker struct {
	source, object string
	probs          Problems
	bad            []string // paths of the problems, for Validate to skip
	nodes          int
	tooBig         bool
}

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.probs = append(w.probs, Problem{Source: w.source, Line: n.Line, Object: w.object, Path: path, Reason: fmt.Sprintf(format, args...)})
	w.bad = append(w.bad, path)
}

// null replaces n's value with null, keeping its position.
func null(n *yaml.Node) {
	*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: n.Line, Column: n.Column}
}

func typeOf(o Object) reflect.Type { return reflect.TypeOf(o).Elem() }

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string, depth int) {
	if w.tooBig {
		return
	}
	w.nodes++
	if w.nodes > maxNodes || depth > maxDepth {
		w.tooBig = true
		w.fail(n, path, "document is too large or too deeply nested (at most %d levels and %d values)", maxDepth, maxNodes)
		return
	}
	if n.Kind == yaml.AliasNode {
		target := resolve(n)
		if target == nil {
			w.fail(n, path, "alias does not resolve")
			null(n)
			return
		}
		w.walk(target, t, path, depth+1)
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // the zero value
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t {
	case durationType:
		if n.Kind != yaml.ScalarNode || n.Tag == "!!int" || n.Tag == "!!float" {
			w.fail(n, path, "must be a duration like 30m, 36h, 3d or 2w, got %s", describe(n))
			null(n)
		} else if _, err := duration.Parse(n.Value); err != nil {
			w.fail(n, path, "must be a duration like 30m, 36h, 3d or 2w, got %s", describe(n))
			null(n)
		}
		return
	case timeType:
		var tm time.Time
		if n.Kind != yaml.ScalarNode || n.Decode(&tm) != nil {
			w.fail(n, path, "must be an RFC 3339 time like 2026-12-07T09:00:00Z, got %s", describe(n))
			null(n)
		}
		return
	case secretType:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must reference a secret as {env: NAME} or {file: PATH}, never a literal value")
			null(n)
			return
		}
	}
	switch t.Kind() {
	case reflect.Interface:
		w.count(n, depth)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "must be a string, got %s", describe(n))
			null(n)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Decode(&i) != nil {
			w.fail(n, path, "must be a whole number, got %s", describe(n))
			null(n)
		}
	case reflect.Float32, reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || n.Decode(&f) != nil {
			w.fail(n, path, "must be a number, got %s", describe(n))
			null(n)
		}
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			w.fail(n, path, "must be true or false, got %s", describe(n))
			null(n)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "must be a list, got %s", describe(n))
			null(n)
			return
		}
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping of names to values, got %s", describe(n))
			null(n)
			return
		}
		w.mapping(n, path, depth, func(key string, k, v *yaml.Node) {
			w.walk(v, t.Elem(), join(path, key), depth+1)
		})
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "must be a mapping, got %s", describe(n))
			null(n)
			return
		}
		fields := fieldsOf(t)
		w.mapping(n, path, depth, func(key string, k, v *yaml.Node) {
			ft, ok := fields[key]
			if !ok {
				w.unknown(k, join(path, key), key, fields)
				return
			}
			w.walk(v, ft, join(path, key), depth+1)
		})
	default:
		w.fail(n, path, "cannot be read (unsupported type %s)", t)
		null(n)
	}
}

// mapping calls f for each key of n, including keys merged in with "<<",
// reporting keys that are not strings and keys given twice. Bad and
// repeated keys are removed so that the node still decodes.
func (w *walker) mapping(n *yaml.Node, path string, depth int, f func(key string, k, v *yaml.Node)) {
	seen := map[string]int{}
	kept := n.Content[:0:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			w.merge(v, path, depth, f)
			kept = append(kept, k, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.fail(k, path, "field names must be strings, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			w.fail(k, join(path, k.Value), "is given twice (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		kept = append(kept, k, v)
		f(k.Value, k, v)
	}
	n.Content = kept
}

func (w *walker) merge(v *yaml.Node, path string, depth int, f func(key string, k, v *yaml.Node)) {
	v = resolve(v)
	switch {
	case v == nil:
	case v.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(v.Content); i += 2 {
			if k := v.Content[i]; k.Kind == yaml.ScalarNode && k.Tag != "!!merge" {
				f(k.Value, k, v.Content[i+1])
			}
		}
	case v.Kind == yaml.SequenceNode && depth < maxDepth:
		for _, c := range v.Content {
			w.merge(c, path, depth+1, f)
		}
	}
}

// count charges the nodes below n (a free-form value) to the walker's
// budget.
func (w *walker) count(n *yaml.Node, depth int) {
	if w.tooBig {
		return
	}
	w.nodes++
	if w.nodes > maxNodes || depth > maxDepth {
		w.tooBig = true
		w.fail(n, "", "document is too large or too deeply nested (at most %d levels and %d values)", maxDepth, maxNodes)
		return
	}
	if n.Kind == yaml.AliasNode {
		if t := resolve(n); t != nil {
			w.count(t, depth+1)
		}
		return
	}
	for _, c := range n.Content {
		w.count(c, depth+1)
	}
}

// unknown reports a field the type does not have, with a hint when it looks
// like a literal secret or a misspelling.
func (w *walker) unknown(k *yaml.Node, path, key string, fields map[string]reflect.Type) {
	if _, ok := fields[key+"Ref"]; ok {
		w.fail(k, path, "secrets are never written in manifests: use %sRef: {env: NAME} or {file: PATH}", key)
		return
	}
	if s := suggest(key, fields); s != "" {
		w.fail(k, path, "unknown field (did you mean %s?)", s)
		return
	}
	w.fail(k, path, "unknown field")
}

// suggest returns the known field closest to key when it is a likely typo.
func suggest(key string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for f := range fields {
		if strings.EqualFold(f, key) {
			return f
		}
		if d := editDistance(strings.ToLower(f), strings.ToLower(key)); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	if bestD > 2 || len(key) < 4 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names a node's value in a problem.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return strconv.Quote(v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var fieldCache sync.Map // reflect.Type -> map[string]reflect.Type

// fieldsOf maps the YAML names of a struct's fields (inlined structs
// included) to their types.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range fieldsOf(f.Type) {
				m[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	fieldCache.Store(t, m)
	return m
}

// lineOf returns the line of the node at path ("spec.what.linkedContent[0].url")
// below n, or of its nearest ancestor that exists. A mapping entry's line
// is its key's line.
func lineOf(n *yaml.Node, path string) int {
	n = resolve(n)
	if n == nil {
		return 0
	}
	line := n.Line
	rest := path
	for depth := 0; rest != "" && depth < maxDepth; depth++ {
		n = resolve(n)
		if n == nil {
			return line
		}
		switch {
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 || n.Kind != yaml.SequenceNode {
				return line
			}
			i, err := strconv.Atoi(rest[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
			rest = strings.TrimPrefix(rest[end+1:], ".")
		case n.Kind == yaml.MappingNode:
			// Keys may contain dots (headers, keyValues): take the longest
			// key that the path continues with.
			var key, val *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Kind != yaml.ScalarNode || !continues(rest, k.Value) {
					continue
				}
				if key == nil || len(k.Value) > len(key.Value) {
					key, val = k, n.Content[i+1]
				}
			}
			if key == nil {
				return line
			}
			line = key.Line
			rest = strings.TrimPrefix(rest[len(key.Value):], ".")
			n = val
		default:
			return line
		}
	}
	return line
}

// continues reports whether path starts with the field key.
func continues(path, key string) bool {
	if !strings.HasPrefix(path, key) || key == "" {
		return false
	}
	r := path[len(key):]
	return r == "" || r[0] == '.' || r[0] == '['
}
