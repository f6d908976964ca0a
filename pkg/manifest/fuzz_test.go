package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser and validator: they never
// panic, always answer with objects or Problems, and whatever they accept
// can be stored and read back as an equally valid object.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	for _, s := range []string{
		threeDocs,
		`[{"apiVersion":"hookstream.dev/v1","kind":"Webhook","metadata":{"name":"a"},"spec":{"url":"https://a.example/"}}]`,
		"apiVersion: hookstream.dev/v1\nkind: Segment\nmetadata: {name: s}\nspec: {all: [&a {property: x, op: in, value: [1, 2]}, {not: *a}]}\n",
		"kind: Campaign\nspec: {trigger: {within: 3d, type: actions}, controlGroup: {percent: .nan}}\n",
		"kind: Webhook\nspec: {auth: {basic: {passwordRef: x}}, <<: {url: 1}}\n",
		"- kind: Campaign\n- [1]\n---\n{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Parse(data, "fuzz")
		if err != nil {
			var probs Problems
			if !errors.As(err, &probs) || len(probs) == 0 {
				t.Fatalf("Parse error is not Problems: %v", err)
			}
			return
		}
		if len(Validate(objs, nil)) > 0 {
			return
		}
		for _, o := range objs {
			ApplyDefaults(o)
			raw, err := json.Marshal(o)
			if err != nil {
				t.Fatalf("valid %s cannot be stored: %v", Key(o), err)
			}
			back, err := Decode(raw)
			if err != nil {
				t.Fatalf("stored %s does not decode: %v\n%s", Key(o), err, raw)
			}
			if probs := Validate([]Object{back}, func(string, string) bool { return true }); len(probs) > 0 {
				t.Fatalf("stored %s is no longer valid: %v\n%s", Key(o), probs, raw)
			}
		}
	})
}
