package manifest

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/osteele/liquid"
)

// liquidFilters are the filters of the engine that renders templates at
// send time (pkg/webhook): liquid.NewEngine()'s standard ones and the ones
// Hookstream adds (webhook.Filters; pkg/webhook tests that the two lists
// agree, since this package cannot import it). An unknown filter parses but
// fails every render, so it is refused when the manifest is applied.
var liquidFilters = map[string]bool{}

func init() {
	for _, f := range strings.Fields(`abs append capitalize ceil compact concat date default divided_by
		downcase escape escape_once first floor inspect join json last lstrip map minus modulo
		newline_to_br plus prepend remove remove_first replace replace_first reverse round rstrip
		size slice sort sort_natural split strip strip_html strip_newlines times truncate
		truncatewords type uniq upcase url_decode url_encode
		where find sum at_least at_most base64_encode base64_decode base64_url_safe_encode
		base64_url_safe_decode jsonify md5 sha1 sha256 hmac_sha1 hmac_sha256`) {
		liquidFilters[f] = true
	}
}

var (
	liquidMu     sync.Mutex
	liquidEngine = liquid.NewEngine()

	liquidPrefix = regexp.MustCompile(`^Liquid error(?: \(line (\d+)\))?: `)
	liquidTag    = regexp.MustCompile(`(?s)\{\{.*?\}\}|\{%.*?%\}`)
	liquidQuoted = regexp.MustCompile(`"[^"]*"|'[^']*'`)
	liquidFilter = regexp.MustCompile(`\|\s*([A-Za-z_][A-Za-z0-9_-]*)`)
)

// IsTemplate reports whether s holds Liquid markup.
func IsTemplate(s string) bool { return strings.Contains(s, "{{") || strings.Contains(s, "{%") }

// CheckLiquid reports why src would not render: a syntax error, an
// unclosed "{{" or "{%", or an unknown filter. Plain text is fine.
func CheckLiquid(src string) (err error) {
	if !IsTemplate(src) {
		return nil
	}
	for _, d := range [][2]string{{"{{", "}}"}, {"{%", "%}"}} {
		if !closed(src, d[0], d[1]) {
			return fmt.Errorf("%q is not closed by %q", d[0], d[1])
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the Liquid parser failed: %v", r)
		}
	}()
	liquidMu.Lock()
	_, serr := liquidEngine.ParseString(src)
	liquidMu.Unlock()
	if serr != nil {
		msg := serr.Error()
		if m := liquidPrefix.FindStringSubmatch(msg); m != nil {
			msg = msg[len(m[0]):]
			if n, _ := strconv.Atoi(m[1]); n > 1 {
				msg += fmt.Sprintf(" (template line %d)", n)
			}
		}
		return errors.New(msg)
	}
	for _, tag := range liquidTag.FindAllString(src, -1) {
		inner := liquidQuoted.ReplaceAllString(tag, `""`)
		for _, m := range liquidFilter.FindAllStringSubmatch(inner, -1) {
			if !liquidFilters[m[1]] {
				return fmt.Errorf("unknown filter %q", m[1])
			}
		}
	}
	return nil
}

// closed reports whether every open delimiter in s has a close after it.
func closed(s, open, close string) bool {
	for {
		i := strings.Index(s, open)
		if i < 0 {
			return true
		}
		s = s[i+len(open):]
		j := strings.Index(s, close)
		if j < 0 {
			return false
		}
		s = s[j+len(close):]
	}
}
