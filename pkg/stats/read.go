package stats

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stats is the body of GET /v1/campaigns/{name}/stats (CONTRACT.md
// section 5), with a per-day series added.
type Stats struct {
	Campaign       string             `json:"campaign"`
	Triggered      int64              `json:"triggered"`
	Suppressed     map[string]int64   `json:"suppressed"`
	Sent           int64              `json:"sent"`
	Delivered      int64              `json:"delivered"`
	Failed         int64              `json:"failed"`
	Retries        int64              `json:"retries"`
	Conversions    map[string]int64   `json:"conversions"`
	ConversionRate map[string]float64 `json:"conversion_rate"`
	Days           []Day              `json:"days"`
}

// Day is one UTC day of the series.
type Day struct {
	Date        string           `json:"date"`
	Triggered   int64            `json:"triggered"`
	Suppressed  map[string]int64 `json:"suppressed,omitempty"`
	Sent        int64            `json:"sent"`
	Delivered   int64            `json:"delivered"`
	Failed      int64            `json:"failed"`
	Retries     int64            `json:"retries"`
	Conversions map[string]int64 `json:"conversions"`
}

// Reader reads stats from Redis.
type Reader struct {
	RDB *redis.Client
	Now func() time.Time
	// Exists says whether a campaign is in the catalog. When set, the HTTP
	// answers are 404 for a name that is neither in the catalog nor has
	// stats (a deleted campaign's stats stay readable); when nil, every
	// name is answered, with zeros for one never seen.
	Exists func(name string) bool
}

// The contract's suppression reasons, always present in the answer.
var contractReasons = []string{"control", "frequency_cap", "duplicate", "max_users", "throttled"}

// Get returns the stats of a campaign (zeros for one never seen).
func (r *Reader) Get(ctx context.Context, campaign string) (*Stats, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	pipe := r.RDB.Pipeline()
	total := pipe.HGetAll(ctx, totalsKey(campaign))
	dayCmds := make([]*redis.MapStringStringCmd, seriesDays)
	dates := make([]string, seriesDays)
	for i := 0; i < seriesDays; i++ {
		dates[i] = now().UTC().AddDate(0, 0, i-seriesDays+1).Format("2006-01-02")
		dayCmds[i] = pipe.HGetAll(ctx, dayKey(campaign, dates[i]))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	s := &Stats{Campaign: campaign, Suppressed: map[string]int64{}}
	for _, r := range contractReasons {
		s.Suppressed[r] = 0
	}
	fill := func(m map[string]string, triggered, sent, delivered, failed, retries *int64, sup map[string]int64) (test, control int64) {
		for k, v := range m {
			n, _ := strconv.ParseInt(v, 10, 64)
			switch {
			case k == fTriggered:
				*triggered = n
			case k == fSent:
				*sent = n
			case k == fDelivered:
				*delivered = n
			case k == fFailed:
				*failed = n
			case k == fRetries:
				*retries = n
			case k == fConvTest:
				test = n
			case k == fConvCtrl:
				control = n
			case strings.HasPrefix(k, suppressed):
				sup[strings.TrimPrefix(k, suppressed)] = n
			}
		}
		return test, control
	}
	test, control := fill(total.Val(), &s.Triggered, &s.Sent, &s.Delivered, &s.Failed, &s.Retries, s.Suppressed)
	s.Conversions = map[string]int64{"test": test, "control": control}
	s.ConversionRate = map[string]float64{"test": rate(test, s.Sent), "control": rate(control, s.Suppressed["control"])}
	for i, c := range dayCmds {
		d := Day{Date: dates[i], Suppressed: map[string]int64{}}
		t, cn := fill(c.Val(), &d.Triggered, &d.Sent, &d.Delivered, &d.Failed, &d.Retries, d.Suppressed)
		d.Conversions = map[string]int64{"test": t, "control": cn}
		if len(d.Suppressed) == 0 {
			d.Suppressed = nil
		}
		s.Days = append(s.Days, d)
	}
	return s, nil
}

// rate is conversions per exposed user: test conversions over users sent
// to, control conversions over users held back.
func rate(conv, exposed int64) float64 {
	if exposed == 0 {
		return 0
	}
	return math.Round(float64(conv)/float64(exposed)*1000) / 1000
}

// Recent returns up to limit recent attempts of a campaign, newest first,
// optionally only failed ones or only one user's.
func (r *Reader) Recent(ctx context.Context, campaign string, failedOnly bool, user string, limit int) ([]Attempt, error) {
	raw, err := r.RDB.LRange(ctx, recentKey(campaign), 0, recentLimit-1).Result()
	if err != nil && err != redis.Nil {
		return nil, err
	}
	out := []Attempt{}
	for _, s := range raw {
		var a Attempt
		if json.Unmarshal([]byte(s), &a) != nil {
			continue
		}
		if failedOnly && a.Status != "failed" && a.Status != "retrying" {
			continue
		}
		if user != "" && !contains(a.Identities, user) {
			continue
		}
		out = append(out, a)
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// Register serves GET /v1/campaigns/{name}/stats and
// GET /v1/campaigns/{name}/deliveries?failed=true&user=ID&limit=N, behind
// authorize (which writes the error itself when it returns false).
func (r *Reader) Register(mux *http.ServeMux, authorize func(http.ResponseWriter, *http.Request) bool) {
	mux.HandleFunc("GET /v1/campaigns/{name}/stats", func(w http.ResponseWriter, req *http.Request) {
		if !authorize(w, req) {
			return
		}
		if !r.known(w, req) {
			return
		}
		s, err := r.Get(req.Context(), req.PathValue("name"))
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "stats unavailable: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc("GET /v1/campaigns/{name}/deliveries", func(w http.ResponseWriter, req *http.Request) {
		if !authorize(w, req) {
			return
		}
		if !r.known(w, req) {
			return
		}
		q := req.URL.Query()
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit <= 0 || limit > recentLimit {
			limit = 50
		}
		as, err := r.Recent(req.Context(), req.PathValue("name"), q.Get("failed") == "true", q.Get("user"), limit)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "deliveries unavailable: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"campaign": req.PathValue("name"), "deliveries": as})
	})
}

// known answers 404 and returns false for a campaign that is not in the
// catalog and has no stats.
func (r *Reader) known(w http.ResponseWriter, req *http.Request) bool {
	name := req.PathValue("name")
	if r.Exists == nil || r.Exists(name) {
		return true
	}
	n, err := r.RDB.Exists(req.Context(), totalsKey(name), recentKey(name)).Result()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "stats unavailable: " + err.Error()})
		return false
	}
	if n > 0 {
		return true
	}
	writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("campaign %q not found", name)})
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
