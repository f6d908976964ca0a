// Package condition evaluates the conditions of CONTRACT.md section 2
// (property, profile and event-history conditions and their all/any/not
// combinations) against an event, a profile and a user's event history.
package condition

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// ErrNoHistory is returned for an event-history condition when the caller
// has no history to evaluate it against.
var ErrNoHistory = errors.New("event-history condition needs the user's event history")

// History answers event-history questions about one user.
type History interface {
	// Count returns how many events named name matching where happened in
	// [since, now]; since zero means all retained history.
	Count(name string, where []manifest.Condition, since time.Time) (int, error)
}

// Env is what a condition is evaluated against.
type Env struct {
	// Props are the properties a plain property condition reads: the
	// event's in a trigger's where, the profile's in a segment.
	Props map[string]any
	// Profile is the user's profile.
	Profile map[string]any
	// History may be nil; event-history conditions then fail with
	// ErrNoHistory.
	History History
	// Now is the evaluation time (event time).
	Now time.Time
}

// Match evaluates c in env.
func Match(c *manifest.Condition, env Env) (bool, error) {
	switch {
	case c.Property != "":
		return Compare(Lookup(env.Props, c.Property), c.Op, c.Value)
	case c.Profile != nil:
		return Compare(Lookup(env.Profile, c.Profile.Property), c.Profile.Op, c.Profile.Value)
	case c.Event != nil:
		if env.History == nil {
			return false, ErrNoHistory
		}
		var since time.Time
		if c.Event.In > 0 {
			since = env.Now.Add(-c.Event.In.Std())
		}
		n, err := env.History.Count(c.Event.Name, c.Event.Where, since)
		if err != nil {
			return false, err
		}
		return CountMatches(c.Event.Count, n), nil
	case c.All != nil:
		for i := range c.All {
			if ok, err := Match(&c.All[i], env); err != nil || !ok {
				return false, err
			}
		}
		return true, nil
	case c.Any != nil:
		for i := range c.Any {
			if ok, err := Match(&c.Any[i], env); err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	case c.Not != nil:
		ok, err := Match(c.Not, env)
		return !ok && err == nil, err
	}
	return false, errors.New("empty condition")
}

// MatchAll reports whether every condition matches (true for none).
func MatchAll(cs []manifest.Condition, env Env) (bool, error) {
	for i := range cs {
		if ok, err := Match(&cs[i], env); err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// CountMatches applies a count bound; nil means gte: 1.
func CountMatches(c *manifest.Count, n int) bool {
	if c == nil {
		return n >= 1
	}
	ok := true
	if c.Eq != nil {
		ok = ok && n == *c.Eq
	}
	if c.Gt != nil {
		ok = ok && n > *c.Gt
	}
	if c.Gte != nil {
		ok = ok && n >= *c.Gte
	}
	if c.Lt != nil {
		ok = ok && n < *c.Lt
	}
	if c.Lte != nil {
		ok = ok && n <= *c.Lte
	}
	return ok
}

// Lookup finds a property by its exact name, else by a dotted path into
// nested objects ("address.city"). Missing is nil.
func Lookup(props map[string]any, name string) any {
	if v, ok := props[name]; ok {
		return v
	}
	cur := any(props)
	for _, part := range strings.Split(name, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[part]; !ok {
			return nil
		}
	}
	return cur
}

// Compare applies op to a property value v and the condition's operand.
func Compare(v any, op string, operand any) (bool, error) {
	switch op {
	case "exists":
		return v != nil, nil
	case "not_exists":
		return v == nil, nil
	}
	if v == nil {
		return op == "neq" || op == "nin", nil
	}
	switch op {
	case "eq":
		return equal(v, operand), nil
	case "neq":
		return !equal(v, operand), nil
	case "gt", "gte", "lt", "lte":
		c, ok := order(v, operand)
		if !ok {
			return false, nil
		}
		switch op {
		case "gt":
			return c > 0, nil
		case "gte":
			return c >= 0, nil
		case "lt":
			return c < 0, nil
		default:
			return c <= 0, nil
		}
	case "in", "nin":
		list, ok := operand.([]any)
		if !ok {
			return false, fmt.Errorf("op %s needs a list value", op)
		}
		found := false
		for _, x := range list {
			if equal(v, x) {
				found = true
				break
			}
		}
		return found == (op == "in"), nil
	case "contains":
		switch vv := v.(type) {
		case string:
			s, ok := operand.(string)
			return ok && strings.Contains(vv, s), nil
		case []any:
			for _, x := range vv {
				if equal(x, operand) {
					return true, nil
				}
			}
		}
		return false, nil
	case "before", "after":
		t, ok1 := AsTime(v)
		u, ok2 := AsTime(operand)
		if !ok1 || !ok2 {
			return false, nil
		}
		if op == "before" {
			return t.Before(u), nil
		}
		return t.After(u), nil
	case "between":
		list, ok := operand.([]any)
		if !ok || len(list) != 2 {
			return false, errors.New("op between needs a list of two values")
		}
		lo, ok1 := order(v, list[0])
		hi, ok2 := order(v, list[1])
		return ok1 && ok2 && lo >= 0 && hi <= 0, nil
	}
	return false, fmt.Errorf("unknown operator %q", op)
}

func equal(a, b any) bool {
	if x, ok := AsNumber(a); ok {
		if y, ok := AsNumber(b); ok {
			return x == y
		}
	}
	switch av := a.(type) {
	case string:
		switch bv := b.(type) {
		case string:
			return av == bv
		case bool:
			return av == strconv.FormatBool(bv)
		}
		return false
	case bool:
		switch bv := b.(type) {
		case bool:
			return av == bv
		case string:
			return strconv.FormatBool(av) == bv
		}
	}
	return false
}

// order compares numbers, or else times, or else strings; ok is false when
// the values are not comparable.
func order(a, b any) (int, bool) {
	if x, ok := AsNumber(a); ok {
		if y, ok := AsNumber(b); ok {
			switch {
			case x < y:
				return -1, true
			case x > y:
				return 1, true
			}
			return 0, true
		}
	}
	if t, ok := AsTime(a); ok {
		if u, ok := AsTime(b); ok {
			return t.Compare(u), true
		}
	}
	as, ok1 := a.(string)
	bs, ok2 := b.(string)
	if ok1 && ok2 {
		return strings.Compare(as, bs), true
	}
	return 0, false
}

// AsNumber reads a JSON or YAML number, or a numeric string.
func AsNumber(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, !math.IsNaN(n)
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case uint64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case string:
		// Only a string that starts like a finite number can be one; the
		// check spares ParseFloat's error (two allocations) for every
		// comparison of a word such as "Canada".
		if n == "" || !(n[0] >= '0' && n[0] <= '9' || n[0] == '-' || n[0] == '+' || n[0] == '.') {
			return 0, false
		}
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	return 0, false
}

// AsTime reads an RFC 3339 string, a time.Time, or Unix seconds or
// milliseconds (numbers above 1e11 are milliseconds), as CONTRACT.md's ts.
func AsTime(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, true
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, t); err == nil {
			return ts, true
		}
		if ts, err := time.Parse("2006-01-02", t); err == nil {
			return ts, true
		}
		return time.Time{}, false
	}
	if n, ok := AsNumber(v); ok {
		if n > 1e11 {
			return time.UnixMilli(int64(n)), true
		}
		return time.Unix(int64(n), 0), true
	}
	return time.Time{}, false
}
