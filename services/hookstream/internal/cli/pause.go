package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
)

func init() {
	register("pause", command{usage: "pause NAME", help: "pause a campaign (spec.state: paused)", run: func(args []string, stdout, stderr io.Writer) error {
		return runSetState("pause", args, stdout, stderr)
	}})
	register("resume", command{usage: "resume NAME", help: "resume a paused campaign (spec.state: active)", run: func(args []string, stdout, stderr io.Writer) error {
		return runSetState("resume", args, stdout, stderr)
	}})
}

// runSetState pauses or resumes a campaign.
func runSetState(action string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(action, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := clientFlags(fs)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError(fs, action+" NAME")
	}
	name := strings.TrimPrefix(pos[0], "campaign/")
	var resp struct {
		Action     string `json:"action"`
		State      string `json:"state"`
		Generation int64  `json:"generation"`
	}
	if err := c.do(context.Background(), "POST", "/v1/campaigns/"+url.PathEscape(name)+"/"+action, "", nil, &resp); err != nil {
		return err
	}
	past := map[string]string{"pause": "paused", "resume": "resumed"}[action]
	if resp.Action == "unchanged" {
		fmt.Fprintf(stdout, "campaign/%s unchanged (already %s)\n", name, resp.State)
		return nil
	}
	fmt.Fprintf(stdout, "campaign/%s %s\n", name, past)
	return nil
}
