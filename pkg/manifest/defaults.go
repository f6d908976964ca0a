package manifest

import (
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
)

// Defaults of CONTRACT.md section 2 and docs/manifests.md, filled in by
// ApplyDefaults.
const (
	DefaultMethod           = "POST"
	DefaultTimeout          = 3 * time.Second
	DefaultMaxInFlight      = 10
	DefaultRetryMaxAge      = 6 * time.Hour
	DefaultContentType      = "json"
	DefaultLinkedTimeout    = 2 * time.Second
	DefaultLinkedOnError    = "abort"
	DefaultBatchLinger      = time.Second
	DefaultQuietHoursAction = "delay"
	DefaultGoalWithin       = 7 * 24 * time.Hour
	DefaultProfileVariable  = "Identity"
)

// ApplyDefaults fills the defaults into o, so that a stored object states
// every value it runs with. It is applied to valid objects only (after
// Validate) and is idempotent:
//
//   - Webhook: method POST, timeout 3s, maxInFlight 10, retry schedule
//     5s 30s 2m 10m 30m 1h 3h and maxAge 6h (each part only when unset).
//   - Campaign: state active, what.contentType json, linkedContent timeout
//     2s and onError abort, batch linger 1s, quietHours action delay, goal
//     within 7d.
//
// A profileVariables payload that lists nothing sends Identity only; that is
// the renderer's default and is not written into the object.
func ApplyDefaults(o Object) {
	switch o := o.(type) {
	case *Webhook:
		s := &o.Spec
		if s.Method == "" {
			s.Method = DefaultMethod
		}
		if s.Timeout == 0 {
			s.Timeout = duration.Duration(DefaultTimeout)
		}
		if s.MaxInFlight == 0 {
			s.MaxInFlight = DefaultMaxInFlight
		}
		if s.Retry == nil {
			s.Retry = &Retry{}
		}
		if len(s.Retry.Schedule) == 0 {
			s.Retry.Schedule = make([]duration.Duration, 0, len(DefaultRetrySchedule))
			for _, d := range DefaultRetrySchedule {
				s.Retry.Schedule = append(s.Retry.Schedule, duration.Duration(d))
			}
		}
		if s.Retry.MaxAge == 0 {
			s.Retry.MaxAge = duration.Duration(DefaultRetryMaxAge)
		}
	case *Campaign:
		s := &o.Spec
		if s.State == "" {
			s.State = StateActive
		}
		if s.What.ContentType == "" {
			s.What.ContentType = DefaultContentType
		}
		for i := range s.What.LinkedContent {
			lc := &s.What.LinkedContent[i]
			if lc.Timeout == 0 {
				lc.Timeout = duration.Duration(DefaultLinkedTimeout)
			}
			if lc.OnError == "" {
				lc.OnError = DefaultLinkedOnError
			}
		}
		if b := s.What.Batch; b != nil && b.Linger == 0 {
			b.Linger = duration.Duration(DefaultBatchLinger)
		}
		if q := s.QuietHours; q != nil && q.Action == "" {
			q.Action = DefaultQuietHoursAction
		}
		if g := s.Goal; g != nil && g.Within == 0 {
			g.Within = duration.Duration(DefaultGoalWithin)
		}
	}
}
