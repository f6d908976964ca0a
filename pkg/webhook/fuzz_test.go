package webhook

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// FuzzParseRetryAfter: whatever a receiver sends, the delay is between 0
// and the one-week ceiling, and delay-seconds are read exactly.
func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	for _, s := range []string{"120", "", "-5", "0", " 7 ", "604800", "604801", "99999999999999999999", "soon",
		"Fri, 27 Nov 2026 10:01:00 GMT", "Fri, 27 Nov 2026 09:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
		"Friday, 27-Nov-26 10:01:00 GMT", "Fri Nov 27 10:01:00 2026", "1e3", "+5", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := ParseRetryAfter(v, now)
		if d < 0 || d > MaxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %v, outside [0, %v]", v, d, MaxRetryAfter)
		}
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n >= 0 && n <= int64(MaxRetryAfter/time.Second) {
			if d != time.Duration(n)*time.Second {
				t.Fatalf("ParseRetryAfter(%q) = %v, want %ds", v, d, n)
			}
		}
	})
}

// FuzzRenderTemplate: any Liquid body, with any profile, renders or fails
// with an error, within the render limits: no panic, no output beyond
// MaxOutput, no render that outlives its timeout by more than scheduling
// noise.
func FuzzRenderTemplate(f *testing.F) {
	for _, s := range []string{
		`{"user":"{{ profile.Identity }}","email":{{ profile.Email | json }}}`,
		`{% for i in (1..1000000000) %}{% endfor %}`,
		`{% assign s = "xxxxxxxxxxxxxxxx" %}{% for i in (1..40) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}`,
		`{% capture s %}{{ s }}{{ s }}{% endcapture %}`,
		`{% assign a = "x,y" | split: "," %}{% for i in (1..40) %}{% assign a = a | concat: a %}{% endfor %}{{ a | join: "," }}`,
		`{{ "%%%" | base64_decode }}`, `{% include "/etc/passwd" %}`, `{{ event.properties | json }}`,
		`{% if profile.Country == "Canada" %}{{ profile["Last Score"] | plus: 1 }}{% else %}no{% endif %}`,
		`{{ now | date: "%Y-%m-%d" }}`, `{% raw %}{{ x }}{% endraw %}`, `{{`, `{% for %}`, `{{ x | nofilter }}`,
	} {
		f.Add(s, []byte(`{"Email":"jack@example.com","Country":"Canada","Last Score":308}`))
	}
	limits := RenderLimits{MaxOutput: 64 << 10, MaxIterations: 10_000, MaxItems: 10_000, Timeout: 100 * time.Millisecond}
	r := NewRendererWithLimits(limits)
	f.Fuzz(func(t *testing.T, body string, profile []byte) {
		c := campaign()
		c.Spec.What.Payload = manifest.Payload{Body: body}
		tr := trigger()
		tr.ProfileJson = profile
		start := time.Now()
		req, err := r.Render(c, []*hookstreamv1.Trigger{tr}, nil, start)
		if took := time.Since(start); took > limits.Timeout+2*time.Second {
			t.Fatalf("render took %v with a %v timeout", took, limits.Timeout)
		}
		if err != nil {
			if errors.Is(err, ErrRenderLimit) && manifest.CheckLiquid(body) != nil {
				t.Fatalf("a template that does not validate hit a render limit instead of failing to parse: %v", err)
			}
			return
		}
		if len(req.Body) > limits.MaxOutput {
			t.Fatalf("rendered %d bytes, limit %d", len(req.Body), limits.MaxOutput)
		}
	})
}
