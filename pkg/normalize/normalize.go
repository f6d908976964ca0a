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
//
// Normalize returns events that own their memory. AppendFlat is the same
// normaliser for hot paths (the ingest consumer): it returns the events'
// fields as slices of the input where it can (identities, names, ids and
// properties that need no decoding or compaction) or of a reusable Scratch,
// allocates nothing for a valid record, and Flat.AppendProto encodes an
// event straight into the caller's buffer. Records are read in one pass that
// validates them and measures their properties; a field is decoded only when
// it has escapes, and properties are copied only when they hold whitespace or
// must be rebuilt (Segment identify, page and screen calls).
package normalize

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

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
// now is the clock, read once per Normalize call (AppendFlat is given the
// time by its caller, see Now): it gives ingested_ms, the ts of records
// without one, and the reference for the future check. A nil now means
// time.Now.
func New(l Limits, now func() time.Time) *Normalizer {
	if now == nil {
		now = time.Now
	}
	return &Normalizer{l: l.withDefaults(), now: now}
}

// Limits returns the limits in force, defaults filled in.
func (n *Normalizer) Limits() Limits { return n.l }

// Now reads the normaliser's clock, for AppendFlat.
func (n *Normalizer) Now() time.Time { return n.now() }

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
// Err. Normalize never panics and never returns an empty slice. The events
// own their memory; only Raw aliases raw.
func (n *Normalizer) Normalize(raw []byte) []Result {
	var s Scratch
	var one [1]Flat
	flats := n.AppendFlat(one[:0], raw, n.now(), &s)
	out := make([]Result, len(flats))
	for k := range flats {
		f := &flats[k]
		out[k] = Result{Index: f.Index, Raw: f.Raw, Err: f.Err}
		if f.Err == nil {
			out[k].Event = f.Event()
		}
	}
	return out
}

// Flat is an outcome of AppendFlat: Result with the event's fields held
// directly rather than in a hookstreamv1.Event, so that a caller that only
// encodes the event allocates nothing per record. Exactly one of Err and
// Identity is set.
//
// The byte slices alias the raw record or the Scratch given to AppendFlat
// (or a shared constant): they are valid until the Scratch is reset or the
// raw record is reused, and must not be modified.
type Flat struct {
	// Index and Raw are as in Result.
	Index int
	Raw   []byte
	Err   *Error
	// The fields of the Event, as in hookstreamv1.Event: Kind, ID,
	// Identity, Name (valid UTF-8), TsMs and IngestedMs (Unix
	// milliseconds), Properties (properties_json: a compact JSON object) and
	// Format (source_format).
	Kind               hookstreamv1.Event_Kind
	ID, Identity, Name []byte
	TsMs, IngestedMs   int64
	Properties         []byte
	Format             string
}

// Event returns a new hookstreamv1.Event with f's fields. Its strings and
// properties share one allocation, independent of f's input and Scratch.
func (f *Flat) Event() *hookstreamv1.Event {
	np := len(f.Properties)
	b := make([]byte, 0, np+len(f.ID)+len(f.Identity)+len(f.Name))
	b = append(b, f.Properties...)
	b = append(b, f.ID...)
	b = append(b, f.Identity...)
	b = append(b, f.Name...)
	// The strings are views of b past the properties: nothing writes to
	// those bytes after this point (the properties slice is capped before
	// them), so they are as immutable as strings must be.
	str := func(from, n int) string {
		if n == 0 {
			return ""
		}
		return unsafe.String(&b[from], n)
	}
	at := np
	id := str(at, len(f.ID))
	at += len(f.ID)
	identity := str(at, len(f.Identity))
	at += len(f.Identity)
	return &hookstreamv1.Event{
		Kind:           f.Kind,
		Id:             id,
		Identity:       identity,
		Name:           str(at, len(f.Name)),
		TsMs:           f.TsMs,
		IngestedMs:     f.IngestedMs,
		PropertiesJson: b[:np:np],
		SourceFormat:   f.Format,
	}
}

// Scratch is reusable memory for AppendFlat: the bytes of Flat fields that
// cannot alias the raw record (decoded strings, derived ids, rebuilt
// properties) are written here. The zero value is ready to use. A Scratch is
// not safe for concurrent use.
type Scratch struct {
	buf   []byte
	elems [][]byte
}

// Reset makes s's memory reusable: Flats that point into it must no longer
// be used.
func (s *Scratch) Reset() { s.buf = s.buf[:0] }

// AppendFlat is Normalize without allocations for valid records: it appends
// the outcomes of raw to dst and returns the extended slice. now stands for
// the clock (a caller normalising a batch reads Now once for all its
// records); values that cannot alias raw go to s.
func (n *Normalizer) AppendFlat(dst []Flat, raw []byte, nowTime time.Time, s *Scratch) []Flat {
	now := nowTime.UnixMilli()
	rec := trimSpace(raw)
	if err := n.checkObject(rec, n.l.MaxUploadBytes, "record"); err != nil {
		return append(dst, Flat{Raw: raw, Err: err})
	}
	var env envelope
	if err := env.parse(rec, s); err != nil {
		return append(dst, Flat{Raw: raw, Err: err})
	}
	if isAbsent(env.typ) && env.d != nil {
		return n.upload(dst, raw, &env, now, s)
	}
	dst = append(dst, Flat{Raw: raw})
	f := &dst[len(dst)-1]
	if err := n.single(f, rec, &env, now, s); err != nil {
		*f = Flat{Raw: raw, Err: err}
	}
	return dst
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

// single normalises a native or Segment record into f.
func (n *Normalizer) single(f *Flat, rec []byte, env *envelope, now int64, s *Scratch) *Error {
	if len(rec) > n.l.MaxRecordBytes {
		return newError(CodeTooLarge, "record: "+strconv.Itoa(len(rec))+" bytes, more than "+strconv.Itoa(n.l.MaxRecordBytes))
	}
	if !utf8.Valid(rec) {
		return newError(CodeInvalidUTF8, "record: not valid UTF-8")
	}
	if isAbsent(env.typ) {
		return newError(CodeUnknownType, `type: missing (expected event, profile, track, identify, page or screen, or a CleverTap upload {"d":[...]})`)
	}
	typ, err := env.typeName()
	if err != nil {
		return err
	}
	switch string(typ) {
	case "event":
		return n.native(f, rec, env, hookstreamv1.Event_KIND_EVENT, now, s)
	case "profile":
		return n.native(f, rec, env, hookstreamv1.Event_KIND_PROFILE, now, s)
	case "track", "identify", "page", "screen":
		return n.segment(f, rec, env, string(typ), now, s)
	case "alias", "group":
		return newError(CodeUnknownType, "type: Segment "+strconv.Quote(string(typ))+" calls are not supported (only track, identify, page and screen)")
	}
	return newError(CodeUnknownType, "type: unknown type "+quoteShort(typ)+" (expected event, profile, track, identify, page or screen)")
}

func (n *Normalizer) native(f *Flat, rec []byte, env *envelope, kind hookstreamv1.Event_Kind, now int64, s *Scratch) *Error {
	f.Format, f.IngestedMs, f.Kind = FormatNative, now, kind
	var err *Error
	if f.Identity, err = n.identity(env.identity, "identity", nil, "", s); err != nil {
		return err
	}
	if kind == hookstreamv1.Event_KIND_EVENT {
		if f.Name, err = eventName(env.name, "name", env.evtName != nil, s); err != nil {
			return err
		}
	}
	if f.TsMs, err = n.timestamp(env.ts, "ts", now); err != nil {
		return err
	}
	if f.ID, err = n.id(env.id, "id", rec, s); err != nil {
		return err
	}
	f.Properties, err = n.properties(env.properties, &env.stats[statsProperties], "properties", s)
	return err
}

func (n *Normalizer) segment(f *Flat, rec []byte, env *envelope, typ string, now int64, s *Scratch) *Error {
	f.Format, f.IngestedMs = FormatSegment, now
	var err *Error
	if f.Identity, err = n.identity(env.userID, "userId", env.anonymousID, "anonymousId", s); err != nil {
		return err
	}
	ts, tsField := env.timestamp, "timestamp"
	if isAbsent(ts) && !isAbsent(env.originalTimestamp) {
		ts, tsField = env.originalTimestamp, "originalTimestamp"
	}
	if f.TsMs, err = n.timestamp(ts, tsField, now); err != nil {
		return err
	}
	if f.ID, err = n.id(env.messageID, "messageId", rec, s); err != nil {
		return err
	}
	switch typ {
	case "track":
		f.Kind = hookstreamv1.Event_KIND_EVENT
		if f.Name, err = eventName(env.event, "event", false, s); err != nil {
			return err
		}
		f.Properties, err = n.properties(env.properties, &env.stats[statsProperties], "properties", s)
	case "page", "screen":
		f.Kind = hookstreamv1.Event_KIND_EVENT
		f.Name = nameScreenViewed
		if typ == "page" {
			f.Name = namePageViewed
		}
		f.Properties, err = n.pageProperties(env.properties, &env.stats[statsProperties], env.name, s)
	case "identify":
		f.Kind = hookstreamv1.Event_KIND_PROFILE
		f.Properties, err = n.identifyProperties(env.traits, &env.stats[statsTraits], env.context, s)
	}
	return err
}

// The event names of Segment page and screen calls, and the properties of a
// record without any. Capped, so that no append can write to them.
var (
	namePageViewed   = []byte("Page Viewed")
	nameScreenViewed = []byte("Screen Viewed")
	emptyObject      = []byte("{}")
)

// upload expands a CleverTap upload object into one Flat per element.
func (n *Normalizer) upload(dst []Flat, raw []byte, env *envelope, now int64, s *Scratch) []Flat {
	whole := func(err *Error) []Flat { return append(dst, Flat{Raw: raw, Err: err}) }
	if env.d[0] != '[' {
		return whole(newError(CodeBadUpload, "d: must be an array of records, got "+kindOf(env.d)))
	}
	elems := s.elems
	if !env.dElems {
		var serr *syntaxError
		if elems, _, serr = appendArrayElems(s.elems[:0], env.d); serr != nil { // unreachable: env.parse validated d
			return whole(newError(CodeNotJSON, "d: not JSON: "+serr.Error()))
		}
		s.elems = elems
	}
	if len(elems) == 0 {
		return whole(newError(CodeBadUpload, "d: empty, no records"))
	}
	if len(elems) > n.l.MaxUploadRecords {
		return whole(newError(CodeTooManyRecords, "d: "+strconv.Itoa(len(elems))+" records, more than "+strconv.Itoa(n.l.MaxUploadRecords)))
	}
	for k, elem := range elems {
		dst = append(dst, Flat{Index: k, Raw: elem})
		f := &dst[len(dst)-1]
		if err := n.element(f, elem, now, s); err != nil {
			*f = Flat{Index: k, Raw: elem, Err: err}
		}
	}
	return dst
}

// element normalises one element of a CleverTap upload into f.
func (n *Normalizer) element(f *Flat, elem []byte, now int64, s *Scratch) *Error {
	if err := n.checkObject(elem, n.l.MaxRecordBytes, "record"); err != nil {
		return err
	}
	if !utf8.Valid(elem) {
		return newError(CodeInvalidUTF8, "record: not valid UTF-8")
	}
	var env envelope
	if err := env.parse(elem, nil); err != nil {
		return err
	}
	if isAbsent(env.typ) {
		return newError(CodeUnknownType, "type: missing (expected event or profile)")
	}
	typ, err := env.typeName()
	if err != nil {
		return err
	}
	f.Format, f.IngestedMs = FormatCleverTap, now
	switch string(typ) {
	case "event":
		f.Kind = hookstreamv1.Event_KIND_EVENT
	case "profile":
		f.Kind = hookstreamv1.Event_KIND_PROFILE
	default:
		return newError(CodeUnknownType, "type: "+quoteShort(typ)+" is not a CleverTap record type (expected event or profile)")
	}
	if f.Identity, err = n.identity(env.identity, "identity", env.objectID, "objectId", s); err != nil {
		return err
	}
	if f.Kind == hookstreamv1.Event_KIND_EVENT {
		if f.Name, err = eventName(env.evtName, "evtName", false, s); err != nil {
			return err
		}
	}
	if f.TsMs, err = n.timestamp(env.ts, "ts", now); err != nil {
		return err
	}
	f.ID = derivedIDTo(elem, s)
	if f.Kind == hookstreamv1.Event_KIND_EVENT {
		f.Properties, err = n.properties(env.evtData, &env.stats[statsEvtData], "evtData", s)
	} else {
		f.Properties, err = n.properties(env.profileData, &env.stats[statsProfileData], "profileData", s)
	}
	return err
}

// envelope holds the raw values of the top-level keys any format uses; nil
// means absent. Values alias the record. stats are those of the values that
// become properties.
type envelope struct {
	typ, d                                            []byte
	identity, objectID, userID, anonymousID           []byte
	name, event, evtName                              []byte
	ts, timestamp, originalTimestamp                  []byte
	id, messageID                                     []byte
	properties, evtData, profileData, traits, context []byte
	stats                                             [4]stats
	// dElems says that the elements of d, an array, are in the Scratch's
	// elems (see parse).
	dElems bool
}

// Indexes of envelope.stats.
const (
	statsProperties = iota
	statsEvtData
	statsProfileData
	statsTraits
)

// parse validates rec, which starts with '{', as one JSON object and
// records its known keys. With a Scratch, the elements of an array under
// "d" are collected into its elems as the array is validated, for upload.
func (e *envelope) parse(rec []byte, s *Scratch) *Error {
	b := rec
	i := skipSpace(b, 1)
	end := 0
	if i < len(b) && b[i] == '}' {
		end = i + 1
	}
	for end == 0 {
		// A member: the error messages are scanValue's for the same input.
		if i >= len(b) || b[i] != '"' {
			return notJSON(errAt(i, "expected a string key, found "+found(b, i)))
		}
		kend := plainRun(b, i+1)
		escaped := false
		if kend >= len(b) || b[kend] != '"' {
			var err *syntaxError
			if kend, escaped, err = scanStringEsc(b, i); err != nil {
				return notJSON(err)
			}
		} else {
			kend++
		}
		key := b[i:kend]
		if i = skipSpace(b, kend); i >= len(b) || b[i] != ':' {
			return notJSON(errAt(i, "expected ':' after object key, found "+found(b, i)))
		}
		i = skipSpace(b, i+1)
		var slot *[]byte
		st := -1
		if !escaped {
			slot, st = e.slot(key[1 : len(key)-1])
		} else {
			slot, st = e.slot([]byte(decodeString(key)))
		}
		var (
			vend      int
			err       *syntaxError
			vst       stats
			collected bool
		)
		switch {
		case i < len(b) && b[i] == '"':
			vend, err = scanString(b, i) // what scanValue does, faster
		case i < len(b) && b[i] == '[' && slot == &e.d && s != nil && !escaped:
			s.elems, vend, err = scanArray(b, i, s.elems[:0])
			collected = true
		default:
			vend, err = scanValueStats(b, i, &vst)
		}
		if err != nil {
			return notJSON(err)
		}
		if slot != nil {
			if *slot != nil {
				return newError(CodeDuplicateKey, decodeString(key)+": given more than once")
			}
			*slot = b[i:vend:vend]
			if st >= 0 {
				e.stats[st] = vst
			}
			if slot == &e.d {
				e.dElems = collected
			}
		}
		switch i = skipSpace(b, vend); {
		case i < len(b) && b[i] == '}':
			end = i + 1
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		default:
			return notJSON(errAt(i, "expected ',' or '}' in object, found "+found(b, i)))
		}
	}
	if end = skipSpace(rec, end); end != len(rec) {
		return newError(CodeNotJSON, "record: not JSON: unexpected data after the object at offset "+strconv.Itoa(end))
	}
	return nil
}

func notJSON(err *syntaxError) *Error {
	return newError(CodeNotJSON, "record: not JSON: "+err.Error())
}

// slot returns where the value of key goes, with the index of its stats
// (-1: none kept), or nil for a key no format uses.
func (e *envelope) slot(key []byte) (*[]byte, int) {
	switch string(key) {
	case "type":
		return &e.typ, -1
	case "d":
		return &e.d, -1
	case "identity":
		return &e.identity, -1
	case "objectId":
		return &e.objectID, -1
	case "userId":
		return &e.userID, -1
	case "anonymousId":
		return &e.anonymousID, -1
	case "name":
		return &e.name, -1
	case "event":
		return &e.event, -1
	case "evtName":
		return &e.evtName, -1
	case "ts":
		return &e.ts, -1
	case "timestamp":
		return &e.timestamp, -1
	case "originalTimestamp":
		return &e.originalTimestamp, -1
	case "id":
		return &e.id, -1
	case "messageId":
		return &e.messageID, -1
	case "properties":
		return &e.properties, statsProperties
	case "evtData":
		return &e.evtData, statsEvtData
	case "profileData":
		return &e.profileData, statsProfileData
	case "traits":
		return &e.traits, statsTraits
	case "context":
		return &e.context, -1
	}
	return nil, -1
}

// typeName returns the decoded "type".
func (e *envelope) typeName() ([]byte, *Error) {
	if e.typ[0] != '"' {
		return nil, newError(CodeUnknownType, "type: must be a string, got "+kindOf(e.typ))
	}
	return stringContent(e.typ, nil), nil
}

// isAbsent reports whether a value is missing or JSON null.
func isAbsent(v []byte) bool { return v == nil || string(v) == "null" }

// stringContent returns the content of the valid JSON string token v: a
// capped slice of v when it has no escapes, else its decoding, written to s
// (or newly allocated when s is nil).
func stringContent(v []byte, s *Scratch) []byte {
	inner := v[1 : len(v)-1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return inner
	}
	if s == nil {
		return []byte(decodeString(v))
	}
	start := len(s.buf)
	s.buf = append(s.buf, decodeString(v)...)
	return s.buf[start:len(s.buf):len(s.buf)]
}

// scalarString returns a JSON string's content, or a JSON integer's text.
func scalarString(v []byte, s *Scratch) ([]byte, bool) {
	switch {
	case v[0] == '"':
		return stringContent(v, s), true
	case v[0] == '-' || ('0' <= v[0] && v[0] <= '9'):
		for _, c := range v[1:] {
			if c < '0' || c > '9' {
				return nil, false
			}
		}
		return v[:len(v):len(v)], true
	}
	return nil, false
}

// identity picks the primary identity field, else the fallback; a null or
// empty primary counts as not given.
func (n *Normalizer) identity(primary []byte, pname string, fallback []byte, fname string, s *Scratch) ([]byte, *Error) {
	v, field := primary, pname
	if (isAbsent(v) || string(v) == `""`) && fallback != nil {
		v, field = fallback, fname
	}
	if isAbsent(v) {
		if fname == "" {
			return nil, newError(CodeNoIdentity, pname+": missing")
		}
		return nil, newError(CodeNoIdentity, pname+": missing, and no "+fname)
	}
	id, ok := scalarString(v, s)
	if !ok {
		return nil, newError(CodeBadIdentity, field+": must be a string, got "+kindOf(v))
	}
	if len(id) == 0 {
		return nil, newError(CodeNoIdentity, field+": empty")
	}
	if len(id) > n.l.MaxIdentityBytes {
		return nil, newError(CodeIdentityTooLong, field+": longer than "+strconv.Itoa(n.l.MaxIdentityBytes)+" bytes")
	}
	return id, nil
}

// eventName returns a required event name. ctHint says the record carries a
// CleverTap evtName outside an upload, which deserves a hint.
func eventName(v []byte, field string, ctHint bool, s *Scratch) ([]byte, *Error) {
	if isAbsent(v) {
		if ctHint {
			return nil, newError(CodeMissingName, field+`: missing (a CleverTap record with evtName must be sent inside an upload object {"d":[...]})`)
		}
		return nil, newError(CodeMissingName, field+": missing")
	}
	if v[0] != '"' {
		return nil, newError(CodeBadName, field+": must be a string, got "+kindOf(v))
	}
	name := stringContent(v, s)
	if len(name) == 0 {
		return nil, newError(CodeMissingName, field+": empty")
	}
	return name, nil
}

// id returns the sender's id, or one derived from content when none is given.
func (n *Normalizer) id(v []byte, field string, content []byte, s *Scratch) ([]byte, *Error) {
	if isAbsent(v) || string(v) == `""` {
		return derivedIDTo(content, s), nil
	}
	id, ok := scalarString(v, s)
	if !ok {
		return nil, newError(CodeBadID, field+": must be a string, got "+kindOf(v))
	}
	if len(id) > n.l.MaxIdentityBytes {
		return nil, newError(CodeBadID, field+": longer than "+strconv.Itoa(n.l.MaxIdentityBytes)+" bytes")
	}
	return id, nil
}

// derivedID is "h-" and the hex of the first 128 bits of SHA-256(content).
func derivedID(content []byte) string {
	var s Scratch
	return string(derivedIDTo(content, &s))
}

// derivedIDTo is derivedID written to s.
func derivedIDTo(content []byte, s *Scratch) []byte {
	sum := sha256.Sum256(content)
	start := len(s.buf)
	s.buf = append(s.buf, "h-"...)
	s.buf = hex.AppendEncode(s.buf, sum[:16])
	return s.buf[start:len(s.buf):len(s.buf)]
}

// quoteShort quotes s for an error reason, cut when long.
func quoteShort(s []byte) string { return strconv.Quote(short(s)) }
