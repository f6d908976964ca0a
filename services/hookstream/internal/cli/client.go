package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// Environment variables that set the defaults of --server and --token.
const (
	EnvServer = "HOOKSTREAM_SERVER"
	EnvToken  = "HOOKSTREAM_TOKEN"
)

// DefaultServer is where the client commands find the API when neither
// --server nor HOOKSTREAM_SERVER says otherwise: `hookstream dev`'s address.
const DefaultServer = "http://127.0.0.1:8080"

// stdin is what "-f -" reads; tests replace it.
var stdin io.Reader = os.Stdin

// client calls the Hookstream HTTP API (CONTRACT.md section 4).
type client struct {
	server string
	token  string
	http   *http.Client
}

// clientFlags registers --server and --token on fs, with their defaults
// from HOOKSTREAM_SERVER and HOOKSTREAM_TOKEN.
func clientFlags(fs *flag.FlagSet) *client {
	c := &client{http: &http.Client{Timeout: 60 * time.Second}}
	server := os.Getenv(EnvServer)
	if server == "" {
		server = DefaultServer
	}
	fs.StringVar(&c.server, "server", server, "Hookstream API base URL (default from "+EnvServer+").")
	fs.StringVar(&c.token, "token", os.Getenv(EnvToken), "Bearer token for the API (default from "+EnvToken+").")
	return c
}

// apiError is an answer outside 2xx: the contract's {"error": "..."} and,
// for invalid manifests, every problem.
type apiError struct {
	status   int
	message  string
	problems manifest.Problems
}

func (e *apiError) Error() string {
	msg := e.message
	switch e.status {
	case http.StatusUnauthorized:
		msg += " (give a token with --token or " + EnvToken + ")"
	case http.StatusServiceUnavailable:
		msg += " (the server is not ready or Kafka is unreachable)"
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.status)
}

// do sends a request and decodes a 2xx JSON answer into out (when not
// nil). Other answers are *apiError. Statuses in accept count as success
// too: POST /v1/events answers 400 with a normal body when no record is
// valid.
func (c *client) do(ctx context.Context, method, path, contentType string, body []byte, out any, accept ...int) error {
	url := strings.TrimRight(c.server, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("bad --server %q: %w", c.server, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "hookstream-cli/"+version())
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is Hookstream running there? set --server or %s)", method, url, err, EnvServer)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, url, err)
	}
	ok := resp.StatusCode/100 == 2
	for _, s := range accept {
		ok = ok || resp.StatusCode == s
	}
	if !ok {
		e := &apiError{status: resp.StatusCode}
		var eb struct {
			Error    string            `json:"error"`
			Problems manifest.Problems `json:"problems"`
		}
		if json.Unmarshal(raw, &eb) == nil && eb.Error != "" {
			e.message, e.problems = eb.Error, eb.Problems
		} else {
			e.message = strings.TrimSpace(string(raw))
			if e.message == "" {
				e.message = http.StatusText(resp.StatusCode)
			}
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not what this CLI expects (is --server a Hookstream API?): %w", method, url, err)
	}
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// the positional arguments ("get campaigns -o yaml"), returning the
// positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// kindArg maps what users type for a kind (campaign, campaigns, Campaign)
// to the API's path name and the kind.
func kindArg(s string) (path, kind string, err error) {
	switch strings.ToLower(s) {
	case "webhook", "webhooks", "wh":
		return "webhooks", manifest.KindWebhook, nil
	case "segment", "segments", "seg":
		return "segments", manifest.KindSegment, nil
	case "campaign", "campaigns", "camp":
		return "campaigns", manifest.KindCampaign, nil
	}
	return "", "", fmt.Errorf("unknown kind %q: use webhooks, segments or campaigns", s)
}

// ref is how objects are named in output, like kubectl: "campaign/cart".
func ref(kind, name string) string { return strings.ToLower(kind) + "/" + name }

var errUsage = errors.New("usage")

// usageError explains the synopsis of a command.
func usageError(fs *flag.FlagSet, synopsis string) error {
	return fmt.Errorf("%w: hookstream %s (see hookstream %s -h)", errUsage, synopsis, fs.Name())
}
