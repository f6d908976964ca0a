package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/hookstream/hookstream/pkg/stats"
)

func init() {
	register("stats", command{usage: "stats NAME [-o table|json]", help: "a campaign's live stats: triggered, suppressed, sent, delivered, conversions", run: runStats})
	register("deliveries", command{usage: "deliveries NAME [--failed] [--user ID]", help: "a campaign's recent attempts with status, latency and error", run: runDeliveries})
}

func runStats(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	output := fs.String("o", "table", "Output format: table or json.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "stats NAME")
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	ctx := context.Background()
	var s stats.Stats
	if err := c.do(ctx, "GET", "/v1/campaigns/"+url.PathEscape(pos[0])+"/stats", "", nil, &s); err != nil {
		return err
	}
	if counted(&s) == 0 {
		if err := mustExist(ctx, c, pos[0]); err != nil {
			return err
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "CAMPAIGN\t%s\n", s.Campaign)
	fmt.Fprintf(w, "triggered\t%d\n", s.Triggered)
	reasons := make([]string, 0, len(s.Suppressed))
	for r := range s.Suppressed {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "suppressed %s\t%d\n", r, s.Suppressed[r])
	}
	fmt.Fprintf(w, "sent\t%d\n", s.Sent)
	fmt.Fprintf(w, "delivered\t%d\n", s.Delivered)
	fmt.Fprintf(w, "failed\t%d\n", s.Failed)
	fmt.Fprintf(w, "retries\t%d\n", s.Retries)
	fmt.Fprintf(w, "conversions test / control\t%d / %d\n", s.Conversions["test"], s.Conversions["control"])
	fmt.Fprintf(w, "conversion rate test / control\t%.3f / %.3f\n", s.ConversionRate["test"], s.ConversionRate["control"])
	if err := w.Flush(); err != nil {
		return err
	}
	var active []stats.Day
	for _, d := range s.Days {
		// A day with only conversions (of users triggered earlier) is
		// shown too.
		if d.Triggered+d.Sent+d.Delivered+d.Failed+d.Retries+d.Conversions["test"]+d.Conversions["control"] > 0 {
			active = append(active, d)
		}
	}
	if len(active) > 0 {
		fmt.Fprintln(stdout)
		w = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "DAY\tTRIGGERED\tSENT\tDELIVERED\tFAILED\tRETRIES\tCONVERSIONS")
		for _, d := range active {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d/%d\n", d.Date, d.Triggered, d.Sent, d.Delivered, d.Failed, d.Retries, d.Conversions["test"], d.Conversions["control"])
		}
		return w.Flush()
	}
	return nil
}

func runDeliveries(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("deliveries", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	failed := fs.Bool("failed", false, "Only failed and retrying attempts.")
	user := fs.String("user", "", "Only this user's attempts.")
	limit := fs.Int("limit", 50, "Most attempts to show.")
	output := fs.String("o", "table", "Output format: table or json.")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "deliveries NAME")
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	q := url.Values{"limit": {fmt.Sprint(*limit)}}
	if *failed {
		q.Set("failed", "true")
	}
	if *user != "" {
		q.Set("user", *user)
	}
	var resp struct {
		Deliveries []stats.Attempt `json:"deliveries"`
	}
	ctx := context.Background()
	if err := c.do(ctx, "GET", "/v1/campaigns/"+url.PathEscape(pos[0])+"/deliveries?"+q.Encode(), "", nil, &resp); err != nil {
		return err
	}
	if len(resp.Deliveries) == 0 {
		if err := mustExist(ctx, c, pos[0]); err != nil {
			return err
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(resp.Deliveries)
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "AT\tWEBHOOK-ID\tUSERS\tATTEMPT\tSTATUS\tHTTP\tLATENCY\tERROR/REASON")
	for _, a := range resp.Deliveries {
		why := a.Error
		if why == "" {
			why = a.Reason
		}
		code := "-"
		if a.HTTPStatus != 0 {
			code = fmt.Sprint(a.HTTPStatus)
		}
		status := a.Status
		if a.Replay {
			status += " (replay)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%.1fms\t%s\n", a.At, a.WebhookID, strings.Join(a.Identities, ","), a.Attempt, status, code, a.LatencyMs, why)
	}
	return w.Flush()
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o must be table or json, got %q", o)
	}
	return nil
}

// counted is how many things the stats have counted at all.
func counted(s *stats.Stats) int64 {
	n := s.Triggered + s.Sent + s.Delivered + s.Failed + s.Retries + s.Conversions["test"] + s.Conversions["control"]
	for _, v := range s.Suppressed {
		n += v
	}
	return n
}

// mustExist tells a campaign that has not counted anything yet from a
// misspelt name: a stats API that is not given the catalog
// (stats.Reader.Exists) answers zeros for any name, so empty answers are
// checked against the campaigns API.
func mustExist(ctx context.Context, c *client, name string) error {
	err := c.do(ctx, "GET", "/v1/campaigns/"+url.PathEscape(name), "", nil, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.status == http.StatusNotFound {
		return fmt.Errorf("campaign %q not found (hookstream get campaigns lists them)", name)
	}
	return err
}
