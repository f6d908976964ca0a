package evaluator

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// slowDecodeObject is decodeObject without its fast path.
func slowDecodeObject(b []byte) map[string]any {
	m := map[string]any{}
	if len(b) > 0 {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		_ = dec.Decode(&m)
	}
	return m
}

var objectSamples = []string{
	``, `{}`, ` { } `, `{"n":3}`, `{"n":-0.5e+7,"s":"Canada","t":true,"f":false,"z":null}`, `{"a":1,"a":2}`,
	`{"n":01}`, `{"n":1.}`, `{"n":-}`, `{"n":1e}`, `{"a":1,}`, `{"a" 1}`, `{"a":1} x`, `{"a":1}{"b":2}`, `[1]`, `"s"`, `3`, `null`,
	`{"nested":{"a":1}}`, `{"list":[1,2]}`, `{"esc":"a\"b"}`, `{"uni":"héllo"}`, `{"ctl":"a` + "\t" + `b"}`, `{"a":tru}`, `{"a":nul}`,
	"{\n\t\"a\" : 1 ,\r\n \"b\":\"x\"\n}", `{"a":1`, `{"a":`, `{"a"`, `{`, `{"":""}`, `{"big":123456789012345678901234567890}`,
}

func TestDecodeObjectFastPath(t *testing.T) {
	for _, s := range objectSamples {
		if got, want := decodeObject([]byte(s)), slowDecodeObject([]byte(s)); !reflect.DeepEqual(got, want) {
			t.Errorf("decodeObject(%q) = %#v, want %#v", s, got, want)
		}
	}
	if _, ok := decodeFlatObject([]byte(`{"n":3,"s":"x"}`)); !ok {
		t.Error("a flat object does not take the fast path")
	}
}

func FuzzDecodeObject(f *testing.F) {
	for _, s := range objectSamples {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := decodeObject(b), slowDecodeObject(b); !reflect.DeepEqual(got, want) {
			t.Errorf("decodeObject(%q) = %#v, want %#v", b, got, want)
		}
	})
}
