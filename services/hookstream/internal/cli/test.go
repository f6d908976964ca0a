package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
)

func init() {
	register("test", command{usage: "test NAME [--profile JSON]", help: "send a campaign's webhook now with \"is_test\": true and show the endpoint's answer", run: runTest})
}

func runTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	profile := fs.String("profile", "", `Profile to send, as a JSON object (default: a sample), e.g. '{"Identity":"u-1","Email":"a@example.com"}'.`)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, "test NAME")
	}
	var body []byte
	if *profile != "" {
		var p map[string]any
		if err := json.Unmarshal([]byte(*profile), &p); err != nil {
			return fmt.Errorf("--profile: not a JSON object: %w", err)
		}
		body, _ = json.Marshal(map[string]any{"profile": p})
	}
	var res struct {
		Webhook   string  `json:"webhook"`
		WebhookID string  `json:"webhook_id"`
		Status    int     `json:"status"`
		Body      string  `json:"body"`
		LatencyMs float64 `json:"latency_ms"`
		Error     string  `json:"error"`
	}
	if err := c.do(context.Background(), "POST", "/v1/campaigns/"+url.PathEscape(pos[0])+"/test", "application/json", body, &res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "webhook %s answered %d in %.1fms (webhook-id %s)\n", res.Webhook, res.Status, res.LatencyMs, res.WebhookID)
	if res.Body != "" {
		fmt.Fprintf(stdout, "%s\n", oneLine(res.Body, 2000))
	}
	if res.Error != "" {
		return errors.New(res.Error)
	}
	if res.Status < 200 || res.Status > 299 {
		return fmt.Errorf("the endpoint did not accept the test webhook")
	}
	return nil
}
