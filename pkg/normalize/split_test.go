package normalize

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSplitBody(t *testing.T) {
	clevertap, err := os.ReadFile(filepath.Join("testdata", "events-clevertap.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		body   string
		want   []string
		reason string // for bad_body
	}{
		{"object", ` {"a":1} `, []string{`{"a":1}`}, ""},
		{"pretty object", "{\n  \"a\": 1,\n  \"b\": [1, 2]\n}\n", []string{"{\n  \"a\": 1,\n  \"b\": [1, 2]\n}"}, ""},
		{"bom", "\xef\xbb\xbf{\"a\":1}", []string{`{"a":1}`}, ""},
		{"array", `[{"a":1}, {"b":2} ,{"c":3}]`, []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}, ""},
		{"array keeps non-objects", `[{"a":1},"x",[2]]`, []string{`{"a":1}`, `"x"`, `[2]`}, ""},
		{"ndjson", "{\"a\":1}\n{\"b\":2}\r\n\n  \n{\"c\":3}\n", []string{`{"a":1}`, `{"b":2}`, `{"c":3}`}, ""},
		{"ndjson with a bad line", "{\"a\":1}\n{\"b\":\n{\"c\":3}", []string{`{"a":1}`, `{"b":`, `{"c":3}`}, ""},
		{"concatenated objects", `{"a":1}{"b":2}`, []string{`{"a":1}`, `{"b":2}`}, ""},
		{"single invalid line", `{"a":`, []string{`{"a":`}, ""},
		{"clevertap upload", string(clevertap), []string{string(bytes.TrimSpace(clevertap))}, ""},
		{"empty", " \n ", nil, "body: empty"},
		{"empty array", `[ ]`, nil, "body: empty array, no records"},
		{"garbage", `hello`, nil, "body: must be a JSON object, a JSON array of objects or NDJSON, but starts with character 'h'"},
		{"binary", "\x00\x01", nil, "body: must be a JSON object, a JSON array of objects or NDJSON, but starts with byte 0x00"},
		{"number", `42`, nil, "body: must be a JSON object, a JSON array of objects or NDJSON, but starts with character '4'"},
		{"broken array", `[{"a":1},`, nil, "body: invalid JSON array: unexpected end of input at offset 9"},
		{"array then data", `[{"a":1}] {"b":2}`, nil, "body: unexpected data after the JSON array at offset 10"},
		{"broken pretty object", "{\n  \"a\": 1,\n}", nil, "body: line 2 is not a JSON object (the body is neither one JSON object, a JSON array nor NDJSON)"},
		{"ndjson with array line", "{\"a\":1}\n[1]", nil, "body: line 2 is not a JSON object (the body is neither one JSON object, a JSON array nor NDJSON)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs, err := SplitBody([]byte(tt.body))
			if tt.reason != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != CodeBadBody || e.Reason != tt.reason {
					t.Fatalf("err = %v, want bad_body %q", err, tt.reason)
				}
				if recs != nil {
					t.Errorf("records with an error: %q", recs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != len(tt.want) {
				t.Fatalf("records %q, want %q", recs, tt.want)
			}
			for i := range recs {
				if string(recs[i]) != tt.want[i] {
					t.Errorf("record %d = %q, want %q", i, recs[i], tt.want[i])
				}
			}
		})
	}
}

// TestSplitThenNormalize is what POST /v1/events does.
func TestSplitThenNormalize(t *testing.T) {
	n := newTestNormalizer()
	body := "{\"type\":\"event\",\"identity\":\"u\",\"name\":\"A\"}\n{\"type\":\n" +
		`{"d":[{"identity":"u","type":"event","evtName":"B"},{"type":"profile"}]}` + "\n"
	recs, err := SplitBody([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var accepted, rejected int
	for _, rec := range recs {
		for _, r := range n.Normalize(rec) {
			if r.Err != nil {
				rejected++
			} else {
				accepted++
				if !json.Valid(r.Event.GetPropertiesJson()) {
					t.Errorf("invalid properties")
				}
			}
		}
	}
	if accepted != 2 || rejected != 2 {
		t.Errorf("accepted %d rejected %d, want 2 and 2", accepted, rejected)
	}
}
