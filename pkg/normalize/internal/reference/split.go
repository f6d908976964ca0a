package reference

import (
	"bytes"
	"strconv"
)

// SplitBody splits an HTTP request body into records for Normalize; the
// record at position i of the result has index i for error reporting. The
// records alias body. A body is one of:
//   - one JSON object (a CleverTap upload object included, returned as ONE
//     record: Normalize expands it);
//   - a JSON array: each element is a record (an element that is not an
//     object is returned too, and Normalize rejects it with its index);
//   - NDJSON: each non-empty line is a record. Objects merely separated by
//     whitespace are accepted the same way. A line that starts with '{' but
//     is not valid JSON is still returned, so Normalize rejects it alone and
//     the other lines go through.
//
// Anything else — an empty body or array, a body that starts with neither
// '{' nor '[', an invalid array, or a line that does not start with '{' —
// is an *Error with code bad_body. SplitBody applies no size limit: bound
// the body before calling it.
func SplitBody(body []byte) ([][]byte, error) {
	b := trimSpace(body)
	if len(b) == 0 {
		return nil, newError(CodeBadBody, "body: empty")
	}
	switch b[0] {
	case '[':
		elems, end, err := arrayElems(b)
		if err != nil {
			return nil, newError(CodeBadBody, "body: invalid JSON array: "+err.Error())
		}
		if end = skipSpace(b, end); end != len(b) {
			return nil, newError(CodeBadBody, "body: unexpected data after the JSON array at offset "+strconv.Itoa(end))
		}
		if len(elems) == 0 {
			return nil, newError(CodeBadBody, "body: empty array, no records")
		}
		return elems, nil
	case '{':
		if recs := splitObjects(b); recs != nil {
			return recs, nil
		}
		return splitLines(b)
	}
	return nil, newError(CodeBadBody, "body: must be a JSON object, a JSON array of objects or NDJSON, but starts with "+describeByte(b[0]))
}

// splitObjects returns the objects of b if b is nothing but valid JSON
// objects separated by optional whitespace, else nil.
func splitObjects(b []byte) [][]byte {
	var recs [][]byte
	for i := 0; i < len(b); i = skipSpace(b, i) {
		if b[i] != '{' {
			return nil
		}
		end, err := scanValue(b, i)
		if err != nil {
			return nil
		}
		recs = append(recs, b[i:end])
		i = end
	}
	return recs
}

// splitLines splits NDJSON whose lines need not all be valid JSON.
func splitLines(b []byte) ([][]byte, error) {
	var recs [][]byte
	for line := 1; len(b) > 0; line++ {
		var l []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			l, b = b, nil
		}
		l = trimSpace(l)
		if len(l) == 0 {
			continue
		}
		if l[0] != '{' {
			return nil, newError(CodeBadBody, "body: line "+strconv.Itoa(line)+" is not a JSON object (the body is neither one JSON object, a JSON array nor NDJSON)")
		}
		recs = append(recs, l)
	}
	return recs, nil
}
