package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/services/dispatcher"
)

func init() {
	register("replay", command{
		usage: "replay --campaign C [--since T] [flags]",
		help:  "send a campaign's failed deliveries again from the dispatch DLQ",
		run:   runReplay,
	})
}

// runReplay reads {prefix}dispatch.dlq directly from Kafka and produces the
// matching deliveries back to {prefix}dispatch.retry, where the dispatcher
// sends them with their original webhook-id.
func runReplay(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kcfg kafka.Config
	kcfg.RegisterFlags("kafka.", fs)
	fs.StringVar(&kcfg.TopicPrefix, "topic-prefix", "hookstream.", "Prefix of every topic name (same as -kafka.topic-prefix).")
	campaign := fs.String("campaign", "", "Campaign whose failed deliveries to replay (required).")
	since := fs.String("since", "", "Only deliveries that failed at or after this time: RFC 3339 (2026-11-27T10:00:00Z), Unix seconds, or a duration ago (2h, 3d).")
	dryRun := fs.Bool("dry-run", false, "List what would be replayed without sending.")
	timeout := fs.Duration("timeout", time.Minute, "Give up after this long.")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: hookstream replay --campaign C [--since T] [flags]\n\n"+
			"Sends the campaign's deliveries found on the dispatch DLQ again, with their\n"+
			"original webhook-id, through the dispatcher (rate limit, circuit breaker,\n"+
			"retries). A webhook disabled by 410 Gone must be applied again first.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("replay: unexpected arguments %q", fs.Args())
	}
	if *campaign == "" {
		return errors.New("replay: --campaign is required")
	}
	var from time.Time
	if *since != "" {
		var err error
		if from, err = parseSince(*since, time.Now()); err != nil {
			return err
		}
	}
	if err := kcfg.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	res, err := dispatcher.Replay(ctx, kcfg, log, dispatcher.ReplayOptions{Campaign: *campaign, Since: from, DryRun: *dryRun})
	if err != nil {
		return err
	}
	if *dryRun {
		for _, id := range res.WebhookIDs {
			fmt.Fprintln(stdout, id)
		}
		fmt.Fprintf(stdout, "would replay %d deliveries of %s (%d DLQ records read, %d matched, %d already delivered by a replay)\n", len(res.WebhookIDs), *campaign, res.Scanned, res.Matched, res.Resolved)
		return nil
	}
	fmt.Fprintf(stdout, "replayed %d deliveries of %s (%d DLQ records read, %d matched, %d already delivered by a replay)\n", res.Replayed, *campaign, res.Scanned, res.Matched, res.Resolved)
	return nil
}

// parseSince reads RFC 3339, Unix seconds, or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	if d, err := duration.Parse(strings.TrimPrefix(s, "-")); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("replay: --since %q: want RFC 3339, Unix seconds or a duration like 2h", s)
}
