package normalize

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
)

// This file holds a small JSON scanner. It validates exactly what
// encoding/json's Valid accepts (strings are not checked for UTF-8 here; the
// normaliser does that once per record with utf8.Valid) and slices values out
// of the input without decoding them, which keeps the hot path free of
// reflection and of allocations. While it validates a value it also measures
// what the property limits need (stats), so that properties are read once;
// strings, most of a record's bytes, are stepped over eight bytes at a time.

// syntaxError says where and why input stops being JSON.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at offset %d", e.msg, e.off) }

func errAt(off int, msg string) *syntaxError { return &syntaxError{off: off, msg: msg} }

func errUnexpected(b []byte, i int) *syntaxError {
	if i >= len(b) {
		return errAt(i, "unexpected end of input")
	}
	return errAt(i, "unexpected "+describeByte(b[i]))
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// isSpace reports whether c is JSON whitespace, with one comparison for
// the bytes that are not.
func isSpace(c byte) bool {
	return c <= ' ' && (uint64(1)<<c)&(1<<' '|1<<'\t'|1<<'\n'|1<<'\r') != 0
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// trimSpace removes JSON whitespace and a leading UTF-8 byte order mark.
func trimSpace(b []byte) []byte {
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	i, j := 0, len(b)
	for i < j && isSpace(b[i]) {
		i++
	}
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// strPlain[c] is true for the bytes a string scan steps over without a
// second look: everything but '"', '\\' and control characters.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// specials marks, in the high bit of each byte, the bytes of w (eight bytes
// of input, little-endian) that a string scan cannot step over: '"', '\\'
// and control characters. These are the classic SWAR tests for a zero byte
// and for a byte below a bound: a borrow can mark a byte above a marked one
// wrongly, but the lowest marked byte is always a true one.
func specials(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	bs := w ^ (ones * '\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (w-ones*0x20)&^w) & highs
}

// plainRun returns the index of the first byte at or after j that strPlain
// refuses, or len(b), looking at eight bytes at a time.
func plainRun(b []byte, j int) int {
	for j+8 <= len(b) {
		if m := specials(binary.LittleEndian.Uint64(b[j:])); m != 0 {
			return j + bits.TrailingZeros64(m)>>3
		}
		j += 8
	}
	for j < len(b) && strPlain[b[j]] {
		j++
	}
	return j
}

// scanString validates the string starting at b[i] == '"' and returns the
// index just past its closing quote.
func scanString(b []byte, i int) (int, *syntaxError) {
	end, _, err := scanStringEsc(b, i)
	return end, err
}

// scanStringEsc is scanString that also reports whether the string holds an
// escape (and so must be decoded to get its content).
func scanStringEsc(b []byte, i int) (int, bool, *syntaxError) {
	i++
	escaped := false
	for {
		if i = plainRun(b, i); i >= len(b) {
			return i, escaped, errAt(i, "unexpected end of input in string")
		}
		switch b[i] {
		case '"':
			return i + 1, escaped, nil
		case '\\':
			escaped = true
			if i+1 >= len(b) {
				return i + 1, escaped, errAt(i+1, "unexpected end of input in string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k >= len(b) || !isHex(b[i+k]) {
						return i + k, escaped, errAt(i+k, `invalid \u escape in string`)
					}
				}
				i += 6
			default:
				return i + 1, escaped, errAt(i+1, "invalid escape in string")
			}
		default: // a control character
			return i, escaped, errAt(i, "control character in string")
		}
	}
}

// scanNumber validates the number starting at b[i] and returns the index
// just past it. Grammar: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?
func scanNumber(b []byte, i int) (int, *syntaxError) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return i, errUnexpected(b, i)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, errUnexpected(b, i)
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return i, errUnexpected(b, i)
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	return i, nil
}

// isNumber reports whether s is exactly one JSON number.
func isNumber(s []byte) bool {
	end, err := scanNumber(s, 0)
	return err == nil && end == len(s) && len(s) > 0
}

func scanLiteral(b []byte, i int, lit string) (int, *syntaxError) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(b) || b[i+k] != lit[k] {
			return i + k, errUnexpected(b, i+k)
		}
	}
	return i + len(lit), nil
}

// scanKey validates an object key and its colon at b[i] (leading space
// allowed) and returns the index just past the colon. spaced is set when
// there is whitespace around the key.
func scanKey(b []byte, i int, spaced *bool) (int, *syntaxError) {
	if j := skipSpace(b, i); j != i {
		i, *spaced = j, true
	}
	if i >= len(b) || b[i] != '"' {
		return i, errAt(i, "expected a string key, found "+found(b, i))
	}
	i, err := scanString(b, i)
	if err != nil {
		return i, err
	}
	if j := skipSpace(b, i); j != i {
		i, *spaced = j, true
	}
	if i >= len(b) || b[i] != ':' {
		return i, errAt(i, "expected ':' after object key, found "+found(b, i))
	}
	return i + 1, nil
}

func found(b []byte, i int) string {
	if i >= len(b) {
		return "end of input"
	}
	return describeByte(b[i])
}

// stats describes a JSON value for the property limits and compaction:
// depth is its nesting (0 for a scalar, 1 for a flat object or array),
// members the number of members when it is an object, and spaced says
// whether it holds insignificant whitespace.
type stats struct {
	depth, members int
	spaced         bool
}

// scanValue validates the JSON value starting at b[i] (leading space allowed)
// and returns the index just past it.
func scanValue(b []byte, i int) (int, *syntaxError) {
	var st stats
	return scanValueStats(b, i, &st)
}

// scanValueStats is scanValue that also fills st for the value. It does not
// recurse, so hostile nesting costs one byte of stack per level, bounded by
// the input's length.
//
// Strings, keys and integers take an inlined fast path that only recognises
// the common shapes (no escapes, no fraction); anything else, errors
// included, is scanned again from its start by scanString, scanKey or
// scanNumber, so that both paths accept and report exactly the same.
func scanValueStats(b []byte, i int, st *stats) (int, *syntaxError) {
	var buf [32]byte
	stack := buf[:0] // open containers: '{' or '['
	var err *syntaxError
	i = skipSpace(b, i)
	spaced := false
	for {
		// A value is expected at b[i].
		if i < len(b) && b[i] <= ' ' {
			if j := skipSpace(b, i); j != i {
				i, spaced = j, true
			}
		}
		if i >= len(b) {
			return i, errAt(i, "unexpected end of input")
		}
		switch c := b[i]; {
		case c == '"':
			if j := plainRun(b, i+1); j < len(b) && b[j] == '"' {
				i = j + 1
			} else {
				i, err = scanString(b, i)
			}
		case '1' <= c && c <= '9':
			j := i + 1
			for j < len(b) && '0' <= b[j] && b[j] <= '9' {
				j++
			}
			if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
				i, err = scanNumber(b, i)
			} else {
				i = j
			}
		case c == '{':
			i++
			if i < len(b) && b[i] <= ' ' {
				if j := skipSpace(b, i); j != i {
					i, spaced = j, true
				}
			}
			if i < len(b) && b[i] == '}' {
				i++
				st.depth = max(st.depth, len(stack)+1)
				break
			}
			stack = append(stack, '{')
			st.depth = max(st.depth, len(stack))
			if len(stack) == 1 {
				st.members++
			}
			if i, err = scanKeyFast(b, i, &spaced); err != nil {
				return i, err
			}
			continue
		case c == '[':
			i++
			if i < len(b) && b[i] <= ' ' {
				if j := skipSpace(b, i); j != i {
					i, spaced = j, true
				}
			}
			if i < len(b) && b[i] == ']' {
				i++
				st.depth = max(st.depth, len(stack)+1)
				break
			}
			stack = append(stack, '[')
			st.depth = max(st.depth, len(stack))
			continue
		case c == '-' || c == '0':
			i, err = scanNumber(b, i)
		case c == 't':
			i, err = scanLiteral(b, i, "true")
		case c == 'f':
			i, err = scanLiteral(b, i, "false")
		case c == 'n':
			i, err = scanLiteral(b, i, "null")
		default:
			return i, errUnexpected(b, i)
		}
		if err != nil {
			return i, err
		}
		// A value is complete: close containers until one expects more.
	closing:
		for {
			if len(stack) == 0 {
				st.spaced = spaced
				return i, nil
			}
			if i < len(b) && b[i] <= ' ' {
				if j := skipSpace(b, i); j != i {
					i, spaced = j, true
				}
			}
			top := stack[len(stack)-1]
			switch {
			case i >= len(b):
				return i, errAt(i, "unexpected end of input")
			case b[i] == ',':
				i++
				if top == '{' {
					if len(stack) == 1 {
						st.members++
					}
					if i, err = scanKeyFast(b, i, &spaced); err != nil {
						return i, err
					}
				}
				break closing
			case top == '{' && b[i] == '}', top == '[' && b[i] == ']':
				stack = stack[:len(stack)-1]
				i++
			case top == '{':
				return i, errAt(i, "expected ',' or '}' in object, found "+found(b, i))
			default:
				return i, errAt(i, "expected ',' or ']' in array, found "+found(b, i))
			}
		}
	}
}

// scanKeyFast is scanKey with an inlined path for a key without escapes
// directly followed by its colon.
func scanKeyFast(b []byte, i int, spaced *bool) (int, *syntaxError) {
	if i < len(b) && b[i] == '"' {
		if j := plainRun(b, i+1); j+1 < len(b) && b[j] == '"' && b[j+1] == ':' {
			return j + 2, nil
		}
	}
	return scanKey(b, i, spaced)
}

// arrayElems returns the elements of the JSON array b (which must start with
// '[') and the index just past the array.
func arrayElems(b []byte) ([][]byte, int, *syntaxError) {
	return appendArrayElems(nil, b)
}

// appendArrayElems is arrayElems appending the elements to dst.
func appendArrayElems(dst [][]byte, b []byte) ([][]byte, int, *syntaxError) {
	if len(b) == 0 || b[0] != '[' {
		return dst, 0, errUnexpected(b, 0)
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return dst, i + 1, nil
	}
	for {
		i = skipSpace(b, i)
		end, err := scanValue(b, i)
		if err != nil {
			return dst, end, err
		}
		dst = append(dst, b[i:end:end])
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ']':
			return dst, i + 1, nil
		case i < len(b) && b[i] == ',':
			i++
		default:
			return dst, i, errAt(i, "expected ',' or ']' in array, found "+found(b, i))
		}
	}
}

// scanArray is scanValue for the array at b[i] that also appends its
// elements to dst.
func scanArray(b []byte, i int, dst [][]byte) ([][]byte, int, *syntaxError) {
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return dst, i + 1, nil
	}
	for {
		i = skipSpace(b, i)
		end, err := scanValue(b, i)
		if err != nil {
			return dst, end, err
		}
		dst = append(dst, b[i:end:end])
		i = skipSpace(b, end)
		switch {
		case i >= len(b):
			return dst, i, errAt(i, "unexpected end of input")
		case b[i] == ',':
			i++
		case b[i] == ']':
			return dst, i + 1, nil
		default:
			return dst, i, errAt(i, "expected ',' or ']' in array, found "+found(b, i))
		}
	}
}

// members iterates over the members of obj, a valid JSON object, without
// validating it again: key is the quoted key token, at its index in obj,
// val the raw value.
func members(obj []byte, yield func(at int, key, val []byte) bool) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] != '}' {
		kstart, kend := i, skipString(obj, i)
		key := obj[kstart:kend]
		i = skipSpace(obj, kend) // at ':'
		i = skipSpace(obj, i+1)  // at the value
		vend := skipValid(obj, i)
		if !yield(kstart, key, obj[i:vend:vend]) {
			return
		}
		i = skipSpace(obj, vend) // at ',' or '}'
		if obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
}

// skipString returns the index just past the valid JSON string at b[i].
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		i = plainRun(b, i)
		if b[i] == '"' {
			return i + 1
		}
		i++ // a backslash: skip the escaped byte (\u's digits are plain)
	}
}

// skipValid returns the index just past the valid JSON value at b[i].
func skipValid(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && !isSpace(b[i]) {
		i++
	}
	return i
}

// decodeString returns the content of the quoted, already validated JSON
// string token s. Only strings with escapes take the slow path.
func decodeString(s []byte) string {
	inner := s[1 : len(s)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner)
	}
	var out string
	if err := json.Unmarshal(s, &out); err != nil {
		// Unreachable for validated input; fall back to the raw content.
		return string(inner)
	}
	return out
}

// keyIs reports whether the quoted key token equals name, decoding escapes
// only when present.
func keyIs(key []byte, name string) bool {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	return decodeString(key) == name
}

// kindOf names the JSON type of the raw value v, for error reasons.
func kindOf(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// appendCompact appends the valid JSON value v to dst without insignificant
// whitespace. It reports the value's nesting depth (0 for a scalar, 1 for a
// flat object or array) and, for an object, its number of members.
func appendCompact(dst, v []byte) (out []byte, depth, members int) {
	d, start := 0, 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '"':
			// Skip to the closing quote; v is valid, so it exists.
			for i++; i < len(v) && v[i] != '"'; i++ {
				if v[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			d++
			if d > depth {
				depth = d
			}
		case '}', ']':
			d--
		case ':':
			if d == 1 {
				members++
			}
		case ' ', '\t', '\n', '\r':
			dst = append(dst, v[start:i]...)
			start = i + 1
		}
	}
	return append(dst, v[start:]...), depth, members
}
