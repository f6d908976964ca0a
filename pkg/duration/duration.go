// Package duration parses the durations users write in manifests and
// configuration: Go durations ("90s", "1h30m") plus days and weeks ("3d",
// "2w", "1d12h").
package duration

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("must be a duration like 30m, 36h, 3d or 2w")

// Parse reads s as a Go duration, allowing d (24h) and w (7d) units, and a
// leading minus sign.
func Parse(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, fmt.Errorf("%q: %w", orig, ErrSyntax)
	}
	neg := false
	if s[0] == '-' || s[0] == '+' {
		neg = s[0] == '-'
		s = s[1:]
	}
	var total time.Duration
	var rest strings.Builder
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 || i == len(s) {
			// Not a number followed by a unit: let time.ParseDuration judge the rest.
			rest.WriteString(s)
			break
		}
		unit := s[i]
		if unit == 'd' || unit == 'w' {
			n, err := strconv.ParseInt(s[:i], 10, 64)
			if err != nil || n > 1<<20 {
				return 0, fmt.Errorf("%q: %w", orig, ErrSyntax)
			}
			d := time.Duration(n) * 24 * time.Hour
			if unit == 'w' {
				d *= 7
			}
			total += d
			s = s[i+1:]
			continue
		}
		// Copy the number and its (possibly multi-letter) unit.
		j := i
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9') && s[j] != '.' {
			j++
		}
		if j < len(s) && s[j] == '.' {
			// Fractions are only valid for Go units; hand the rest over.
			rest.WriteString(s)
			break
		}
		rest.WriteString(s[:j])
		s = s[j:]
	}
	if r := rest.String(); r != "" {
		d, err := time.ParseDuration(r)
		if err != nil {
			return 0, fmt.Errorf("%q: %w", orig, ErrSyntax)
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// Format writes d in the largest whole units, using d and w where they fit.
func Format(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	const day = 24 * time.Hour
	var b strings.Builder
	b.WriteString(sign)
	if w := d / (7 * day); w > 0 && d%(7*day) == 0 {
		return fmt.Sprintf("%s%dw", sign, w)
	}
	if days := d / day; days > 0 {
		fmt.Fprintf(&b, "%dd", days)
		d %= day
		if d == 0 {
			return b.String()
		}
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	b.WriteString(s)
	return b.String()
}

// Duration is a time.Duration that reads and writes the extended syntax in
// YAML, JSON and flags.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String implements fmt.Stringer and flag.Value.
func (d Duration) String() string { return Format(time.Duration(d)) }

// Set implements flag.Value.
func (d *Duration) Set(s string) error {
	v, err := Parse(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML accepts a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!int" || n.Tag == "!!float" {
		return fmt.Errorf("line %d: %q %w", n.Line, n.Value, ErrSyntax)
	}
	v, err := Parse(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the extended syntax.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalJSON accepts a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s %w", b, ErrSyntax)
	}
	return d.Set(s)
}

// MarshalJSON writes the extended syntax.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }
