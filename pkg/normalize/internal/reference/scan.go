package reference

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// This file holds a small JSON scanner. It validates exactly what
// encoding/json's Valid accepts (strings are not checked for UTF-8 here; the
// normaliser does that once per record with utf8.Valid) and slices values out
// of the input without decoding them, which keeps the hot path free of
// reflection and of per-property allocations.

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

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

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

// scanString validates the string starting at b[i] == '"' and returns the
// index just past its closing quote.
func scanString(b []byte, i int) (int, *syntaxError) {
	i++
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(b) {
				return i + 1, errAt(i+1, "unexpected end of input in string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := 2; k < 6; k++ {
					if i+k >= len(b) || !isHex(b[i+k]) {
						return i + k, errAt(i+k, `invalid \u escape in string`)
					}
				}
				i += 6
			default:
				return i + 1, errAt(i+1, "invalid escape in string")
			}
		case c < 0x20:
			return i, errAt(i, "control character in string")
		default:
			i++
		}
	}
	return i, errAt(i, "unexpected end of input in string")
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
// allowed) and returns the index just past the colon.
func scanKey(b []byte, i int) (int, *syntaxError) {
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != '"' {
		return i, errAt(i, "expected a string key, found "+found(b, i))
	}
	i, err := scanString(b, i)
	if err != nil {
		return i, err
	}
	i = skipSpace(b, i)
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

// scanValue validates the JSON value starting at b[i] (leading space allowed)
// and returns the index just past it. It does not recurse, so hostile nesting
// costs one byte of stack per level, bounded by the input's length.
func scanValue(b []byte, i int) (int, *syntaxError) {
	var buf [32]byte
	stack := buf[:0] // open containers: '{' or '['
	var err *syntaxError
	for {
		// A value is expected at b[i].
		i = skipSpace(b, i)
		if i >= len(b) {
			return i, errAt(i, "unexpected end of input")
		}
		switch c := b[i]; {
		case c == '{':
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			stack = append(stack, '{')
			if i, err = scanKey(b, i); err != nil {
				return i, err
			}
			continue
		case c == '[':
			i = skipSpace(b, i+1)
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			stack = append(stack, '[')
			continue
		case c == '"':
			i, err = scanString(b, i)
		case c == 't':
			i, err = scanLiteral(b, i, "true")
		case c == 'f':
			i, err = scanLiteral(b, i, "false")
		case c == 'n':
			i, err = scanLiteral(b, i, "null")
		case c == '-' || ('0' <= c && c <= '9'):
			i, err = scanNumber(b, i)
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
				return i, nil
			}
			i = skipSpace(b, i)
			top := stack[len(stack)-1]
			switch {
			case i >= len(b):
				return i, errAt(i, "unexpected end of input")
			case b[i] == ',':
				i++
				if top == '{' {
					if i, err = scanKey(b, i); err != nil {
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

// objectIter walks the members of the JSON object at the start of b,
// validating as it goes. After next reports false, err says whether the
// object was well formed and end is the index just past it.
type objectIter struct {
	b       []byte
	end     int
	started bool
	done    bool
	err     *syntaxError
}

// next returns the next member: key is the quoted key token, val the raw
// value.
func (it *objectIter) next() (key, val []byte, ok bool) {
	if it.done {
		return nil, nil, false
	}
	b := it.b
	var i int
	if !it.started {
		it.started = true
		if len(b) == 0 || b[0] != '{' {
			return it.fail(errUnexpected(b, 0))
		}
		i = skipSpace(b, 1)
		if i < len(b) && b[i] == '}' {
			it.done, it.end = true, i+1
			return nil, nil, false
		}
	} else {
		i = skipSpace(b, it.end)
		switch {
		case i < len(b) && b[i] == '}':
			it.done, it.end = true, i+1
			return nil, nil, false
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		default:
			return it.fail(errAt(i, "expected ',' or '}' in object, found "+found(b, i)))
		}
	}
	if i >= len(b) || b[i] != '"' {
		return it.fail(errAt(i, "expected a string key, found "+found(b, i)))
	}
	kend, err := scanString(b, i)
	if err != nil {
		return it.fail(err)
	}
	key = b[i:kend]
	i = skipSpace(b, kend)
	if i >= len(b) || b[i] != ':' {
		return it.fail(errAt(i, "expected ':' after object key, found "+found(b, i)))
	}
	i = skipSpace(b, i+1)
	vend, err := scanValue(b, i)
	if err != nil {
		return it.fail(err)
	}
	it.end = vend
	return key, b[i:vend], true
}

func (it *objectIter) fail(err *syntaxError) ([]byte, []byte, bool) {
	it.done, it.err = true, err
	return nil, nil, false
}

// arrayElems returns the elements of the JSON array b (which must start with
// '[') and the index just past the array.
func arrayElems(b []byte) ([][]byte, int, *syntaxError) {
	if len(b) == 0 || b[0] != '[' {
		return nil, 0, errUnexpected(b, 0)
	}
	i := skipSpace(b, 1)
	if i < len(b) && b[i] == ']' {
		return nil, i + 1, nil
	}
	var elems [][]byte
	for {
		i = skipSpace(b, i)
		end, err := scanValue(b, i)
		if err != nil {
			return nil, end, err
		}
		elems = append(elems, b[i:end])
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ']':
			return elems, i + 1, nil
		case i < len(b) && b[i] == ',':
			i++
		default:
			return nil, i, errAt(i, "expected ',' or ']' in array, found "+found(b, i))
		}
	}
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
