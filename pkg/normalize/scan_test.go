package normalize

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
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

// FuzzRFC3339 checks the RFC 3339 fast path against time.Parse: whatever it
// accepts, time.Parse accepts with the same time.
func FuzzRFC3339(f *testing.F) {
	for _, s := range []string{
		"2026-11-27T10:00:00Z", "2026-11-27T10:00:00.123Z", "2026-11-27T11:00:00+01:00",
		"2026-11-27T10:00:00.123456789123Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999-23:59",
		"2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
		"1969-12-31T23:59:59.5Z", "2026-11-27T24:00:00Z", "2026-11-27t10:00:00z", "2026-11-27T10:00:00.Z",
		"2026-11-27T10:00:00+24:00", "2026-11-27T10:00:00+01:60", "2026-11-27T10:00:00+0100",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, ok := fastRFC3339Ms([]byte(s))
		if !ok {
			return
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("%q: fast path gives %d, time.Parse fails: %v", s, ms, err)
		}
		if tm.UnixMilli() != ms {
			t.Fatalf("%q: fast path gives %d, time.Parse %d", s, ms, tm.UnixMilli())
		}
	})
}
