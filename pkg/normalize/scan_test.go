package normalize

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// scanValid is json.Valid in terms of scanValue.
func scanValid(b []byte) bool {
	i := skipSpace(b, 0)
	end, err := scanValue(b, i)
	return err == nil && skipSpace(b, end) == len(b)
}

var scanCases = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e+10`, `true`, `false`, `null`, ` { "a" : [ 1 , { } , [ ] ] } `,
	`"\u00e9\n\"\\\/\b\f\r\t"`, `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`,
	`{"a":1,"b":{"c":[true,false,null]}}`, "\"\xff\"",
	// invalid
	``, ` `, `{`, `}`, `[`, `]`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`, `{1:2}`, `01`, `-`, `1.`,
	`.5`, `1e`, `1e+`, `+1`, `tru`, `nul`, `"abc`, `"\x"`, `"\u12"`, `"\u12g4"`, "\"a\tb\"", `[1 2]`,
	`{"a":1 "b":2}`, `1 2`, `{"a":1}}`, `[1]]`, `NaN`, `Infinity`, `'a'`, `{"a":1]`, `[1}`, `"\`,
	strings.Repeat("[", 100) + strings.Repeat("]", 99),
}

func TestScanValueMatchesJSONValid(t *testing.T) {
	for _, c := range scanCases {
		if got, want := scanValid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("%q: scanValue valid = %v, json.Valid = %v", c, got, want)
		}
	}
}

func FuzzScanValue(f *testing.F) {
	for _, c := range scanCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := scanValid(b), json.Valid(b); got != want {
			t.Fatalf("%q: scanValue valid = %v, json.Valid = %v", b, got, want)
		}
		if !scanValid(b) {
			return
		}
		v := bytes.TrimLeft(b, " \t\r\n")
		v = bytes.TrimRight(v, " \t\r\n")
		out, _, _ := appendCompact(nil, v)
		var want bytes.Buffer
		if err := json.Compact(&want, v); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, want.Bytes()) {
			t.Fatalf("appendCompact(%q) = %q, want %q", v, out, want.Bytes())
		}
	})
}

func TestAppendCompactStats(t *testing.T) {
	tests := []struct {
		in             string
		depth, members int
	}{
		{`1`, 0, 0},
		{`{}`, 1, 0},
		{`{"a":1}`, 1, 1},
		{`{"a:b":"}{[:","c":{"d":[1,{"e":2}]}}`, 4, 2},
		{`[{"a":1},{"b":2}]`, 2, 0},
		{`{"a\"":1,"b\\":2}`, 1, 2},
	}
	for _, tt := range tests {
		_, d, m := appendCompact(nil, []byte(tt.in))
		if d != tt.depth || m != tt.members {
			t.Errorf("%s: depth %d members %d, want %d %d", tt.in, d, m, tt.depth, tt.members)
		}
	}
}
