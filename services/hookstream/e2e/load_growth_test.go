package e2e

import (
	"testing"
	"time"
)

// The memory verdict of the load harness, on synthetic samples: a leak
// fails, a rise that comes and goes with the consumer's backlog does not.
func TestLoadGrowthVerdict(t *testing.T) {
	start := time.Unix(0, 0)
	cfg := loadConfig{rate: 5000, growth: 0.25, growthMiB: 32}
	cases := []struct {
		name string
		rss  func(i int) float64 // MiB at sample i of 30 (i = 30 is the drained end)
		lag  func(i int) int64
		grew bool
	}{
		{"flat", func(int) float64 { return 100 }, func(int) int64 { return 50 }, false},
		{"sawtooth", func(i int) float64 { return 100 + float64(i%4)*15 }, func(int) int64 { return 50 }, false},
		{"leak", func(i int) float64 { return 60 + 5*float64(i) }, func(int) int64 { return 50 }, true},
		{"backlog then drained", func(i int) float64 {
			if i >= 20 && i < 30 {
				return 160
			}
			return 100
		}, func(i int) int64 {
			if i >= 20 && i < 30 {
				return 150000
			}
			return 50
		}, false},
		{"backlog and still high once drained", func(i int) float64 {
			if i >= 20 {
				return 160
			}
			return 100
		}, func(i int) int64 {
			if i >= 20 && i < 30 {
				return 150000
			}
			return 50
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := loadReport{cfg: cfg, prodStart: start, prodEnd: start.Add(290 * time.Second)}
			for i := 0; i <= 30; i++ {
				r.samples = append(r.samples, loadSample{
					at:  start.Add(time.Duration(i) * 10 * time.Second),
					rss: map[string]int64{"evaluator": int64(c.rss(i) * mib)},
					lag: map[string]int64{"hookstream-evaluator": c.lag(i)},
				})
			}
			for _, g := range r.rssGrowth() {
				if g.name != "evaluator" {
					continue
				}
				if got := g.grew(cfg); got != c.grew {
					t.Errorf("grew = %v, want %v (middle %.0f, last %.0f MiB; %s)", got, c.grew, g.middle, g.last, g.how)
				}
			}
		})
	}
}
