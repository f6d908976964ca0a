// Package reference is a frozen copy of the first normaliser (package
// normalize before its single-pass rewrite), kept only as the oracle of the
// differential fuzz test FuzzNormalizeMatchesReference and of the
// before/after benchmark BenchmarkNormalizeReference. No service uses it.
// When a normalisation rule changes on purpose, change it here too, or
// delete this package and the test. The original package doc follows.
//
// Package normalize turns raw input records (native, CleverTap upload and
// Segment spec JSON; see CONTRACT.md section 1) into hookstreamv1.Event
// messages. It is the one normaliser shared by the Kafka consumer of
// {prefix}events.raw and by POST /v1/events, so both accept and reject exactly
// the same records, with the same stable error codes.
//
// Decisions callers should know:
//   - A record is detected on its own: "type" event|profile is native,
//     track|identify|page|screen is Segment, and an object without "type" but
//     with a "d" array is a CleverTap upload. Unknown top-level keys are
//     ignored; a known key given twice is rejected (duplicate_key).
//   - Identities may be JSON strings or JSON integers; an integer is taken as
//     its decimal text exactly as written (42 → "42"). Fractions, exponents,
//     booleans, objects and arrays are rejected (bad_identity).
//   - Without an id (native "id", Segment "messageId"; CleverTap has none) the
//     id is "h-" followed by the hex of the first 16 bytes of the SHA-256 of
//     the record's bytes (surrounding whitespace excluded; for a CleverTap
//     upload, the element's bytes). Byte-identical records therefore get the
//     same id even when they carry no ts, which makes a replay a duplicate;
//     senders of repeated identical events must add an id or a ts.
//   - MaxRecordBytes applies to each native or Segment record and to each
//     element of a CleverTap upload. A whole upload may be up to
//     MaxUploadBytes (default 64 × MaxRecordBytes) with up to
//     MaxUploadRecords elements (default 1000, CleverTap's own limit);
//     beyond either, the upload is rejected as one Result.
package reference

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// Source formats, as set in Event.source_format.
const (
	FormatNative    = "native"
	FormatCleverTap = "clevertap"
	FormatSegment   = "segment"
)

// Error codes: stable strings for metrics and for callers that branch on the
// kind of rejection.
const (
	CodeNotJSON           = "not_json"            // the record is not JSON
	CodeNotObject         = "not_object"          // JSON, but not an object
	CodeInvalidUTF8       = "invalid_utf8"        // the record is not valid UTF-8
	CodeTooLarge          = "too_large"           // record (or upload) larger than the limit
	CodeTooManyRecords    = "too_many_records"    // a CleverTap upload with too many elements
	CodeBadUpload         = "bad_upload"          // "d" is not a non-empty array
	CodeDuplicateKey      = "duplicate_key"       // a known top-level key appears twice
	CodeUnknownType       = "unknown_type"        // "type" missing, unknown or unsupported
	CodeNoIdentity        = "no_identity"         // no identity (nor fallback) given, or empty
	CodeBadIdentity       = "bad_identity"        // identity of the wrong JSON type
	CodeIdentityTooLong   = "identity_too_long"   // identity longer than MaxIdentityBytes
	CodeBadID             = "bad_id"              // id/messageId of the wrong type or too long
	CodeMissingName       = "missing_name"        // an event without a name
	CodeBadName           = "bad_name"            // an event name that is not a string
	CodeBadTimestamp      = "bad_timestamp"       // ts unparseable, negative or absurd
	CodeFutureTimestamp   = "future_timestamp"    // ts more than MaxFuture ahead of now
	CodeBadProperties     = "bad_properties"      // properties not a JSON object
	CodeTooManyProperties = "too_many_properties" // more than MaxProperties top-level keys
	CodeTooDeep           = "too_deep"            // properties nested deeper than MaxDepth
	CodeBadBody           = "bad_body"            // SplitBody: the body has no records
)

// Error is why a record was rejected: Code is stable (metrics, branching),
// Reason is for people and names the offending field, e.g.
// "identity: longer than 256 bytes".
type Error struct {
	Code, Reason string
}

// Error returns the Reason (the Code when there is no Reason).
func (e *Error) Error() string {
	if e.Reason == "" {
		return e.Code
	}
	return e.Reason
}

func newError(code, reason string) *Error { return &Error{Code: code, Reason: reason} }

// Limits bound what one record may contain. A zero or negative field takes
// its value from DefaultLimits (MaxUploadBytes: 64 × MaxRecordBytes).
type Limits struct {
	// MaxRecordBytes bounds one record, and one element of a CleverTap upload.
	MaxRecordBytes int
	// MaxProperties bounds the top-level keys of properties.
	MaxProperties int
	// MaxDepth bounds the nesting of properties; the properties object itself
	// is level 1, so {"a":{"b":[1]}} has depth 3.
	MaxDepth int
	// MaxIdentityBytes bounds the identity, and an id given by the sender.
	MaxIdentityBytes int
	// MaxFuture is how far ahead of the clock a ts may be.
	MaxFuture time.Duration
	// MaxUploadBytes bounds a whole CleverTap upload object.
	MaxUploadBytes int
	// MaxUploadRecords bounds the elements of a CleverTap upload's "d".
	MaxUploadRecords int
}

// DefaultLimits returns the contract's limits: 64 KiB records, 256
// properties, depth 5, 256-byte identities, 24 h into the future, and
// CleverTap uploads of at most 1000 elements and 4 MiB.
func DefaultLimits() Limits {
	return Limits{
		MaxRecordBytes:   64 << 10,
		MaxProperties:    256,
		MaxDepth:         5,
		MaxIdentityBytes: 256,
		MaxFuture:        24 * time.Hour,
		MaxUploadBytes:   64 * (64 << 10),
		MaxUploadRecords: 1000,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxRecordBytes <= 0 {
		l.MaxRecordBytes = d.MaxRecordBytes
	}
	if l.MaxProperties <= 0 {
		l.MaxProperties = d.MaxProperties
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxIdentityBytes <= 0 {
		l.MaxIdentityBytes = d.MaxIdentityBytes
	}
	if l.MaxFuture <= 0 {
		l.MaxFuture = d.MaxFuture
	}
	if l.MaxUploadBytes <= 0 {
		l.MaxUploadBytes = 64 * l.MaxRecordBytes
	}
	if l.MaxUploadBytes < l.MaxRecordBytes {
		l.MaxUploadBytes = l.MaxRecordBytes
	}
	if l.MaxUploadRecords <= 0 {
		l.MaxUploadRecords = d.MaxUploadRecords
	}
	return l
}

// Normalizer turns raw records into events. It holds no mutable state and is
// safe for concurrent use (if its clock is).
type Normalizer struct {
	l   Limits
	now func() time.Time
}

// New returns a normaliser with limits l (zero fields take their defaults).
// now is the clock, read once per Normalize call: it gives ingested_ms, the
// ts of records without one, and the reference for the future check. A nil
// now means time.Now.
func New(l Limits, now func() time.Time) *Normalizer {
	if now == nil {
		now = time.Now
	}
	return &Normalizer{l: l.withDefaults(), now: now}
}

// Limits returns the limits in force, defaults filled in.
func (n *Normalizer) Limits() Limits { return n.l }

// Result is the outcome for one record, or one element of a CleverTap
// upload: exactly one of Event and Err is set.
type Result struct {
	// Index is the position in the upload's "d" array; 0 for other records
	// and for an upload rejected as a whole.
	Index int
	// Raw is the record's (or the element's) original bytes. It aliases the
	// input given to Normalize.
	Raw   []byte
	Event *hookstreamv1.Event
	Err   *Error
}

// Normalize turns one raw record into events. A native or Segment record
// gives one Result; a CleverTap upload {"d":[...]} gives one Result per
// element of d, in order, or a single Result when the upload as a whole is
// rejected. Anything else (not JSON, not an object) gives one Result with
// Err. Normalize never panics and never returns an empty slice.
func (n *Normalizer) Normalize(raw []byte) []Result {
	now := n.now().UnixMilli()
	rec := trimSpace(raw)
	if err := n.checkObject(rec, n.l.MaxUploadBytes, "record"); err != nil {
		return []Result{{Raw: raw, Err: err}}
	}
	var env envelope
	if err := env.parse(rec); err != nil {
		return []Result{{Raw: raw, Err: err}}
	}
	if isAbsent(env.typ) && env.d != nil {
		return n.upload(raw, &env, now)
	}
	ev, err := n.single(rec, &env, now)
	return []Result{{Raw: raw, Event: ev, Err: err}}
}

// checkObject rejects, cheaply and before parsing, what cannot be a record:
// nothing, something larger than max, or JSON that is not an object.
func (n *Normalizer) checkObject(rec []byte, max int, what string) *Error {
	if len(rec) == 0 {
		return newError(CodeNotJSON, what+": empty")
	}
	if len(rec) > max {
		return newError(CodeTooLarge, what+": "+strconv.Itoa(len(rec))+" bytes, more than "+strconv.Itoa(max))
	}
	if rec[0] != '{' {
		end, err := scanValue(rec, 0)
		switch {
		case err != nil:
			return newError(CodeNotJSON, what+": not JSON: "+err.Error())
		case end != len(rec):
			return newError(CodeNotJSON, what+": not JSON: unexpected data after the value at offset "+strconv.Itoa(end))
		}
		return newError(CodeNotObject, what+": must be a JSON object, got "+kindOf(rec))
	}
	return nil
}

// single normalises a native or Segment record.
func (n *Normalizer) single(rec []byte, env *envelope, now int64) (*hookstreamv1.Event, *Error) {
	if len(rec) > n.l.MaxRecordBytes {
		return nil, newError(CodeTooLarge, "record: "+strconv.Itoa(len(rec))+" bytes, more than "+strconv.Itoa(n.l.MaxRecordBytes))
	}
	if !utf8.Valid(rec) {
		return nil, newError(CodeInvalidUTF8, "record: not valid UTF-8")
	}
	if isAbsent(env.typ) {
		return nil, newError(CodeUnknownType, `type: missing (expected event, profile, track, identify, page or screen, or a CleverTap upload {"d":[...]})`)
	}
	typ, err := env.typeName()
	if err != nil {
		return nil, err
	}
	switch typ {
	case "event", "profile":
		return n.native(rec, env, typ, now)
	case "track", "identify", "page", "screen":
		return n.segment(rec, env, typ, now)
	case "alias", "group":
		return nil, newError(CodeUnknownType, "type: Segment "+strconv.Quote(typ)+" calls are not supported (only track, identify, page and screen)")
	}
	return nil, newError(CodeUnknownType, "type: unknown type "+quoteShort(typ)+" (expected event, profile, track, identify, page or screen)")
}

func (n *Normalizer) native(rec []byte, env *envelope, typ string, now int64) (*hookstreamv1.Event, *Error) {
	ev := &hookstreamv1.Event{SourceFormat: FormatNative, IngestedMs: now}
	var err *Error
	if ev.Identity, err = n.identity(env.identity, "identity", nil, ""); err != nil {
		return nil, err
	}
	if typ == "event" {
		ev.Kind = hookstreamv1.Event_KIND_EVENT
		if ev.Name, err = eventName(env.name, "name", env.evtName != nil); err != nil {
			return nil, err
		}
	} else {
		ev.Kind = hookstreamv1.Event_KIND_PROFILE
	}
	if ev.TsMs, err = n.timestamp(env.ts, "ts", now); err != nil {
		return nil, err
	}
	if ev.Id, err = n.id(env.id, "id", rec); err != nil {
		return nil, err
	}
	if ev.PropertiesJson, err = n.properties(env.properties, "properties"); err != nil {
		return nil, err
	}
	return ev, nil
}

func (n *Normalizer) segment(rec []byte, env *envelope, typ string, now int64) (*hookstreamv1.Event, *Error) {
	ev := &hookstreamv1.Event{SourceFormat: FormatSegment, IngestedMs: now}
	var err *Error
	if ev.Identity, err = n.identity(env.userID, "userId", env.anonymousID, "anonymousId"); err != nil {
		return nil, err
	}
	ts, tsField := env.timestamp, "timestamp"
	if isAbsent(ts) && !isAbsent(env.originalTimestamp) {
		ts, tsField = env.originalTimestamp, "originalTimestamp"
	}
	if ev.TsMs, err = n.timestamp(ts, tsField, now); err != nil {
		return nil, err
	}
	if ev.Id, err = n.id(env.messageID, "messageId", rec); err != nil {
		return nil, err
	}
	switch typ {
	case "track":
		ev.Kind = hookstreamv1.Event_KIND_EVENT
		if ev.Name, err = eventName(env.event, "event", false); err != nil {
			return nil, err
		}
		ev.PropertiesJson, err = n.properties(env.properties, "properties")
	case "page", "screen":
		ev.Kind = hookstreamv1.Event_KIND_EVENT
		ev.Name = "Page Viewed"
		if typ == "screen" {
			ev.Name = "Screen Viewed"
		}
		ev.PropertiesJson, err = n.pageProperties(env.properties, env.name)
	case "identify":
		ev.Kind = hookstreamv1.Event_KIND_PROFILE
		ev.PropertiesJson, err = n.identifyProperties(env.traits, env.context)
	}
	if err != nil {
		return nil, err
	}
	return ev, nil
}

// upload expands a CleverTap upload object into one Result per element.
func (n *Normalizer) upload(raw []byte, env *envelope, now int64) []Result {
	whole := func(err *Error) []Result { return []Result{{Raw: raw, Err: err}} }
	if env.d[0] != '[' {
		return whole(newError(CodeBadUpload, "d: must be an array of records, got "+kindOf(env.d)))
	}
	elems, _, serr := arrayElems(env.d)
	if serr != nil { // unreachable: env.parse validated d
		return whole(newError(CodeNotJSON, "d: not JSON: "+serr.Error()))
	}
	if len(elems) == 0 {
		return whole(newError(CodeBadUpload, "d: empty, no records"))
	}
	if len(elems) > n.l.MaxUploadRecords {
		return whole(newError(CodeTooManyRecords, "d: "+strconv.Itoa(len(elems))+" records, more than "+strconv.Itoa(n.l.MaxUploadRecords)))
	}
	out := make([]Result, len(elems))
	for i, elem := range elems {
		ev, err := n.element(elem, now)
		out[i] = Result{Index: i, Raw: elem, Event: ev, Err: err}
	}
	return out
}

// element normalises one element of a CleverTap upload.
func (n *Normalizer) element(elem []byte, now int64) (*hookstreamv1.Event, *Error) {
	if err := n.checkObject(elem, n.l.MaxRecordBytes, "record"); err != nil {
		return nil, err
	}
	if !utf8.Valid(elem) {
		return nil, newError(CodeInvalidUTF8, "record: not valid UTF-8")
	}
	var env envelope
	if err := env.parse(elem); err != nil {
		return nil, err
	}
	if isAbsent(env.typ) {
		return nil, newError(CodeUnknownType, "type: missing (expected event or profile)")
	}
	typ, err := env.typeName()
	if err != nil {
		return nil, err
	}
	ev := &hookstreamv1.Event{SourceFormat: FormatCleverTap, IngestedMs: now}
	switch typ {
	case "event":
		ev.Kind = hookstreamv1.Event_KIND_EVENT
	case "profile":
		ev.Kind = hookstreamv1.Event_KIND_PROFILE
	default:
		return nil, newError(CodeUnknownType, "type: "+quoteShort(typ)+" is not a CleverTap record type (expected event or profile)")
	}
	if ev.Identity, err = n.identity(env.identity, "identity", env.objectID, "objectId"); err != nil {
		return nil, err
	}
	if ev.Kind == hookstreamv1.Event_KIND_EVENT {
		if ev.Name, err = eventName(env.evtName, "evtName", false); err != nil {
			return nil, err
		}
	}
	if ev.TsMs, err = n.timestamp(env.ts, "ts", now); err != nil {
		return nil, err
	}
	ev.Id = derivedID(elem)
	if ev.Kind == hookstreamv1.Event_KIND_EVENT {
		ev.PropertiesJson, err = n.properties(env.evtData, "evtData")
	} else {
		ev.PropertiesJson, err = n.properties(env.profileData, "profileData")
	}
	if err != nil {
		return nil, err
	}
	return ev, nil
}

// envelope holds the raw values of the top-level keys any format uses; nil
// means absent. Values alias the record.
type envelope struct {
	typ, d                                            []byte
	identity, objectID, userID, anonymousID           []byte
	name, event, evtName                              []byte
	ts, timestamp, originalTimestamp                  []byte
	id, messageID                                     []byte
	properties, evtData, profileData, traits, context []byte
}

// parse validates rec as one JSON object and records its known keys.
func (e *envelope) parse(rec []byte) *Error {
	it := objectIter{b: rec}
	for {
		key, val, ok := it.next()
		if !ok {
			break
		}
		var slot *[]byte
		if inner := key[1 : len(key)-1]; bytes.IndexByte(inner, '\\') < 0 {
			slot = e.slot(string(inner))
		} else {
			slot = e.slot(decodeString(key))
		}
		if slot == nil {
			continue
		}
		if *slot != nil {
			return newError(CodeDuplicateKey, decodeString(key)+": given more than once")
		}
		*slot = val
	}
	if it.err != nil {
		return newError(CodeNotJSON, "record: not JSON: "+it.err.Error())
	}
	if end := skipSpace(rec, it.end); end != len(rec) {
		return newError(CodeNotJSON, "record: not JSON: unexpected data after the object at offset "+strconv.Itoa(end))
	}
	return nil
}

func (e *envelope) slot(key string) *[]byte {
	switch key {
	case "type":
		return &e.typ
	case "d":
		return &e.d
	case "identity":
		return &e.identity
	case "objectId":
		return &e.objectID
	case "userId":
		return &e.userID
	case "anonymousId":
		return &e.anonymousID
	case "name":
		return &e.name
	case "event":
		return &e.event
	case "evtName":
		return &e.evtName
	case "ts":
		return &e.ts
	case "timestamp":
		return &e.timestamp
	case "originalTimestamp":
		return &e.originalTimestamp
	case "id":
		return &e.id
	case "messageId":
		return &e.messageID
	case "properties":
		return &e.properties
	case "evtData":
		return &e.evtData
	case "profileData":
		return &e.profileData
	case "traits":
		return &e.traits
	case "context":
		return &e.context
	}
	return nil
}

func (e *envelope) typeName() (string, *Error) {
	if e.typ[0] != '"' {
		return "", newError(CodeUnknownType, "type: must be a string, got "+kindOf(e.typ))
	}
	return decodeString(e.typ), nil
}

// isAbsent reports whether a value is missing or JSON null.
func isAbsent(v []byte) bool { return v == nil || string(v) == "null" }

// scalarString returns a JSON string's content, or a JSON integer's text.
func scalarString(v []byte) (string, bool) {
	switch {
	case v[0] == '"':
		return decodeString(v), true
	case v[0] == '-' || ('0' <= v[0] && v[0] <= '9'):
		for _, c := range v[1:] {
			if c < '0' || c > '9' {
				return "", false
			}
		}
		return string(v), true
	}
	return "", false
}

// identity picks the primary identity field, else the fallback; a null or
// empty primary counts as not given.
func (n *Normalizer) identity(primary []byte, pname string, fallback []byte, fname string) (string, *Error) {
	v, field := primary, pname
	if (isAbsent(v) || string(v) == `""`) && fallback != nil {
		v, field = fallback, fname
	}
	if isAbsent(v) {
		if fname == "" {
			return "", newError(CodeNoIdentity, pname+": missing")
		}
		return "", newError(CodeNoIdentity, pname+": missing, and no "+fname)
	}
	s, ok := scalarString(v)
	if !ok {
		return "", newError(CodeBadIdentity, field+": must be a string, got "+kindOf(v))
	}
	if s == "" {
		return "", newError(CodeNoIdentity, field+": empty")
	}
	if len(s) > n.l.MaxIdentityBytes {
		return "", newError(CodeIdentityTooLong, field+": longer than "+strconv.Itoa(n.l.MaxIdentityBytes)+" bytes")
	}
	return s, nil
}

// eventName returns a required event name. ctHint says the record carries a
// CleverTap evtName outside an upload, which deserves a hint.
func eventName(v []byte, field string, ctHint bool) (string, *Error) {
	if isAbsent(v) {
		if ctHint {
			return "", newError(CodeMissingName, field+`: missing (a CleverTap record with evtName must be sent inside an upload object {"d":[...]})`)
		}
		return "", newError(CodeMissingName, field+": missing")
	}
	if v[0] != '"' {
		return "", newError(CodeBadName, field+": must be a string, got "+kindOf(v))
	}
	s := decodeString(v)
	if s == "" {
		return "", newError(CodeMissingName, field+": empty")
	}
	return s, nil
}

// id returns the sender's id, or one derived from content when none is given.
func (n *Normalizer) id(v []byte, field string, content []byte) (string, *Error) {
	if isAbsent(v) || string(v) == `""` {
		return derivedID(content), nil
	}
	s, ok := scalarString(v)
	if !ok {
		return "", newError(CodeBadID, field+": must be a string, got "+kindOf(v))
	}
	if len(s) > n.l.MaxIdentityBytes {
		return "", newError(CodeBadID, field+": longer than "+strconv.Itoa(n.l.MaxIdentityBytes)+" bytes")
	}
	return s, nil
}

// derivedID is "h-" and the hex of the first 128 bits of SHA-256(content).
func derivedID(content []byte) string {
	sum := sha256.Sum256(content)
	var buf [2 + 32]byte
	buf[0], buf[1] = 'h', '-'
	hex.Encode(buf[2:], sum[:16])
	return string(buf[:])
}

// quoteShort quotes s for an error reason, cut when long.
func quoteShort(s string) string { return strconv.Quote(short([]byte(s))) }
