package cli

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/services/hookstream/internal/receiver"
)

func init() {
	register("demo", command{usage: "demo [--examples DIR]", help: "run dev with the examples, replay a scripted stream for all six trigger types, print webhooks and stats", run: runDemo})
}

// demoManifest adds a date_time_property campaign without a fixed time of
// day, so that the demo can make it come due within seconds (the example's
// fires at 10:00 in Toronto).
const demoManifest = `apiVersion: hookstream.dev/v1
kind: Campaign
metadata: {name: delivery-eta-demo}
spec:
  webhook: logistics
  delivery: {type: triggered}
  trigger:
    type: date_time_property
    property: {source: event, event: Order Shipped, name: DeliveryDate}
    offset: -1d
  what:
    payload: {profileVariables: [Identity, Event_properties]}
`

// demoExpect is how many webhooks each campaign should produce, by the
// receiver path its webhook posts to (a Liquid body need not name the
// campaign).
var demoExpect = map[string]struct {
	path string
	n    int
}{
	"order-completed":        {"/dev/receiver/orders", 1},
	"viewed-then-wishlisted": {"/dev/receiver/merchandising", 1},
	"lapsed-buyer-launch":    {"/dev/receiver/re-engagement", 1},
	"delivery-eta-demo":      {"/dev/receiver/logistics", 1},
	"vip-purchase":           {"/dev/receiver/loyalty", 2},
	"cart-abandon-callback":  {"/dev/receiver/call-center", 1},
}

func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	examples := fs.String("examples", "examples", "Directory of the example manifests.")
	timeout := fs.Duration("timeout", 100*time.Second, "Give up waiting for webhooks after this long.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	extra, err := manifest.Parse([]byte(demoManifest), "demo")
	if err != nil {
		return err
	}
	const api = "http://127.0.0.1:8080"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	byPath := map[string]int{}
	printed := 0
	onReceive := func(r receiver.Received) {
		mu.Lock()
		byPath[r.Path]++
		printed++
		n := printed
		mu.Unlock()
		text := string(r.Body)
		if text == "" {
			text = r.Text
		}
		fmt.Fprintf(stdout, "\n[webhook %d] POST %s  webhook-id: %s\n  %s\n", n, r.Path, r.Headers["webhook-id"], oneLine(text, 400))
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- dev([]string{"--ephemeral", "-f", *examples, "--log.level", "warn"}, stdout, stderr, devHooks{ctx: ctx, onReceive: onReceive, ready: ready, extra: extra})
	}()
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("dev stopped: %w", err)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("dev did not become ready in 60s")
	}

	now := time.Now().UTC()
	// A zone where it is about noon now, so that the examples' quiet
	// hours (22:00–08:00) never hold the demo's webhooks back.
	offset := (12 - now.Hour() + 24) % 24
	if offset > 12 {
		offset -= 24
	}
	zone := "Etc/GMT"
	if offset > 0 {
		zone += fmt.Sprintf("-%d", offset)
	} else if offset < 0 {
		zone += fmt.Sprintf("+%d", -offset)
	}
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339Nano) }
	script := []string{
		fmt.Sprintf(`{"type":"profile","identity":"ann","properties":{"Email":"ann@example.com","Name":"Ann","Country":"Canada","Tier":"gold","Phone":"+1-555-0100","Timezone":"%s"}}`, zone),
		`{"type":"identify","userId":"bob","traits":{"email":"bob@example.com","name":"Bob"}}`,
		// single_action (native)
		`{"type":"event","identity":"bob","name":"Order Completed","properties":{"total":42.5},"id":"demo-1"}`,
		// actions (Segment spec)
		`{"type":"track","userId":"bob","event":"Product Viewed","properties":{"ProductId":"p-1"},"messageId":"demo-2"}`,
		`{"type":"track","userId":"bob","event":"Added To Wishlist","properties":{"ProductId":"p-1","Price":80},"messageId":"demo-3"}`,
		// inaction (CleverTap upload): bob never bought
		fmt.Sprintf(`{"d":[{"identity":"bob","ts":%d,"type":"event","evtName":"App Launched","evtData":{}}]}`, now.Unix()),
		// inaction_within_time: ann's cart from 29m50s ago comes due in 10s;
		// a second cart item is bought, which cancels its own timer only.
		fmt.Sprintf(`{"type":"event","identity":"ann","name":"Added To Cart","ts":"%s","properties":{"ProductId":"sku-42","Price":899},"id":"demo-4"}`, ts(-30*time.Minute+10*time.Second)),
		fmt.Sprintf(`{"type":"event","identity":"ann","name":"Added To Cart","ts":"%s","properties":{"ProductId":"sku-7","Price":650},"id":"demo-5"}`, ts(-30*time.Minute+12*time.Second)),
		fmt.Sprintf(`{"type":"event","identity":"ann","name":"Charged","ts":"%s","properties":{"ProductId":"sku-7","Amount":650},"id":"demo-6"}`, ts(0)),
		// date_time_property: delivery tomorrow; the reminder a day before
		// comes due in 15s
		fmt.Sprintf(`{"type":"event","identity":"bob","name":"Order Shipped","properties":{"OrderId":"o-77","DeliveryDate":"%s"},"id":"demo-7"}`, ts(24*time.Hour+15*time.Second)),
	}
	fmt.Fprintf(stdout, "\n== replaying %d records (native, Segment and CleverTap formats) to %s/v1/events\n", len(script), api)
	if err := postEvents(ctx, api, script); err != nil {
		return err
	}
	// actions_with_user_properties fired on demo-6 already (Canadian, gold,
	// Amount ≥ 100). After the cart webhook, ann buys it: a second VIP
	// purchase and the cart campaign's conversion.
	start := time.Now()
	deadline := start.Add(*timeout)
	waitFor := func(campaign string) bool {
		want := demoExpect[campaign]
		for {
			mu.Lock()
			got := byPath[want.path]
			mu.Unlock()
			if got >= want.n {
				return true
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(stdout, "\n!! %s: %d of %d webhooks arrived\n", campaign, got, want.n)
				return false
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("cart-abandon-callback")
	if err := postEvents(ctx, api, []string{`{"type":"event","identity":"ann","name":"Charged","properties":{"ProductId":"sku-42","Amount":899},"id":"demo-8"}`}); err != nil {
		return err
	}
	names := make([]string, 0, len(demoExpect))
	for c := range demoExpect {
		names = append(names, c)
	}
	sort.Strings(names)
	missing := 0
	for _, c := range names {
		if !waitFor(c) {
			missing++
		}
	}
	time.Sleep(2 * time.Second) // let the last delivery records reach the stats

	fmt.Fprintf(stdout, "\n== stats\n")
	cl := &client{server: api, http: &http.Client{Timeout: 10 * time.Second}}
	for _, c := range names {
		var s struct {
			Triggered      int64              `json:"triggered"`
			Suppressed     map[string]int64   `json:"suppressed"`
			Sent           int64              `json:"sent"`
			Delivered      int64              `json:"delivered"`
			Failed         int64              `json:"failed"`
			Retries        int64              `json:"retries"`
			Conversions    map[string]int64   `json:"conversions"`
			ConversionRate map[string]float64 `json:"conversion_rate"`
		}
		if err := cl.do(ctx, "GET", "/v1/campaigns/"+c+"/stats", "", nil, &s); err != nil {
			fmt.Fprintf(stdout, "%-24s stats unavailable: %v\n", c, err)
			continue
		}
		var sup []string
		for r, n := range s.Suppressed {
			if n > 0 {
				sup = append(sup, fmt.Sprintf("%s=%d", r, n))
			}
		}
		sort.Strings(sup)
		fmt.Fprintf(stdout, "%-24s triggered=%d sent=%d delivered=%d failed=%d retries=%d suppressed=[%s] conversions test/control=%d/%d\n",
			c, s.Triggered, s.Sent, s.Delivered, s.Failed, s.Retries, strings.Join(sup, " "), s.Conversions["test"], s.Conversions["control"])
	}
	cancel()
	<-done
	if missing > 0 {
		return fmt.Errorf("%d campaigns did not send all their webhooks within %v", missing, *timeout)
	}
	fmt.Fprintf(stdout, "\n== done in %v: all six trigger types fired\n", time.Since(start).Round(time.Second))
	return nil
}

func postEvents(ctx context.Context, api string, lines []string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", api+"/v1/events", bytes.NewReader([]byte(strings.Join(lines, "\n"))))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"rejected":[]`)) {
		return fmt.Errorf("events refused: %d %s", resp.StatusCode, body)
	}
	return nil
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
