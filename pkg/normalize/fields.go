package normalize

import (
	"bytes"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"
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
		s := stringContent(v, nil)
		if isNumber(s) {
			ms, ok = numberMs(s)
		} else {
			ms, ok = rfc3339Ms(s)
		}
	case c == '-' || ('0' <= c && c <= '9'):
		ms, ok = numberMs(v)
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

// rfc3339Ms reads s as time.Parse(time.RFC3339Nano, s) does, in Unix
// milliseconds. The common shapes are read here, exactly as the standard
// library's own fast path reads them; anything else goes to time.Parse.
func rfc3339Ms(s []byte) (int64, bool) {
	if ms, ok := fastRFC3339Ms(s); ok {
		return ms, true
	}
	// time.Parse keeps no reference to its argument, so s is lent to it as
	// a string without a copy.
	t, err := time.Parse(time.RFC3339Nano, unsafe.String(unsafe.SliceData(s), len(s)))
	if err != nil {
		return 0, false
	}
	return t.UnixMilli(), true
}

// fastRFC3339Ms reads "2006-01-02T15:04:05[.fraction](Z|±07:00)" with the
// range checks of the standard library's parseRFC3339; ok is false for
// anything else, which time.Parse then decides on.
func fastRFC3339Ms(s []byte) (ms int64, ok bool) {
	if len(s) < len("2006-01-02T15:04:05Z") || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	year, ok1 := digits(s[0:4])
	month, ok2 := digits(s[5:7])
	day, ok3 := digits(s[8:10])
	hour, ok4 := digits(s[11:13])
	minute, ok5 := digits(s[14:16])
	sec, ok6 := digits(s[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || month < 1 || month > 12 || day < 1 ||
		day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	s = s[19:]
	var nsec int64
	if len(s) >= 2 && s[0] == '.' && isDigit(s[1]) {
		// Like the standard library: every digit is read, the first nine
		// count.
		n := 1
		for n < len(s) && isDigit(s[n]) {
			if n <= 9 {
				nsec = nsec*10 + int64(s[n]-'0')
			}
			n++
		}
		for k := n; k <= 9; k++ {
			nsec *= 10
		}
		s = s[n:]
	}
	offset := 0
	switch {
	case len(s) == 1 && s[0] == 'Z':
	case len(s) == len("-07:00") && (s[0] == '+' || s[0] == '-') && s[3] == ':':
		hh, okh := digits(s[1:3])
		mm, okm := digits(s[4:6])
		if !okh || !okm || hh > 23 || mm > 59 {
			return 0, false
		}
		offset = (hh*60 + mm) * 60
		if s[0] == '-' {
			offset = -offset
		}
	default:
		return 0, false
	}
	secs := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+minute*60+sec-offset)
	return secs*1000 + nsec/1e6, true
}

// digits reads s, of ASCII digits only, as a decimal number.
func digits(s []byte) (int, bool) {
	n := 0
	for _, c := range s {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// daysIn is the number of days of month in year (proleptic Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch is the number of days from 1970-01-01 to the given date of
// the proleptic Gregorian calendar, year 0 to 9999 (days_from_civil, from
// Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms").
func daysSinceEpoch(year, month, day int) int64 {
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y
	if era < 0 {
		era -= 399
	}
	era /= 400
	yoe := y - era*400 // [0, 399]
	m := int64(month)
	if m > 2 {
		m -= 3
	} else {
		m += 9
	}
	doy := (153*m+2)/5 + int64(day) - 1 // [0, 365]
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// numberMs reads a JSON number as Unix seconds, or milliseconds above
// msThreshold. ok is false for negative or absurd values.
func numberMs(b []byte) (int64, bool) {
	// strconv keeps no reference to its argument (its errors hold copies),
	// so b is lent to it as a string without a copy.
	s := unsafe.String(unsafe.SliceData(b), len(b))
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
// against the limits; st is v's stats, field names it in reasons. A compact
// v is returned as it is; otherwise the compact copy is written to s.
func (n *Normalizer) properties(v []byte, st *stats, field string, s *Scratch) ([]byte, *Error) {
	if isAbsent(v) {
		return emptyObject[:2:2], nil
	}
	if v[0] != '{' {
		return nil, badProperties(field, v)
	}
	if err := n.checkProperties(field, st.depth, st.members); err != nil {
		return nil, err
	}
	if !st.spaced {
		return v[:len(v):len(v)], nil
	}
	start := len(s.buf)
	s.buf, _, _ = appendCompact(s.buf, v)
	return s.buf[start:len(s.buf):len(s.buf)], nil
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

// objectBuilder writes a compact JSON object member by member into a
// Scratch and tracks what the limits need.
type objectBuilder struct {
	s       *Scratch
	start   int
	depth   int // of the object being built, itself level 1
	members int
	// compact says that the values added are compact already: they are
	// copied as they are, and depth is the caller's to keep.
	compact bool
}

// newObjectBuilder starts an object. compact is as in objectBuilder.
func newObjectBuilder(s *Scratch, compact bool) objectBuilder {
	start := len(s.buf)
	s.buf = append(s.buf, '{')
	return objectBuilder{s: s, start: start, depth: 1, compact: compact}
}

// add appends a member; key is a quoted JSON string token, val a valid value.
func (b *objectBuilder) add(key, val []byte) {
	buf := b.s.buf
	if b.members > 0 {
		buf = append(buf, ',')
	}
	buf = append(buf, key...)
	buf = append(buf, ':')
	if b.compact {
		buf = append(buf, val...)
	} else {
		var d int
		buf, d, _ = appendCompact(buf, val)
		b.depth = max(b.depth, d+1)
	}
	b.members++
	b.s.buf = buf
}

// finish closes the object and returns it, capped.
func (b *objectBuilder) finish() []byte {
	b.s.buf = append(b.s.buf, '}')
	return b.s.buf[b.start:len(b.s.buf):len(b.s.buf)]
}

// drop forgets the object, whose limits were exceeded.
func (b *objectBuilder) drop() { b.s.buf = b.s.buf[:b.start] }

// pageProperties returns a Segment page or screen call's properties with
// the call's "name" added as property "name" unless properties has one; st
// is the stats of props.
func (n *Normalizer) pageProperties(props []byte, st *stats, name []byte, s *Scratch) ([]byte, *Error) {
	if isAbsent(props) {
		props, st = emptyObject, &stats{depth: 1}
	} else if props[0] != '{' {
		return nil, badProperties("properties", props)
	}
	if !isAbsent(name) && name[0] != '"' {
		return nil, newError(CodeBadName, "name: must be a string, got "+kindOf(name))
	}
	hasName := false
	members(props, func(_ int, key, _ []byte) bool {
		hasName = keyIs(key, "name")
		return !hasName
	})
	addName := !isAbsent(name) && !hasName
	if !st.spaced {
		// Compact properties are used as they are, or copied with the name
		// member appended.
		count := st.members
		if addName {
			count++
		}
		if err := n.checkProperties("properties", max(st.depth, 1), count); err != nil { // a string name adds no depth
			return nil, err
		}
		if !addName {
			return props[:len(props):len(props)], nil
		}
		start := len(s.buf)
		s.buf = append(s.buf, props[:len(props)-1]...)
		if st.members > 0 {
			s.buf = append(s.buf, ',')
		}
		s.buf = append(s.buf, quotedName...)
		s.buf = append(s.buf, ':')
		s.buf = append(s.buf, name...)
		s.buf = append(s.buf, '}')
		return s.buf[start:len(s.buf):len(s.buf)], nil
	}
	b := newObjectBuilder(s, false)
	members(props, func(_ int, key, val []byte) bool {
		b.add(key, val)
		return true
	})
	if addName {
		b.add(quotedName, name)
	}
	if err := n.checkProperties("properties", b.depth, b.members); err != nil {
		b.drop()
		return nil, err
	}
	return b.finish(), nil
}

var quotedName = []byte(`"name"`)

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

var wellKnown = [wkCount][]byte{[]byte(`"Email"`), []byte(`"Name"`), []byte(`"Phone"`), []byte(`"City"`), []byte(`"Country"`), []byte(`"Timezone"`)}

// traitKey classifies a trait's key: the well-known property it is (wk, or
// -1), the well-known property it is renamed to (renamed, or -1: "email",
// "name" and "phone"), and whether it is "address".
func traitKey(key []byte) (wk, renamed int, address bool) {
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') >= 0 {
		inner = []byte(decodeString(key))
	}
	switch string(inner) {
	case "Email":
		return wkEmail, -1, false
	case "Name":
		return wkName, -1, false
	case "Phone":
		return wkPhone, -1, false
	case "City":
		return wkCity, -1, false
	case "Country":
		return wkCountry, -1, false
	case "Timezone":
		return wkTimezone, -1, false
	case "email":
		return -1, wkEmail, false
	case "name":
		return -1, wkName, false
	case "phone":
		return -1, wkPhone, false
	case "address":
		return -1, -1, true
	}
	return -1, -1, false
}

// identifyProperties maps Segment identify traits to profile properties:
// email, name and phone become Email, Name and Phone; address.city and
// address.country (strings) are copied to City and Country; context.timezone
// (a string) becomes Timezone. A well-known property the traits already hold
// wins over the mapping (the lower-case trait then stays as it is). All other
// traits, address included, are kept unchanged.
//
// st is the stats of traits.
func (n *Normalizer) identifyProperties(traits []byte, st *stats, context []byte, s *Scratch) ([]byte, *Error) {
	if isAbsent(traits) {
		traits, st = emptyObject, &stats{depth: 1}
	} else if traits[0] != '{' {
		return nil, badProperties("traits", traits)
	}
	// Compact traits are copied as they are, less the closing brace, with
	// the renamed keys changed in place: "email" → "Email" keeps the
	// length, if the key is written without escapes. Spaced traits, or a
	// renamed key with escapes (or too many renamed keys), take the slower
	// way: a rebuild member by member.
	start := len(s.buf)
	inPlace := !st.spaced
	if inPlace {
		s.buf = append(s.buf, traits[:len(traits)-1]...)
	}
	type rename struct{ at, wk int }
	var renames [8]rename
	nRenames := 0
	var has [wkCount]bool
	var extra [wkCount][]byte // values for City, Country, Timezone
	members(traits, func(at int, key, val []byte) bool {
		wk, renamed, address := traitKey(key)
		if wk >= 0 {
			has[wk] = true
		}
		if renamed >= 0 && inPlace {
			if nRenames < len(renames) && len(key) == len(wellKnown[renamed]) {
				renames[nRenames] = rename{start + at + 1, renamed}
				nRenames++
			} else {
				inPlace = false
			}
		}
		if address && val[0] == '{' {
			members(val, func(_ int, akey, aval []byte) bool {
				if aval[0] != '"' {
					return true
				}
				if keyIs(akey, "city") {
					extra[wkCity] = aval
				} else if keyIs(akey, "country") {
					extra[wkCountry] = aval
				}
				return true
			})
		}
		return true
	})
	if !isAbsent(context) && context[0] == '{' {
		members(context, func(_ int, key, val []byte) bool {
			if keyIs(key, "timezone") && val[0] == '"' {
				extra[wkTimezone] = val
			}
			return true
		})
	}
	if !inPlace {
		s.buf = s.buf[:start]
		return n.identifyRebuild(traits, &has, &extra, s)
	}
	for _, r := range renames[:nRenames] {
		if !has[r.wk] {
			s.buf[r.at] = wellKnown[r.wk][1] // the upper-case initial
		}
	}
	count := st.members
	for k := wkCity; k <= wkTimezone; k++ {
		if extra[k] != nil && !has[k] {
			if count > 0 {
				s.buf = append(s.buf, ',')
			}
			s.buf = append(s.buf, wellKnown[k]...)
			s.buf = append(s.buf, ':')
			s.buf = append(s.buf, extra[k]...)
			count++
		}
	}
	if err := n.checkProperties("traits", max(st.depth, 1), count); err != nil { // the added values are strings
		s.buf = s.buf[:start]
		return nil, err
	}
	s.buf = append(s.buf, '}')
	return s.buf[start:len(s.buf):len(s.buf)], nil
}

// identifyRebuild is identifyProperties for traits that are not compact or
// that have an escaped renamed key: has and extra are what it found.
func (n *Normalizer) identifyRebuild(traits []byte, has *[wkCount]bool, extra *[wkCount][]byte, s *Scratch) ([]byte, *Error) {
	b := newObjectBuilder(s, false)
	members(traits, func(_ int, key, val []byte) bool {
		if _, k, _ := traitKey(key); k >= 0 && !has[k] {
			key = wellKnown[k]
		}
		b.add(key, val)
		return true
	})
	for k := wkCity; k <= wkTimezone; k++ {
		if extra[k] != nil && !has[k] {
			b.add(wellKnown[k], extra[k])
		}
	}
	if err := n.checkProperties("traits", b.depth, b.members); err != nil {
		b.drop()
		return nil, err
	}
	return b.finish(), nil
}
