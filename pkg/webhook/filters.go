package webhook

import (
	"crypto/hmac"
	"crypto/md5"  //nolint:gosec // a Liquid filter users ask for, not a security primitive
	"crypto/sha1" //nolint:gosec // idem
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"html"
	"net/url"
	"strings"

	"github.com/osteele/liquid"
	"github.com/osteele/liquid/values"
)

// Filters lists the Liquid filters this package adds to osteele/liquid's
// standard set (which already has default, json, join, map, sort, uniq,
// size, date, plus/minus/times/divided_by, append, replace, url_encode,
// url_decode, escape, strip, truncate and the other Shopify basics). The
// list is documented in docs/dispatcher.md.
var Filters = []string{
	"where", "find", "sum", "at_least", "at_most",
	"base64_encode", "base64_decode", "base64_url_safe_encode", "base64_url_safe_decode",
	"jsonify", "md5", "sha1", "sha256", "hmac_sha1", "hmac_sha256",
}

// registerFilters adds the Filters and replaces the standard filters that
// can grow a value (append, prepend, replace, replace_first, escape,
// escape_once, newline_to_br, url_encode, join, concat, json, inspect) with
// versions that keep the standard behaviour but refuse a result over the
// render limits.
func registerFilters(e *liquid.Engine, l RenderLimits) {
	str := func(s string) (string, error) {
		if len(s) > l.MaxOutput {
			return "", fmt.Errorf("%w: a filter result is larger than %d bytes", ErrRenderLimit, l.MaxOutput)
		}
		return s, nil
	}
	grow := func(base, add int) error {
		if base+add > l.MaxOutput {
			return fmt.Errorf("%w: a filter result is larger than %d bytes", ErrRenderLimit, l.MaxOutput)
		}
		return nil
	}
	encodeJSON := func(v any) (string, error) {
		b, err := json.Marshal(v)
		if err != nil {
			return "", fmt.Errorf("json: %w", err)
		}
		return str(string(b))
	}

	// Growing standard filters, guarded.
	e.RegisterFilter("append", func(s, suffix string) (string, error) {
		if err := grow(len(s), len(suffix)); err != nil {
			return "", err
		}
		return s + suffix, nil
	})
	e.RegisterFilter("prepend", func(s, prefix string) (string, error) {
		if err := grow(len(s), len(prefix)); err != nil {
			return "", err
		}
		return prefix + s, nil
	})
	e.RegisterFilter("replace", func(s, old, n string) (string, error) {
		if len(n) > len(old) {
			count := strings.Count(s, old)
			if old == "" {
				count = len(s) + 1
			}
			if err := grow(len(s), count*(len(n)-len(old))); err != nil {
				return "", err
			}
		}
		return strings.ReplaceAll(s, old, n), nil
	})
	e.RegisterFilter("replace_first", func(s, old, n string) (string, error) {
		if err := grow(len(s), len(n)); err != nil {
			return "", err
		}
		return strings.Replace(s, old, n, 1), nil
	})
	e.RegisterFilter("escape", func(s string) (string, error) { return str(html.EscapeString(s)) })
	e.RegisterFilter("escape_once", func(s string) (string, error) {
		return str(html.EscapeString(html.UnescapeString(s)))
	})
	e.RegisterFilter("newline_to_br", func(s string) (string, error) {
		return str(strings.ReplaceAll(s, "\n", "<br />"))
	})
	e.RegisterFilter("url_encode", func(s string) (string, error) { return str(url.QueryEscape(s)) })
	e.RegisterFilter("join", func(a []any, sep func(string) string) (string, error) {
		s := sep(" ")
		var b strings.Builder
		first := true
		for _, v := range a {
			if v == nil {
				continue
			}
			if !first {
				b.WriteString(s)
			}
			first = false
			b.WriteString(fmt.Sprint(v))
			if b.Len() > l.MaxOutput {
				return "", fmt.Errorf("%w: a filter result is larger than %d bytes", ErrRenderLimit, l.MaxOutput)
			}
		}
		return b.String(), nil
	})
	e.RegisterFilter("concat", func(a, b []any) ([]any, error) {
		if len(a)+len(b) > l.MaxItems {
			return nil, fmt.Errorf("%w: an array has more than %d items", ErrRenderLimit, l.MaxItems)
		}
		out := make([]any, 0, len(a)+len(b))
		return append(append(out, a...), b...), nil
	})
	e.RegisterFilter("json", encodeJSON)
	e.RegisterFilter("jsonify", encodeJSON)
	e.RegisterFilter("inspect", encodeJSON)

	// Array filters.
	e.RegisterFilter("where", func(a []any, key string, want ...any) []any {
		var out []any
		for _, item := range a {
			v, ok := property(item, key)
			if !ok {
				continue
			}
			if len(want) == 0 {
				if v != nil && v != false {
					out = append(out, item)
				}
			} else if values.Equal(v, want[0]) {
				out = append(out, item)
			}
		}
		return out
	})
	e.RegisterFilter("find", func(a []any, key string, want any) any {
		for _, item := range a {
			if v, ok := property(item, key); ok && values.Equal(v, want) {
				return item
			}
		}
		return nil
	})
	e.RegisterFilter("sum", func(a []any, key ...string) (any, error) {
		var isum int64
		var fsum float64
		float := false
		for _, item := range a {
			v := item
			if len(key) > 0 && key[0] != "" {
				var ok bool
				if v, ok = property(item, key[0]); !ok {
					continue
				}
			}
			switch n := v.(type) {
			case nil:
			case int:
				isum += int64(n)
			case int64:
				isum += n
			case int32:
				isum += int64(n)
			case float64:
				fsum += n
				float = true
			case float32:
				fsum += float64(n)
				float = true
			case json.Number:
				if i, err := n.Int64(); err == nil {
					isum += i
				} else if f, err := n.Float64(); err == nil {
					fsum += f
					float = true
				}
			case string:
				var f float64
				if _, err := fmt.Sscan(n, &f); err != nil {
					return nil, fmt.Errorf("sum: %q is not a number", n)
				}
				if f == float64(int64(f)) {
					isum += int64(f)
				} else {
					fsum += f
					float = true
				}
			default:
				return nil, fmt.Errorf("sum: %v is not a number", v)
			}
		}
		if float {
			return fsum + float64(isum), nil
		}
		return isum, nil
	})

	// Number filters.
	e.RegisterFilter("at_least", func(n, m float64) float64 { return max(n, m) })
	e.RegisterFilter("at_most", func(n, m float64) float64 { return min(n, m) })

	// Encoding and digests.
	e.RegisterFilter("base64_encode", func(s string) (string, error) {
		return str(base64.StdEncoding.EncodeToString([]byte(s)))
	})
	e.RegisterFilter("base64_decode", func(s string) (string, error) {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return "", fmt.Errorf("base64_decode: %w", err)
		}
		return string(b), nil
	})
	e.RegisterFilter("base64_url_safe_encode", func(s string) (string, error) {
		return str(base64.URLEncoding.EncodeToString([]byte(s)))
	})
	e.RegisterFilter("base64_url_safe_decode", func(s string) (string, error) {
		b, err := base64.URLEncoding.DecodeString(s)
		if err != nil {
			return "", fmt.Errorf("base64_url_safe_decode: %w", err)
		}
		return string(b), nil
	})
	digest := func(h func() hash.Hash) func(string) string {
		return func(s string) string {
			d := h()
			d.Write([]byte(s))
			return hex.EncodeToString(d.Sum(nil))
		}
	}
	e.RegisterFilter("md5", digest(md5.New))
	e.RegisterFilter("sha1", digest(sha1.New))
	e.RegisterFilter("sha256", digest(sha256.New))
	e.RegisterFilter("hmac_sha1", func(s, key string) string {
		m := hmac.New(sha1.New, []byte(key))
		m.Write([]byte(s))
		return hex.EncodeToString(m.Sum(nil))
	})
	e.RegisterFilter("hmac_sha256", func(s, key string) string {
		m := hmac.New(sha256.New, []byte(key))
		m.Write([]byte(s))
		return hex.EncodeToString(m.Sum(nil))
	})
}

// property reads key of a map item (JSON objects, linked content, profiles).
func property(item any, key string) (any, bool) {
	switch m := item.(type) {
	case map[string]any:
		v, ok := m[key]
		return v, ok
	case map[string]string:
		v, ok := m[key]
		return v, ok
	}
	return nil, false
}
