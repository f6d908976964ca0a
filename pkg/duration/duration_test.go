package duration

import (
	"errors"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"90s", 90 * time.Second, true},
		{"30m", 30 * time.Minute, true},
		{"1h30m", 90 * time.Minute, true},
		{"1.5h", 90 * time.Minute, true},
		{"3d", 3 * day, true},
		{"2w", 14 * day, true},
		{"1d12h", 36 * time.Hour, true},
		{"1w2d3h", 9*day + 3*time.Hour, true},
		{"-3d", -3 * day, true},
		{"250ms", 250 * time.Millisecond, true},
		{"", 0, false},
		{"3", 0, false},
		{"d", 0, false},
		{"3x", 0, false},
		{"three days", 0, false},
		{"3dd", 0, false},
		{"1.5d", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.ok != (err == nil) {
				t.Fatalf("Parse(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, s := range []string{"90s", "30m", "3d", "2w", "1d12h0m0s", "36h", "-3d", "250ms"} {
		d, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(Format(d))
		if err != nil || back != d {
			t.Fatalf("Format(%v) = %q does not parse back (%v, %v)", d, Format(d), back, err)
		}
	}
	if got := Format(3 * 24 * time.Hour); got != "3d" {
		t.Fatalf("Format(3d) = %q", got)
	}
	if got := Format(14 * 24 * time.Hour); got != "2w" {
		t.Fatalf("Format(2w) = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"90s", "3d", "1w2d3h", "-1.5h", "", "ddd", "9999999999999999999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if back, err := Parse(Format(d)); err != nil || back != d {
			t.Fatalf("Parse(%q) = %v but Format → %q → %v, %v", s, d, Format(d), back, err)
		}
	})
}
