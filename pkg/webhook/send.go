package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// Version is sent in User-Agent: hookstream/Version.
var Version = "dev"

// ErrForbiddenAddress is returned when the endpoint resolves to an address
// the SSRF guard refuses.
var ErrForbiddenAddress = errors.New("refusing to connect to a private, loopback, link-local or metadata address")

// Result is the outcome of one attempt.
type Result struct {
	// Status is the HTTP status, 0 when no response arrived.
	Status  int
	Latency time.Duration
	// Err is the transport error, nil when a response arrived.
	Err error
	// Excerpt is the start of the response body (at most 1 KiB).
	Excerpt string
	// RetryAfter is the parsed Retry-After header, 0 when absent.
	RetryAfter time.Duration
}

// OK reports a 2xx.
func (r Result) OK() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// Sender sends webhook requests. Safe for concurrent use.
type Sender struct {
	client *http.Client
}

// NewSender returns a sender whose dialer refuses private, loopback,
// link-local, CGNAT and metadata addresses unless allowPrivate. The check is
// on the dialled IP, so a public name that resolves to 127.0.0.1 is refused
// too. Redirects are not followed.
func NewSender(allowPrivate bool) *Sender {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			if Forbidden(ap.Addr()) {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false, // HTTP/1.1 keep-alive per host
	}
	return &Sender{client: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Forbidden reports addresses the SSRF guard refuses.
func Forbidden(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() || cgnat.Contains(a) ||
		a == netip.MustParseAddr("fd00:ec2::254")
}

// Attempt is one request to send.
type Attempt struct {
	ID        string
	Timestamp time.Time
	Request   Request
	// Traceparent, if set, is sent as the traceparent header.
	Traceparent string
}

// Send makes one attempt to wh's endpoint.
func (s *Sender) Send(ctx context.Context, wh *manifest.Webhook, a Attempt) Result {
	timeout := wh.Spec.Timeout.Std()
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u, err := url.Parse(wh.Spec.URL)
	if err != nil {
		return Result{Err: fmt.Errorf("webhook url: %w", err)}
	}
	if len(a.Request.Query) > 0 {
		q := u.Query()
		for k, vs := range a.Request.Query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
	}
	method := wh.Spec.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(a.Request.Body))
	if err != nil {
		return Result{Err: err}
	}
	for k, v := range wh.Spec.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", a.Request.ContentType)
	req.Header.Set("User-Agent", "hookstream/"+Version)
	ts := strconv.FormatInt(a.Timestamp.Unix(), 10)
	req.Header.Set("webhook-id", a.ID)
	req.Header.Set("webhook-timestamp", ts)
	if a.Traceparent != "" {
		req.Header.Set("traceparent", a.Traceparent)
	}
	if sg := wh.Spec.Signing; sg != nil {
		secret, err := ResolveSecret(sg.SecretRef)
		if err != nil {
			return Result{Err: fmt.Errorf("signing secret: %w", err)}
		}
		sig, err := Sign(secret, a.ID, a.Timestamp, a.Request.Body)
		if err != nil {
			return Result{Err: err}
		}
		req.Header.Set("webhook-signature", sig)
	}
	if au := wh.Spec.Auth; au != nil {
		switch {
		case au.Basic != nil:
			pw, err := ResolveSecret(au.Basic.PasswordRef)
			if err != nil {
				return Result{Err: fmt.Errorf("basic auth password: %w", err)}
			}
			req.SetBasicAuth(au.Basic.Username, pw)
		case au.Bearer != nil:
			tok, err := ResolveSecret(au.Bearer.TokenRef)
			if err != nil {
				return Result{Err: fmt.Errorf("bearer token: %w", err)}
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	res := Result{Latency: time.Since(start)}
	if err != nil {
		res.Err = err
		return res
	}
	defer resp.Body.Close()
	excerpt, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	res.Status = resp.StatusCode
	res.Excerpt = string(excerpt)
	res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	res.Latency = time.Since(start)
	return res
}

// Sign returns the Standard Webhooks signature header value
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" for a whsec_ secret.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", fmt.Errorf("signing secret is not whsec_<base64>: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, ts.Unix())
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// ResolveSecret reads a secret reference: an environment variable or a
// file (trailing newline trimmed).
func ResolveSecret(r manifest.SecretRef) (string, error) {
	switch {
	case r.Env != "":
		v, ok := os.LookupEnv(r.Env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", r.Env)
		}
		return v, nil
	case r.File != "":
		b, err := os.ReadFile(r.File)
		if err != nil {
			return "", err
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return "", errors.New("empty secret reference")
}

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Invalid or negative values give 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 7*24*3600 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
