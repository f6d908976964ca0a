package condition

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

func TestCompare(t *testing.T) {
	tests := []struct {
		v       any
		op      string
		operand any
		want    bool
	}{
		{json.Number("899"), "gte", 500, true},
		{json.Number("499.5"), "gte", 500, false},
		{"Canada", "eq", "Canada", true},
		{"Canada", "neq", "India", true},
		{nil, "neq", "India", true},
		{nil, "eq", "India", false},
		{json.Number("3"), "eq", "3", true},
		{true, "eq", "true", true},
		{"sku-42", "in", []any{"sku-1", "sku-42"}, true},
		{"sku-42", "nin", []any{"sku-1", "sku-42"}, false},
		{"Casio Chronograph Watch", "contains", "Chrono", true},
		{[]any{"a", "b"}, "contains", "b", true},
		{nil, "exists", nil, false},
		{"x", "exists", nil, true},
		{nil, "not_exists", nil, true},
		{"2026-11-30T12:00:00Z", "after", "2026-11-27T00:00:00Z", true},
		{json.Number("1764237900"), "before", "2026-11-28T00:00:00Z", true},
		{json.Number("1764237900123"), "after", "2025-01-01T00:00:00Z", true},
		{json.Number("5"), "between", []any{1, 10}, true},
		{json.Number("11"), "between", []any{1, 10}, false},
		{"b", "lt", "c", true},
		{"abc", "gt", 3, false},
	}
	for _, tt := range tests {
		got, err := Compare(tt.v, tt.op, tt.operand)
		if err != nil {
			t.Errorf("Compare(%v %s %v): %v", tt.v, tt.op, tt.operand, err)
		}
		if got != tt.want {
			t.Errorf("Compare(%v %s %v) = %v, want %v", tt.v, tt.op, tt.operand, got, tt.want)
		}
	}
}

type fakeHistory map[string]int

func (h fakeHistory) Count(name string, _ []manifest.Condition, _ time.Time) (int, error) {
	return h[name], nil
}

func TestMatchCombinators(t *testing.T) {
	one, three := 1, 3
	c := manifest.Condition{All: []manifest.Condition{
		{Profile: &manifest.PropertyCondition{Property: "Country", Op: "eq", Value: "Canada"}},
		{Any: []manifest.Condition{
			{Property: "Price", Op: "gte", Value: 500},
			{Event: &manifest.EventCondition{Name: "Charged", Count: &manifest.Count{Gte: &three}}},
		}},
		{Not: &manifest.Condition{Event: &manifest.EventCondition{Name: "Unsubscribed", Count: &manifest.Count{Gte: &one}}}},
	}}
	env := Env{
		Props:   map[string]any{"Price": json.Number("100")},
		Profile: map[string]any{"Country": "Canada"},
		History: fakeHistory{"Charged": 3},
	}
	if ok, err := Match(&c, env); !ok || err != nil {
		t.Fatalf("Match = %v, %v; want true", ok, err)
	}
	env.History = fakeHistory{"Charged": 3, "Unsubscribed": 1}
	if ok, _ := Match(&c, env); ok {
		t.Fatal("not(event Unsubscribed) should exclude the user")
	}
	env.History = nil
	if _, err := Match(&c, env); err != ErrNoHistory {
		t.Fatalf("without history: err = %v, want ErrNoHistory", err)
	}
	if ok, _ := Match(&manifest.Condition{Property: "address.city", Op: "eq", Value: "Toronto"}, Env{Props: map[string]any{"address": map[string]any{"city": "Toronto"}}}); !ok {
		t.Fatal("dotted path lookup failed")
	}
}

// FuzzCompare: any operator over any JSON values never panics, and
// exists/not_exists are each other's negation.
func FuzzCompare(f *testing.F) {
	f.Add(`899`, "gte", `500`)
	f.Add(`"Canada"`, "in", `["Canada","India"]`)
	f.Add(`"2026-11-30T12:00:00Z"`, "between", `["2026-01-01","2027-01-01"]`)
	f.Add(`null`, "contains", `{}`)
	f.Fuzz(func(t *testing.T, value, op, operand string) {
		var v, o any
		if json.Unmarshal([]byte(value), &v) != nil || json.Unmarshal([]byte(operand), &o) != nil {
			return
		}
		_, _ = Compare(v, op, o)
		e, _ := Compare(v, "exists", nil)
		ne, _ := Compare(v, "not_exists", nil)
		if e == ne {
			t.Fatalf("exists and not_exists agree on %s", value)
		}
	})
}

func TestAsNumberStrings(t *testing.T) {
	for s, want := range map[string]bool{
		"12": true, "-1.5": true, "+3": true, ".5": true, "1e3": true, "0x1p4": true,
		"": false, "Canada": false, " 1": false, "Inf": false, "-Inf": false, "+inf": false, "NaN": false, "nan": false, "1e999": false, "12abc": false,
	} {
		if _, ok := AsNumber(s); ok != want {
			t.Errorf("AsNumber(%q) ok = %v, want %v", s, ok, want)
		}
	}
}
