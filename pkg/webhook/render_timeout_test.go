package webhook

import (
	"errors"
	"testing"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// A render past its time limit is ErrRenderTimeout (which the dispatcher
// retries) as well as ErrRenderLimit; the other limits are not timeouts.
func TestRenderTimeoutIsItsOwnError(t *testing.T) {
	cases := []struct {
		name    string
		limits  RenderLimits
		body    string
		timeout bool
	}{
		{"time", RenderLimits{Timeout: time.Nanosecond}, `{% for i in (1..100000) %}{{ i }}{% endfor %}`, true},
		{"time, no loop", RenderLimits{Timeout: time.Nanosecond}, `{"user": {{ profile.Identity | json }}}`, true},
		{"iterations", RenderLimits{MaxIterations: 10, Timeout: time.Minute}, `{% for i in (1..100) %}{{ i }}{% endfor %}`, false},
		{"output", RenderLimits{MaxOutput: 10, Timeout: time.Minute}, `{% for i in (1..100) %}{{ i }}{% endfor %}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cp := campaign()
			cp.Spec.What.Payload = manifest.Payload{Body: c.body}
			_, err := NewRendererWithLimits(c.limits).Render(cp, []*hookstreamv1.Trigger{trigger()}, nil, time.Now())
			if !errors.Is(err, ErrRenderLimit) {
				t.Fatalf("err %v, want a render limit", err)
			}
			if got := errors.Is(err, ErrRenderTimeout); got != c.timeout {
				t.Fatalf("errors.Is(%v, ErrRenderTimeout) = %v, want %v", err, got, c.timeout)
			}
		})
	}
}
