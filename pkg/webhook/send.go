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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
)

// Version is sent in User-Agent: hookstream/Version (as it is when the
// Sender is made).
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
	// Location is the Location header of a 3xx (redirects are not followed
	// unless configured).
	Location string
}

// OK reports a 2xx.
func (r Result) OK() bool { return r.Err == nil && r.Status >= 200 && r.Status < 300 }

// Gone reports 410 Gone: the endpoint says it no longer exists.
func (r Result) Gone() bool { return r.Err == nil && r.Status == 410 }

// Retryable reports an outcome worth another attempt (CONTRACT.md section
// 3): a network error or timeout, 408, 429 or a 5xx. Refusals by the SSRF
// guard, redirects, secret errors and other 4xx are final.
func (r Result) Retryable() bool {
	if r.Err != nil {
		return !errors.Is(r.Err, ErrForbiddenAddress) && !errors.Is(r.Err, ErrRequest)
	}
	return r.Status == 408 || r.Status == 429 || r.Status >= 500
}

// ErrRequest is wrapped by errors in building the request itself (URL,
// secrets, signing): another attempt would fail the same way.
var ErrRequest = errors.New("cannot build the request")

// ErrTooLarge is returned by Fetch when a response exceeds its size limit.
var ErrTooLarge = errors.New("response too large")

// Sender sends webhook requests. Safe for concurrent use.
type Sender struct {
	client *http.Client
	opts   SenderOptions
	tracer trace.Tracer
	ua     string // User-Agent
}

// SenderOptions configure a Sender.
type SenderOptions struct {
	// AllowPrivateNetworks turns the SSRF guard off.
	AllowPrivateNetworks bool
	// AllowedNetworks are exceptions to the guard (for example an internal
	// CRM at 10.1.2.3/32), checked against the dialled address.
	AllowedNetworks []netip.Prefix
	// FollowRedirects is how many redirects to follow; 0 (the default)
	// follows none and a 3xx is a final failure. Every hop is dialled
	// through the same guard.
	FollowRedirects int
	// MaxIdleConnsPerHost is the keep-alive pool per endpoint host,
	// default 64.
	MaxIdleConnsPerHost int
	// SecretDirs are the directories {file: PATH} secret references may
	// read from (symbolic links resolved); default DefaultSecretDirs. A
	// manifest cannot make the dispatcher read any other file.
	SecretDirs []string
}

// DefaultSecretDirs are where Kubernetes mounts secrets and Hookstream's
// own secrets directory.
var DefaultSecretDirs = []string{"/var/run/secrets", "/etc/hookstream/secrets"}

// ErrSecretPath is returned for a secret file outside the allowed
// directories.
var ErrSecretPath = errors.New("secret file is outside the allowed secret directories")

// NewSender returns a sender whose dialer refuses private, loopback,
// link-local, CGNAT and metadata addresses unless allowPrivate. The check is
// on the dialled IP, so a public name that resolves to 127.0.0.1 is refused
// too. Redirects are not followed.
func NewSender(allowPrivate bool) *Sender {
	return NewSenderWithOptions(SenderOptions{AllowPrivateNetworks: allowPrivate})
}

// NewSenderWithOptions returns a sender configured by o. Requests use
// HTTP/1.1 with keep-alive connections pooled per endpoint host.
func NewSenderWithOptions(o SenderOptions) *Sender {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 64
	}
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !o.AllowPrivateNetworks {
		allowed := o.AllowedNetworks
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, address)
			}
			a := ap.Addr().Unmap()
			for _, p := range allowed {
				if p.Contains(a) {
					return nil
				}
			}
			if Forbidden(a) {
				return fmt.Errorf("%w: %s", ErrForbiddenAddress, a)
			}
			return nil
		}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        0, // no global cap: pools are per host
		MaxIdleConnsPerHost: o.MaxIdleConnsPerHost,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false, // HTTP/1.1 keep-alive per host
	}
	follow := o.FollowRedirects
	return &Sender{opts: o, ua: "hookstream/" + Version, tracer: otel.GetTracerProvider().Tracer("github.com/hookstream/hookstream/webhook"), client: &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > follow {
				return http.ErrUseLastResponse
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("%w: redirect to %s", ErrForbiddenAddress, req.URL.Scheme)
			}
			return nil
		},
	}}
}

// CloseIdleConnections closes the keep-alive connections.
func (s *Sender) CloseIdleConnections() { s.client.CloseIdleConnections() }

var (
	cgnat      = netip.MustParsePrefix("100.64.0.0/10")
	thisNet    = netip.MustParsePrefix("0.0.0.0/8")
	nat64      = netip.MustParsePrefix("64:ff9b::/96")
	awsMetaV6  = netip.MustParseAddr("fd00:ec2::254")
	benchmarks = netip.MustParsePrefix("198.18.0.0/15")
)

// Forbidden reports addresses the SSRF guard refuses: loopback, private
// (RFC 1918, fc00::/7), link-local (169.254.0.0/16 holds the cloud metadata
// services), CGNAT (100.64.0.0/10, Alibaba's metadata), unspecified,
// multicast, 0.0.0.0/8, 198.18.0.0/15, and NAT64 addresses that embed any
// of these.
func Forbidden(a netip.Addr) bool {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		return Forbidden(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() || cgnat.Contains(a) ||
		thisNet.Contains(a) || benchmarks.Contains(a) || a == awsMetaV6
}

// Attempt is one request to send.
type Attempt struct {
	ID        string
	Timestamp time.Time
	Request   Request
	// Traceparent, if set, is sent as the traceparent header.
	Traceparent string
	// Span, when set and recording, is the attempt's span, which the
	// caller started in ctx as a client span: the HTTP exchange is recorded
	// on it (method, server address and port, response status) and its
	// context is sent as the traceparent, instead of on a child client span
	// of its own. One span per attempt is half the cost of two.
	Span trace.Span
	// Attrs, with Span, are the caller's attributes of the span (a list
	// from spanattr.Get, which Send takes): they are set together with the
	// exchange's, in one call.
	Attrs *[]attribute.KeyValue
}

var excerpts = sync.Pool{New: func() any { return new([1024]byte) }}

// Send makes one attempt to wh's endpoint, within wh's timeout (default
// 3s). It never returns an error: the outcome, transport errors included,
// is in the Result.
func (s *Sender) Send(ctx context.Context, wh *manifest.Webhook, a Attempt) Result {
	timeout := wh.Spec.Timeout.Std()
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	recording := a.Span != nil && a.Span.IsRecording()
	req, err := s.request(ctx, wh, a)
	if err != nil {
		if recording && a.Attrs != nil {
			spanattr.Set(a.Span, a.Attrs)
		}
		return Result{Err: fmt.Errorf("%w: %w", ErrRequest, err)}
	}
	start := time.Now()
	var resp *http.Response
	if recording {
		resp, err = s.doWithin(req, a.Span, a.Attrs)
	} else {
		resp, err = s.do(req)
	}
	res := Result{Latency: time.Since(start)}
	if err != nil {
		res.Err = err
		return res
	}
	defer resp.Body.Close()
	buf := excerpts.Get().(*[1024]byte)
	n, _ := io.ReadFull(resp.Body, buf[:])
	res.Excerpt = string(buf[:n])
	excerpts.Put(buf)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	res.Status = resp.StatusCode
	res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		res.Location = resp.Header.Get("Location")
	}
	res.Latency = time.Since(start)
	return res
}

func (s *Sender) request(ctx context.Context, wh *manifest.Webhook, a Attempt) (*http.Request, error) {
	target := wh.Spec.URL
	if len(a.Request.Query) > 0 {
		u, err := url.Parse(wh.Spec.URL)
		if err != nil {
			return nil, fmt.Errorf("webhook url: %w", err)
		}
		q := u.Query()
		for k, vs := range a.Request.Query {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
		target = u.String()
	}
	method := wh.Spec.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(a.Request.Body))
	if err != nil {
		return nil, fmt.Errorf("webhook url: %w", err)
	}
	// Sized for the headers below, the webhook's own and the few the
	// transport adds, so that it is not grown on every request.
	h := make(http.Header, 8+len(wh.Spec.Headers))
	req.Header = h
	for k, v := range wh.Spec.Headers {
		h.Set(k, v)
	}
	// Canonical keys set directly: these are on every request. The four
	// values share one backing array.
	vals := [...]string{a.Request.ContentType, s.ua, a.ID, strconv.FormatInt(a.Timestamp.Unix(), 10)}
	h["Content-Type"] = vals[0:1:1]
	h["User-Agent"] = vals[1:2:2]
	h["Webhook-Id"] = vals[2:3:3]
	h["Webhook-Timestamp"] = vals[3:4:4]
	if a.Traceparent != "" {
		h["Traceparent"] = []string{a.Traceparent}
	}
	if sg := wh.Spec.Signing; sg != nil {
		secret, err := s.secret(sg.SecretRef)
		if err != nil {
			return nil, fmt.Errorf("signing secret: %w", err)
		}
		sig, err := Sign(secret, a.ID, a.Timestamp, a.Request.Body)
		if err != nil {
			return nil, err
		}
		req.Header.Set("webhook-signature", sig)
	}
	if au := wh.Spec.Auth; au != nil {
		switch {
		case au.Basic != nil:
			pw, err := s.secret(au.Basic.PasswordRef)
			if err != nil {
				return nil, fmt.Errorf("basic auth password: %w", err)
			}
			req.SetBasicAuth(au.Basic.Username, pw)
		case au.Bearer != nil:
			tok, err := s.secret(au.Bearer.TokenRef)
			if err != nil {
				return nil, fmt.Errorf("bearer token: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
	}
	return req, nil
}

// Fetch GETs rawURL through the same guarded client (linked content): it
// returns the body of a 2xx response of at most limit bytes, or an error
// (ErrTooLarge past the limit, ErrForbiddenAddress from the guard).
func (s *Sender) Fetch(ctx context.Context, rawURL string, timeout time.Duration, limit int64) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("linked content url %q: must be an http(s) URL", rawURL)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", s.ua)
	resp, err := s.do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("GET %s answered %d", u.Redacted(), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("GET %s: %w (more than %d bytes)", u.Redacted(), ErrTooLarge, limit)
	}
	return body, nil
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

// secret resolves a reference, refusing files outside the allowed
// directories.
func (s *Sender) secret(r manifest.SecretRef) (string, error) {
	if r.File != "" {
		dirs := s.opts.SecretDirs
		if len(dirs) == 0 {
			dirs = DefaultSecretDirs
		}
		if err := CheckSecretPath(r.File, dirs); err != nil {
			return "", err
		}
	}
	return ResolveSecret(r)
}

// CheckSecretPath reports whether path, with symbolic links resolved, is
// inside one of dirs.
func CheckSecretPath(path string, dirs []string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%w: %s is not an absolute path", ErrSecretPath, path)
	}
	real, err := filepath.EvalSymlinks(filepath.Clean(path))
	if err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	for _, d := range dirs {
		rd, err := filepath.EvalSymlinks(filepath.Clean(d))
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(rd, real); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s (allowed: %s)", ErrSecretPath, path, strings.Join(dirs, ", "))
}

// ResolveSecret reads a secret reference: an environment variable or a
// file (trailing newline trimmed). It does not restrict paths: senders go
// through CheckSecretPath first.
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

// MaxRetryAfter is the longest Retry-After a receiver can ask for; longer
// values are ignored (the retry schedule applies), so that a broken or
// hostile receiver cannot park deliveries for years.
const MaxRetryAfter = 7 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Invalid, negative or past values, and values beyond MaxRetryAfter,
// give 0.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > int64(MaxRetryAfter/time.Second) {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		if d := t.Sub(now); d <= MaxRetryAfter {
			return d
		}
	}
	return 0
}
