package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/kafka/kafkatest"
	"github.com/hookstream/hookstream/pkg/stats"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// cells splits tabwriter output into lines of cells (columns are at
// least two spaces apart), so that a test reads what a user reads without
// depending on the padding.
func cells(out string) [][]string {
	var rows [][]string
	sep := regexp.MustCompile(`\s{2,}`)
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			rows = append(rows, sep.Split(l, -1))
		}
	}
	return rows
}

func hasRow(rows [][]string, want ...string) bool {
	for _, r := range rows {
		if strings.Join(r, "|") == strings.Join(want, "|") {
			return true
		}
	}
	return false
}

// stats and deliveries against a running dev: one user delivered and
// converted, one whose endpoint answers 400 (failed, no retry), as the
// campaign owner reads them in a table and in JSON.
func TestStatsAndDeliveriesCommands(t *testing.T) {
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Profiles []struct{ Identity string } `json:"profiles"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		if len(body.Profiles) == 1 && body.Profiles[0].Identity == "u-bad" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}))
	defer recv.Close()
	d := startInProcessDev(t, fmt.Sprintf(`apiVersion: hookstream.dev/v1
kind: Webhook
metadata: {name: r}
spec: {url: %s/hook}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: cart}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Carted}}
  controlGroup: {percent: 0}
  goal: {event: Bought, within: 1h}
  what: {payload: {profileVariables: [Identity]}}
---
apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: quiet}
spec:
  webhook: r
  delivery: {type: triggered}
  trigger: {type: single_action, action: {event: Never}}
  what: {payload: {profileVariables: [Identity]}}
`, recv.URL), process.Options{})
	t.Setenv(EnvServer, "http://"+d.p.Server.Addr())
	t.Setenv(EnvToken, "")
	cl, err := kafka.NewClient(kafkatest.Config(d.kafkaAddr), nilLogger(), "test-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for _, v := range []string{
		`{"type":"event","identity":"u-ok","name":"Carted","id":"e-1"}`,
		`{"type":"event","identity":"u-bad","name":"Carted","id":"e-2"}`,
	} {
		recs = append(recs, &kgo.Record{Topic: "hookstream.events.raw", Value: []byte(v)})
	}
	if err := kafka.ProduceSync(context.Background(), cl, recs...); err != nil {
		t.Fatal(err)
	}
	// The goal after the webhook, so that the conversion is of a sent user.
	var s stats.Stats
	waitJSON(t, &s, func() bool { return s.Delivered == 1 }, "stats", "cart", "-o", "json")
	if err := kafka.ProduceSync(context.Background(), cl, &kgo.Record{Topic: "hookstream.events.raw", Value: []byte(`{"type":"event","identity":"u-ok","name":"Bought","id":"e-3"}`)}); err != nil {
		t.Fatal(err)
	}
	waitJSON(t, &s, func() bool { return s.Failed == 1 && s.Conversions["test"] == 1 }, "stats", "cart", "-o", "json")

	t.Run("stats json", func(t *testing.T) {
		var m map[string]any
		r := hookstream(t, "", "stats", "cart", "-o", "json")
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || r.code != 0 {
			t.Fatalf("exit %d, %v:\n%s%s", r.code, err, r.stdout, r.stderr)
		}
		want := map[string]any{"campaign": "cart", "triggered": 2.0, "sent": 2.0, "delivered": 1.0, "failed": 1.0, "retries": 0.0,
			"conversions": map[string]any{"test": 1.0, "control": 0.0}, "conversion_rate": map[string]any{"test": 0.5, "control": 0.0}}
		for k, v := range want {
			if got, _ := json.Marshal(m[k]); string(got) != mustJSON(v) {
				t.Errorf("%s = %s, want %s", k, got, mustJSON(v))
			}
		}
		sup, _ := m["suppressed"].(map[string]any)
		for _, reason := range []string{"control", "frequency_cap", "duplicate", "max_users", "throttled"} {
			if v, ok := sup[reason]; !ok || v != 0.0 {
				t.Errorf("suppressed.%s = %v, want 0 (every contract reason is present)", reason, v)
			}
		}
		days, _ := m["days"].([]any)
		if len(days) != 30 {
			t.Fatalf("%d days, want 30", len(days))
		}
		today, _ := days[29].(map[string]any)
		if today["date"] != time.Now().UTC().Format("2006-01-02") || today["sent"] != 2.0 || today["failed"] != 1.0 {
			t.Errorf("last day %v, want today with 2 sent and 1 failed", today)
		}
	})

	t.Run("stats table", func(t *testing.T) {
		r := hookstream(t, "", "stats", "cart")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		rows := cells(r.stdout)
		for _, want := range [][]string{
			{"CAMPAIGN", "cart"},
			{"triggered", "2"},
			{"suppressed control", "0"},
			{"suppressed frequency_cap", "0"},
			{"sent", "2"},
			{"delivered", "1"},
			{"failed", "1"},
			{"retries", "0"},
			{"conversions test / control", "1 / 0"},
			{"conversion rate test / control", "0.500 / 0.000"},
			{"DAY", "TRIGGERED", "SENT", "DELIVERED", "FAILED", "RETRIES", "CONVERSIONS"},
			{time.Now().UTC().Format("2006-01-02"), "2", "2", "1", "1", "0", "1/0"},
		} {
			if !hasRow(rows, want...) {
				t.Errorf("no row %q in:\n%s", want, r.stdout)
			}
		}
	})

	t.Run("deliveries", func(t *testing.T) {
		cases := []struct {
			name  string
			args  []string
			users []string // the USERS column, sorted
			check func(t *testing.T, row []string)
		}{
			{"all", nil, []string{"u-bad", "u-ok"}, nil},
			{"failed", []string{"--failed"}, []string{"u-bad"}, func(t *testing.T, row []string) {
				if row[4] != "failed" || row[5] != "400" || !strings.Contains(row[7], "endpoint answered 400") {
					t.Errorf("failed row %q, want status failed, HTTP 400 and the endpoint's answer", row)
				}
			}},
			{"user", []string{"--user", "u-ok"}, []string{"u-ok"}, func(t *testing.T, row []string) {
				if row[3] != "1" || row[4] != "delivered" || row[5] != "200" || !strings.HasSuffix(row[6], "ms") {
					t.Errorf("u-ok row %q, want attempt 1 delivered with HTTP 200 and a latency", row)
				}
			}},
			{"failed and user", []string{"--failed", "--user", "u-ok"}, nil, nil},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				r := hookstream(t, "", append([]string{"deliveries", "cart"}, c.args...)...)
				if r.code != 0 {
					t.Fatalf("exit %d: %s", r.code, r.stderr)
				}
				rows := cells(r.stdout)
				if len(rows) == 0 || strings.Join(rows[0], " ") != "AT WEBHOOK-ID USERS ATTEMPT STATUS HTTP LATENCY ERROR/REASON" {
					t.Fatalf("no header in:\n%s", r.stdout)
				}
				var users []string
				for _, row := range rows[1:] {
					users = append(users, row[2])
					if c.check != nil {
						c.check(t, row)
					}
				}
				sort.Strings(users)
				if strings.Join(users, ",") != strings.Join(c.users, ",") {
					t.Errorf("users %v, want %v:\n%s", users, c.users, r.stdout)
				}
			})
		}
		var as []stats.Attempt
		r := hookstream(t, "", "deliveries", "cart", "--failed", "-o", "json")
		if err := json.Unmarshal([]byte(r.stdout), &as); err != nil || len(as) != 1 {
			t.Fatalf("deliveries -o json: %v, %d attempts:\n%s", err, len(as), r.stdout)
		}
		if a := as[0]; a.Status != "failed" || a.HTTPStatus != 400 || len(a.Identities) != 1 || a.Identities[0] != "u-bad" || a.WebhookID == "" || a.At == "" {
			t.Errorf("failed attempt %+v", a)
		}
	})

	t.Run("errors", func(t *testing.T) {
		hookstream(t, "", "stats", "cart", "-o", "yaml").fails(t, `-o must be table or json, got "yaml"`)
		hookstream(t, "", "deliveries", "cart", "-o", "xml").fails(t, `-o must be table or json, got "xml"`)
		hookstream(t, "", "stats", "nope").fails(t, `campaign "nope" not found`)
		hookstream(t, "", "deliveries", "nope").fails(t, `campaign "nope" not found`)
		hookstream(t, "", "stats").fails(t, "usage: hookstream stats NAME")
		// A campaign that exists and has counted nothing yet is zeros, not
		// an error.
		r := hookstream(t, "", "stats", "quiet")
		if r.code != 0 || !hasRow(cells(r.stdout), "triggered", "0") {
			t.Errorf("stats of an idle campaign: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		hookstream(t, "", "deliveries", "quiet").ok(t, "AT  WEBHOOK-ID  USERS  ATTEMPT  STATUS  HTTP  LATENCY  ERROR/REASON\n")
	})
}

// The per-day table shows every day with something counted, also one
// with only conversions (of users triggered the day before), and marks a
// replay's attempts.
func TestStatsTableDays(t *testing.T) {
	s := stats.Stats{Campaign: "cart", Suppressed: map[string]int64{"control": 0}, Conversions: map[string]int64{"test": 1, "control": 1}, ConversionRate: map[string]float64{}}
	for i := 1; i <= 30; i++ {
		s.Days = append(s.Days, stats.Day{Date: fmt.Sprintf("2026-11-%02d", i), Conversions: map[string]int64{"test": 0, "control": 0}})
	}
	s.Triggered, s.Sent, s.Delivered = 1, 1, 1
	s.Days[25].Triggered, s.Days[25].Sent, s.Days[25].Delivered = 1, 1, 1
	s.Days[26].Conversions = map[string]int64{"test": 1, "control": 0}
	s.Days[28].Conversions = map[string]int64{"test": 0, "control": 1}
	attempts := []stats.Attempt{{WebhookID: "w1", Identities: []string{"u1"}, Attempt: 1, Status: "delivered", HTTPStatus: 200, Replay: true, At: "2026-11-26T10:00:00Z"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/deliveries") {
			_ = json.NewEncoder(w).Encode(map[string]any{"deliveries": attempts})
			return
		}
		_ = json.NewEncoder(w).Encode(s)
	}))
	defer srv.Close()
	t.Setenv(EnvServer, srv.URL)
	r := hookstream(t, "", "stats", "cart")
	rows := cells(r.stdout)
	for _, want := range [][]string{
		{"2026-11-26", "1", "1", "1", "0", "0", "0/0"},
		{"2026-11-27", "0", "0", "0", "0", "0", "1/0"},
		{"2026-11-29", "0", "0", "0", "0", "0", "0/1"},
	} {
		if !hasRow(rows, want...) {
			t.Errorf("no row %q in:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "2026-11-28") || strings.Contains(r.stdout, "2026-11-25") {
		t.Errorf("a day with nothing counted is shown:\n%s", r.stdout)
	}
	r = hookstream(t, "", "deliveries", "cart")
	if rows := cells(r.stdout); len(rows) != 2 || rows[1][4] != "delivered (replay)" {
		t.Errorf("a replay's attempt is not marked:\n%s", r.stdout)
	}
}

// waitJSON runs the command until its JSON answer, decoded into v, makes
// ok true.
func waitJSON(t *testing.T, v any, ok func() bool, args ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := hookstream(t, "", args...)
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), v) == nil && ok() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hookstream %s never matched: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
