package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Problem is one thing wrong with a manifest, reported as "path: reason".
type Problem struct {
	// Source is the file name, or "" for stdin and API bodies.
	Source string `json:"source,omitempty"`
	// Line is the line in Source where the problem is, 0 when unknown (the
	// object was not read from YAML or JSON text).
	Line int `json:"line,omitempty"`
	// Object is "Kind/name" when known.
	Object string `json:"object,omitempty"`
	// Path is the offending field, e.g. "spec.trigger.within"; "" for the
	// object as a whole.
	Path   string `json:"path,omitempty"`
	Reason string `json:"reason"`
}

// String formats p as "source:line: Kind/name: path: reason", leaving out
// the parts that are unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Source != "" {
		b.WriteString(p.Source)
		b.WriteString(":")
	}
	if p.Line > 0 {
		if p.Source == "" {
			b.WriteString("line ")
		}
		b.WriteString(strconv.Itoa(p.Line))
		b.WriteString(":")
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if p.Object != "" {
		b.WriteString(p.Object)
		b.WriteString(": ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// Problems is every problem found in a set of manifests. It is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// origin is where an object was read from: its source, its YAML node (with
// line numbers relative to the whole input) and the paths that had
// structural problems and were left at their zero value.
type origin struct {
	source string
	node   *yaml.Node
	bad    []string
}

func originOf(o Object) *origin {
	switch o := o.(type) {
	case *Webhook:
		return o.src
	case *Segment:
		return o.src
	case *Campaign:
		return o.src
	}
	return nil
}

func setOrigin(o Object, src *origin) {
	switch o := o.(type) {
	case *Webhook:
		o.src = src
	case *Segment:
		o.src = src
	case *Campaign:
		o.src = src
	}
}

// MaxInput is the largest manifest input Parse reads: a guard against
// documents that are huge or expand to huge (YAML aliases).
const MaxInput = 4 << 20

// Parse reads manifests from data: YAML documents separated by "---", or
// JSON (one object, or an array of objects; a YAML document may also be a
// list of manifests). source names the input in problems ("" for none).
//
// When any document has structural problems (syntax, unknown kind, unknown
// fields, wrong types, durations that do not parse, literal secrets), Parse
// returns no objects and a Problems error holding those and every problem
// Validate finds in what could be read, so that the user sees everything at
// once. References to other objects are not checked by Parse (they may
// exist elsewhere): run Validate on the result for that.
func Parse(data []byte, source string) ([]Object, error) {
	objs, probs := parse(data, source)
	return finish(objs, probs)
}

// finish turns structural problems into the error of Parse, adding the
// semantic problems of what was read.
func finish(objs []Object, probs Problems) ([]Object, error) {
	if len(probs) == 0 {
		return objs, nil
	}
	probs = append(probs, Validate(objs, func(string, string) bool { return true })...)
	sortProblems(probs)
	return nil, probs
}

func sortProblems(ps Problems) {
	order := map[string]int{}
	for _, p := range ps {
		if _, ok := order[p.Source]; !ok {
			order[p.Source] = len(order)
		}
	}
	sort.SliceStable(ps, func(i, j int) bool {
		if a, b := order[ps[i].Source], order[ps[j].Source]; a != b {
			return a < b
		}
		return ps[i].Line < ps[j].Line
	})
}

// parse reads every document of data. It returns the objects it could read
// (with structurally bad fields at their zero value) and the structural
// problems.
func parse(data []byte, source string) ([]Object, Problems) {
	if len(data) > MaxInput {
		return nil, Problems{{Source: source, Reason: fmt.Sprintf("input is larger than %d bytes", MaxInput)}}
	}
	var objs []Object
	var probs Problems
	for _, d := range splitDocuments(data) {
		o, ps := parseDocument(d.body, d.line, source)
		objs = append(objs, o...)
		probs = append(probs, ps...)
	}
	return objs, probs
}

type document struct {
	body []byte
	line int // 0-based line of the document's first line in the input
}

var docSep = regexp.MustCompile(`^---(\s.*)?$`)

// splitDocuments splits a YAML stream at "---" lines, keeping each
// document's line offset so that problems name the line in the file. A
// document that fails to parse therefore does not hide the others.
func splitDocuments(data []byte) []document {
	var docs []document
	lines := bytes.Split(data, []byte("\n"))
	start := 0
	flush := func(end int) {
		body := bytes.Join(lines[start:end], []byte("\n"))
		if len(bytes.TrimSpace(stripComments(body))) > 0 {
			docs = append(docs, document{body: body, line: start})
		}
	}
	for i, l := range lines {
		if docSep.Match(bytes.TrimRight(l, "\r")) {
			flush(i)
			start = i + 1
		}
	}
	flush(len(lines))
	return docs
}

func stripComments(b []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("...")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

var (
	yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	// yamlParserError matches the messages of the YAML parser (not the
	// scanner), whose "line N" is one less than the line of the problem.
	yamlParserError = regexp.MustCompile(`^did not find expected (key|node content|<document start>|'-' indicator|',' or '\]'|',' or '\}')$|^found (undefined tag handle|duplicate %YAML directive|incompatible YAML document)`)
)

// parseDocument reads one YAML (or JSON) document whose first line is line
// offset+1 of the input.
func parseDocument(body []byte, offset int, source string) ([]Object, Problems) {
	var doc yaml.Node
	if err := yaml.Unmarshal(body, &doc); err != nil {
		return nil, yamlProblems(err, offset, offset+1, source, "")
	}
	shiftLines(&doc, offset, 0)
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, nil
		}
		root = root.Content[0]
	}
	root = resolve(root)
	switch {
	case root == nil:
		return nil, nil
	case root.Kind == yaml.SequenceNode:
		// A list of manifests: a JSON array, or a YAML sequence.
		var objs []Object
		var probs Problems
		for _, item := range root.Content {
			o, ps := parseNode(resolve(item), source)
			probs = append(probs, ps...)
			if o != nil {
				objs = append(objs, o)
			}
		}
		return objs, probs
	case root.Kind == yaml.ScalarNode && root.Tag == "!!null":
		return nil, nil
	}
	o, ps := parseNode(root, source)
	if o == nil {
		return nil, ps
	}
	return []Object{o}, ps
}

// shiftLines makes the lines of a document's nodes relative to the whole
// input. Aliased nodes are reached once through their anchor.
func shiftLines(n *yaml.Node, offset, depth int) {
	if n == nil || depth > maxDepth {
		return
	}
	n.Line += offset
	for _, c := range n.Content {
		shiftLines(c, offset, depth+1)
	}
}

// parseNode reads one manifest from its mapping node.
func parseNode(n *yaml.Node, source string) (Object, Problems) {
	if n == nil || n.Kind != yaml.MappingNode {
		line := 0
		if n != nil {
			line = n.Line
		}
		return nil, Problems{{Source: source, Line: line, Reason: "a manifest must be a mapping with apiVersion, kind, metadata and spec"}}
	}
	kindNode := child(n, "kind")
	name := ""
	if nn := child(child(n, "metadata"), "name"); nn != nil && nn.Kind == yaml.ScalarNode {
		name = nn.Value
	}
	var obj Object
	kind := ""
	if kindNode != nil && kindNode.Kind == yaml.ScalarNode {
		kind = kindNode.Value
	}
	switch kind {
	case KindWebhook:
		obj = &Webhook{}
	case KindSegment:
		obj = &Segment{}
	case KindCampaign:
		obj = &Campaign{}
	case "":
		line := n.Line
		if kindNode != nil {
			line = kindNode.Line
		}
		return nil, Problems{{Source: source, Line: line, Path: "kind", Reason: "is required (Webhook, Segment or Campaign)"}}
	default:
		return nil, Problems{{Source: source, Line: kindNode.Line, Object: objectName(kind, name), Path: "kind", Reason: fmt.Sprintf("unknown kind %q (want Webhook, Segment or Campaign)", kind)}}
	}
	w := &walker{source: source, object: objectName(kind, name)}
	w.walk(n, typeOf(obj), "", 0)
	if !w.tooBig {
		if err := decodeNode(n, obj); err != nil {
			w.probs = append(w.probs, yamlProblems(err, 0, n.Line, source, w.object)...)
		}
	}
	if w.tooBig {
		return nil, w.probs
	}
	setOrigin(obj, &origin{source: source, node: n, bad: w.bad})
	return obj, w.probs
}

// decodeNode decodes n into obj. The walker has already reported (and
// nulled) every field that would fail, so an error here is unexpected; it
// is still reported, never a panic.
func decodeNode(n *yaml.Node, obj Object) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot decode manifest: %v", r)
		}
	}()
	return n.Decode(obj)
}

func objectName(kind, name string) string {
	if name == "" {
		return kind
	}
	return kind + "/" + name
}

// child returns the value node of key in mapping n, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// yamlProblems turns a YAML error into problems: a "line N" in a message is
// moved by offset; a message without one gets fallbackLine.
func yamlProblems(err error, offset, fallbackLine int, source, object string) Problems {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var ps Problems
	for _, m := range msgs {
		p := Problem{Source: source, Object: object, Reason: strings.TrimPrefix(m, "yaml: ")}
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			n, _ := strconv.Atoi(sub[1])
			p.Line = n + offset
			p.Reason = sub[2]
			if yamlParserError.MatchString(p.Reason) {
				p.Line++
			}
		} else {
			p.Line = fallbackLine
		}
		ps = append(ps, p)
	}
	return ps
}

// ParsePath reads manifests from a file, or from every .yaml, .yml and .json
// file of a directory (not recursive, in name order). Problems name the file
// and line; as with Parse, any structural problem in any file returns every
// problem of every file and no objects.
func ParsePath(path string) ([]Object, error) {
	files, err := ManifestFiles(path)
	if err != nil {
		return nil, err
	}
	var objs []Object
	var probs Problems
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read manifests: %w", err)
		}
		o, ps := parse(data, f)
		objs = append(objs, o...)
		probs = append(probs, ps...)
	}
	return finish(objs, probs)
}

// ManifestFiles lists the manifest files of path: path itself when it is a
// file, else the .yaml, .yml and .json files of the directory (not
// recursive), in name order.
func ManifestFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("read manifests: %w", err)
	}
	var files []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("read manifests: no .yaml, .yml or .json file in %s", path)
	}
	return files, nil
}

// Key is the object's record key on the campaigns topic: "Kind/name".
func Key(o Object) string { return o.GetKind() + "/" + o.GetMetadata().Name }

// Decode reads an object in its stored JSON form.
func Decode(data []byte) (Object, error) {
	var head TypeMeta
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	var obj Object
	switch head.Kind {
	case KindWebhook:
		obj = &Webhook{}
	case KindSegment:
		obj = &Segment{}
	case KindCampaign:
		obj = &Campaign{}
	default:
		return nil, fmt.Errorf("decode manifest: unknown kind %q", head.Kind)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", head.Kind, err)
	}
	return obj, nil
}

// Clone returns a deep copy of o (through its stored JSON form), for
// callers that change an object they got from a shared catalog.
func Clone(o Object) (Object, error) {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("clone %s: %w", Key(o), err)
	}
	return Decode(raw)
}
