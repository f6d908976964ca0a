package reference

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

const (
	// msThreshold: numeric times above it are milliseconds, else seconds.
	msThreshold = 1e11
	// maxMs is 9999-12-31T23:59:59.999Z; later times are not times.
	maxMs = 253402300799999
)

// timestamp returns the event time in Unix milliseconds: the ingest time now
// when v is absent, else v read as an RFC 3339 string, or as Unix seconds or
// milliseconds (a JSON number or a string holding one).
func (n *Normalizer) timestamp(v []byte, field string, now int64) (int64, *Error) {
	if isAbsent(v) {
		return now, nil
	}
	var ms int64
	var ok bool
	switch c := v[0]; {
	case c == '"':
		s := decodeString(v)
		if isNumber([]byte(s)) {
			ms, ok = numberMs(s)
		} else if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			ms, ok = t.UnixMilli(), true
		}
	case c == '-' || ('0' <= c && c <= '9'):
		ms, ok = numberMs(string(v))
	default:
		return 0, newError(CodeBadTimestamp, field+": must be an RFC 3339 string or Unix seconds or milliseconds, got "+kindOf(v))
	}
	if !ok || ms < 0 || ms > maxMs {
		return 0, newError(CodeBadTimestamp, field+": "+short(v)+" is not a valid time")
	}
	if ms-now > n.l.MaxFuture.Milliseconds() {
		return 0, newError(CodeFutureTimestamp, field+": "+short(v)+" is more than "+n.l.MaxFuture.String()+" in the future")
	}
	return ms, nil
}

// numberMs reads a JSON number as Unix seconds, or milliseconds above
// msThreshold. ok is false for negative or absurd values.
func numberMs(s string) (int64, bool) {
	if len(s) <= 18 {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			switch {
			case i < 0:
				return 0, false
			case i > msThreshold:
				return i, true
			default:
				return i * 1000, true
			}
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxMs {
		return 0, false
	}
	if f > msThreshold {
		return int64(math.Round(f)), true
	}
	return int64(math.Round(f * 1000)), true
}

// short returns a raw value for an error reason, cut when long.
func short(v []byte) string {
	const max = 64
	if len(v) <= max {
		return string(v)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return string(v[:cut]) + "…"
}

// properties returns v, a JSON object or absent, compacted and checked
// against the limits; field names it in reasons.
func (n *Normalizer) properties(v []byte, field string) ([]byte, *Error) {
	if isAbsent(v) {
		return []byte{'{', '}'}, nil
	}
	if v[0] != '{' {
		return nil, badProperties(field, v)
	}
	out, depth, members := appendCompact(make([]byte, 0, len(v)), v)
	if err := n.checkProperties(field, depth, members); err != nil {
		return nil, err
	}
	return out, nil
}

func badProperties(field string, v []byte) *Error {
	return newError(CodeBadProperties, field+": must be a JSON object, got "+kindOf(v))
}

func (n *Normalizer) checkProperties(field string, depth, members int) *Error {
	if members > n.l.MaxProperties {
		return newError(CodeTooManyProperties, field+": "+strconv.Itoa(members)+" properties, more than "+strconv.Itoa(n.l.MaxProperties))
	}
	if depth > n.l.MaxDepth {
		return newError(CodeTooDeep, field+": nesting deeper than "+strconv.Itoa(n.l.MaxDepth))
	}
	return nil
}

// objectBuilder writes a compact JSON object member by member and tracks
// what the limits need.
type objectBuilder struct {
	buf     []byte
	depth   int // of the object being built, itself level 1
	members int
}

func newObjectBuilder(capacity int) *objectBuilder {
	return &objectBuilder{buf: append(make([]byte, 0, capacity+2), '{'), depth: 1}
}

// add appends a member; key is a quoted JSON string token, val a valid value.
func (b *objectBuilder) add(key, val []byte) {
	if b.members > 0 {
		b.buf = append(b.buf, ',')
	}
	b.buf = append(b.buf, key...)
	b.buf = append(b.buf, ':')
	var d int
	b.buf, d, _ = appendCompact(b.buf, val)
	if d+1 > b.depth {
		b.depth = d + 1
	}
	b.members++
}

func (b *objectBuilder) finish() []byte { return append(b.buf, '}') }

// pageProperties returns a Segment page or screen call's properties with
// the call's "name" added as property "name" unless properties has one.
func (n *Normalizer) pageProperties(props, name []byte) ([]byte, *Error) {
	if isAbsent(props) {
		props = []byte("{}")
	} else if props[0] != '{' {
		return nil, badProperties("properties", props)
	}
	if !isAbsent(name) && name[0] != '"' {
		return nil, newError(CodeBadName, "name: must be a string, got "+kindOf(name))
	}
	b := newObjectBuilder(len(props) + len(name) + 8)
	hasName := false
	it := objectIter{b: props}
	for key, val, ok := it.next(); ok; key, val, ok = it.next() {
		hasName = hasName || keyIs(key, "name")
		b.add(key, val)
	}
	if !isAbsent(name) && !hasName {
		b.add([]byte(`"name"`), name)
	}
	if err := n.checkProperties("properties", b.depth, b.members); err != nil {
		return nil, err
	}
	return b.finish(), nil
}

// The profile properties that Segment identify's reserved traits become.
const (
	wkEmail = iota
	wkName
	wkPhone
	wkCity
	wkCountry
	wkTimezone
	wkCount
)

var wellKnown = [wkCount]string{`"Email"`, `"Name"`, `"Phone"`, `"City"`, `"Country"`, `"Timezone"`}

// renamedTrait returns the well-known property a reserved top-level trait
// maps to, or -1.
func renamedTrait(key []byte) int {
	switch {
	case keyIs(key, "email"):
		return wkEmail
	case keyIs(key, "name"):
		return wkName
	case keyIs(key, "phone"):
		return wkPhone
	}
	return -1
}

// identifyProperties maps Segment identify traits to profile properties:
// email, name and phone become Email, Name and Phone; address.city and
// address.country (strings) are copied to City and Country; context.timezone
// (a string) becomes Timezone. A well-known property the traits already hold
// wins over the mapping (the lower-case trait then stays as it is). All other
// traits, address included, are kept unchanged.
func (n *Normalizer) identifyProperties(traits, context []byte) ([]byte, *Error) {
	if isAbsent(traits) {
		traits = []byte("{}")
	} else if traits[0] != '{' {
		return nil, badProperties("traits", traits)
	}
	var has [wkCount]bool
	var extra [wkCount][]byte // values for City, Country, Timezone
	it := objectIter{b: traits}
	for key, val, ok := it.next(); ok; key, val, ok = it.next() {
		for k, wk := range wellKnown {
			if keyIs(key, wk[1:len(wk)-1]) {
				has[k] = true
			}
		}
		if keyIs(key, "address") && val[0] == '{' {
			ait := objectIter{b: val}
			for akey, aval, ok := ait.next(); ok; akey, aval, ok = ait.next() {
				if aval[0] != '"' {
					continue
				}
				if keyIs(akey, "city") {
					extra[wkCity] = aval
				} else if keyIs(akey, "country") {
					extra[wkCountry] = aval
				}
			}
		}
	}
	if !isAbsent(context) && context[0] == '{' {
		cit := objectIter{b: context}
		for key, val, ok := cit.next(); ok; key, val, ok = cit.next() {
			if keyIs(key, "timezone") && val[0] == '"' {
				extra[wkTimezone] = val
			}
		}
	}

	b := newObjectBuilder(len(traits) + 64)
	it = objectIter{b: traits}
	for key, val, ok := it.next(); ok; key, val, ok = it.next() {
		if k := renamedTrait(key); k >= 0 && !has[k] {
			key = []byte(wellKnown[k])
		}
		b.add(key, val)
	}
	for k := wkCity; k <= wkTimezone; k++ {
		if extra[k] != nil && !has[k] {
			b.add([]byte(wellKnown[k]), extra[k])
		}
	}
	if err := n.checkProperties("traits", b.depth, b.members); err != nil {
		return nil, err
	}
	return b.finish(), nil
}
