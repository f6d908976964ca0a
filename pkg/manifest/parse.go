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
	Source string
	// Line is the line in Source where the problem is, 0 when unknown.
	Line int
	// Object is "Kind/name" when known.
	Object string
	Path   string
	Reason string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Source != "" {
		b.WriteString(p.Source)
		b.WriteString(":")
	}
	if p.Line > 0 {
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

// Parse reads manifests from data: YAML documents separated by "---", or
// JSON (one object, or an array of objects). Unknown fields, wrong types and
// unknown kinds are reported with their line, all at once, as Problems.
// source names the input in problems.
func Parse(data []byte, source string) ([]Object, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return parseJSONArray(trimmed, source)
	}
	var objs []Object
	var probs Problems
	for _, d := range splitDocuments(data) {
		obj, ps := parseDocument(d.body, d.line, source)
		probs = append(probs, ps...)
		if obj != nil {
			objs = append(objs, obj)
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return objs, nil
}

type document struct {
	body []byte
	line int // line of the document's first line in the input, 0-based offset
}

var docSep = regexp.MustCompile(`^---(\s.*)?$`)

// splitDocuments splits a YAML stream at "---" lines, keeping each
// document's line offset so that problems name the line in the file.
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
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var unknownField = regexp.MustCompile(`^field (\S+) not found in type`)

func parseDocument(body []byte, offset int, source string) (Object, Problems) {
	var head struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Metadata   Metadata `yaml:"metadata"`
	}
	if err := yaml.Unmarshal(body, &head); err != nil {
		return nil, yamlProblems(err, offset, source, "")
	}
	objName := head.Kind + "/" + head.Metadata.Name
	var obj Object
	switch head.Kind {
	case KindWebhook:
		obj = &Webhook{}
	case KindSegment:
		obj = &Segment{}
	case KindCampaign:
		obj = &Campaign{}
	case "":
		return nil, Problems{{Source: source, Line: offset + 1, Path: "kind", Reason: "is required (Webhook, Segment or Campaign)"}}
	default:
		return nil, Problems{{Source: source, Line: offset + 1, Object: objName, Path: "kind", Reason: fmt.Sprintf("unknown kind %q (want Webhook, Segment or Campaign)", head.Kind)}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(body))
	dec.KnownFields(true)
	if err := dec.Decode(obj); err != nil {
		return nil, yamlProblems(err, offset, source, objName)
	}
	return obj, nil
}

func yamlProblems(err error, offset int, source, object string) Problems {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var ps Problems
	for _, m := range msgs {
		p := Problem{Source: source, Object: object, Reason: m}
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			n, _ := strconv.Atoi(sub[1])
			p.Line = n + offset
			p.Reason = sub[2]
			if f := unknownField.FindStringSubmatch(p.Reason); f != nil {
				p.Path = f[1]
				p.Reason = "unknown field"
			}
		}
		ps = append(ps, p)
	}
	return ps
}

func parseJSONArray(data []byte, source string) ([]Object, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		return nil, Problems{{Source: source, Reason: "invalid JSON: " + err.Error()}}
	}
	var objs []Object
	var probs Problems
	for i, r := range raws {
		// JSON is YAML: reuse the strict YAML path, naming the element.
		obj, ps := parseDocument(r, 0, fmt.Sprintf("%s[%d]", source, i))
		probs = append(probs, ps...)
		if obj != nil {
			objs = append(objs, obj)
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return objs, nil
}

// ParsePath reads manifests from a file, or from every .yaml, .yml and .json
// file of a directory (not recursive, in name order).
func ParsePath(path string) ([]Object, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if st.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		files = files[:0]
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					files = append(files, filepath.Join(path, e.Name()))
				}
			}
		}
		sort.Strings(files)
	}
	var objs []Object
	var probs Problems
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		o, err := Parse(data, f)
		var ps Problems
		if errors.As(err, &ps) {
			probs = append(probs, ps...)
			continue
		}
		if err != nil {
			return nil, err
		}
		objs = append(objs, o...)
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return objs, nil
}

// Key is the object's record key on the campaigns topic: "Kind/name".
func Key(o Object) string { return o.GetKind() + "/" + o.GetMetadata().Name }

// Decode reads an object in its stored JSON form.
func Decode(data []byte) (Object, error) {
	var head TypeMeta
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, err
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
		return nil, fmt.Errorf("unknown kind %q", head.Kind)
	}
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, err
	}
	return obj, nil
}
