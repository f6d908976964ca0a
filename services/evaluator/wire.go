package evaluator

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	hookstreamv1 "github.com/hookstream/hookstream/proto/hookstream/v1"
)

// The evaluator's stored state (a hookstreamv1.UserState) and its outputs
// (TimerCommand, Trigger) are encoded, and the state decoded, here by hand
// with protowire rather than by the generated code: the generated code's
// reflection and its allocation per nested message were a large share of the
// evaluator's time. The wire format is the one the .proto files describe,
// field for field, so that either side reads what the other wrote
// (wire_test.go checks this against the generated code); state fields this
// version does not know are kept and written back.
//
// Two liberties that proto decoders accept: an entry's name (EventStats.name,
// CampaignMemory.campaign) is written first, so that reading a state finds
// names without scanning entries (states written by earlier versions, with
// names last, read as well), and map entries are written in key order.

var errState = errors.New("malformed state")

// wireField is one field of an encoded message.
type wireField struct {
	num    protowire.Number
	typ    protowire.Type
	varint uint64 // VarintType
	bytes  []byte // BytesType
	raw    []byte // the whole field, tag included
}

// wireFields iterates over the fields of an encoded message.
type wireFields struct {
	b   []byte
	f   wireField
	err error
}

func (it *wireFields) next() bool {
	if len(it.b) == 0 || it.err != nil {
		return false
	}
	b := it.b
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		it.err = errState
		return false
	}
	f := wireField{num: num, typ: typ}
	var m int
	switch typ {
	case protowire.VarintType:
		f.varint, m = protowire.ConsumeVarint(b[n:])
	case protowire.BytesType:
		f.bytes, m = protowire.ConsumeBytes(b[n:])
	default:
		m = protowire.ConsumeFieldValue(num, typ, b[n:])
	}
	if m < 0 {
		it.err = errState
		return false
	}
	f.raw = b[:n+m]
	it.b = b[n+m:]
	it.f = f
	return true
}

// span is where a field's bytes are in an encoded message.
type span struct{ at, n uint32 }

func (s span) of(b []byte) []byte { return b[s.at : s.at+s.n] }

// bytesField returns where the bytes or string field num of an encoded
// message is (empty when absent), without decoding the rest.
func bytesField(b []byte, num protowire.Number) (span, error) {
	// This version writes names first; earlier ones wrote them last. Names
	// are written once, so the first one is the one.
	it := wireFields{b: b}
	for it.next() {
		if it.f.num == num && it.f.typ == protowire.BytesType {
			return span{uint32(len(b) - len(it.b) - len(it.f.bytes)), uint32(len(it.f.bytes))}, nil
		}
	}
	return span{}, it.err
}

// Sizes of a field with its tag; every field number here is below 16, so
// its tag is one byte.
func sizeVarintField(v uint64) int { return 1 + protowire.SizeVarint(v) }
func sizeBytesField(n int) int     { return 1 + protowire.SizeBytes(n) }

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, num protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

// UserState.events: EventStats

// eventStats is a decoded hookstreamv1.EventStats.
type eventStats struct {
	name            string
	firstMs, lastMs int64
	// days are sparse daily counts (UTC days since the epoch), oldest first.
	days []dayCount
	// recent occurrences, oldest first.
	recent  []occurrence
	unknown []byte
	// encodedSize is the size computed for encoding (see user.encode).
	encodedSize int
}

type dayCount struct {
	day, count int32
	unknown    []byte
}

type occurrence struct {
	tsMs    int64
	id      []byte
	props   lazyProps
	unknown []byte
}

// decodeEventStats decodes an encoded EventStats whose name is known to be
// name; bytes fields alias b.
func decodeEventStats(b []byte, name string) (*eventStats, error) {
	s := &eventStats{name: name}
	it := wireFields{b: b}
	for it.next() {
		f := &it.f
		switch {
		case f.num == 1 && f.typ == protowire.VarintType:
			s.firstMs = int64(f.varint)
		case f.num == 2 && f.typ == protowire.VarintType:
			s.lastMs = int64(f.varint)
		case f.num == 3 && f.typ == protowire.BytesType:
			var d dayCount
			in := wireFields{b: f.bytes}
			for in.next() {
				switch {
				case in.f.num == 1 && in.f.typ == protowire.VarintType:
					d.day = int32(in.f.varint)
				case in.f.num == 2 && in.f.typ == protowire.VarintType:
					d.count = int32(in.f.varint)
				default:
					d.unknown = append(d.unknown, in.f.raw...)
				}
			}
			if in.err != nil {
				return nil, in.err
			}
			s.days = append(s.days, d)
		case f.num == 4 && f.typ == protowire.BytesType:
			var o occurrence
			in := wireFields{b: f.bytes}
			for in.next() {
				switch {
				case in.f.num == 1 && in.f.typ == protowire.VarintType:
					o.tsMs = int64(in.f.varint)
				case in.f.num == 2 && in.f.typ == protowire.BytesType:
					o.id = in.f.bytes
				case in.f.num == 3 && in.f.typ == protowire.BytesType:
					o.props = lazyProps{raw: in.f.bytes}
				default:
					o.unknown = append(o.unknown, in.f.raw...)
				}
			}
			if in.err != nil {
				return nil, in.err
			}
			s.recent = append(s.recent, o)
		case f.num == 5 && f.typ == protowire.BytesType:
			// the name
		default:
			s.unknown = append(s.unknown, f.raw...)
		}
	}
	return s, it.err
}

// size is the encoded size of the stats.
func (s *eventStats) size() int {
	n := len(s.unknown)
	if s.name != "" {
		n += sizeBytesField(len(s.name))
	}
	if s.firstMs != 0 {
		n += sizeVarintField(uint64(s.firstMs))
	}
	if s.lastMs != 0 {
		n += sizeVarintField(uint64(s.lastMs))
	}
	for i := range s.days {
		n += sizeBytesField(s.days[i].size())
	}
	for i := range s.recent {
		n += sizeBytesField(s.recent[i].size())
	}
	return n
}

// append encodes the stats.
func (s *eventStats) append(b []byte) []byte {
	if s.name != "" {
		b = appendStringField(b, 5, s.name)
	}
	if s.firstMs != 0 {
		b = appendVarintField(b, 1, uint64(s.firstMs))
	}
	if s.lastMs != 0 {
		b = appendVarintField(b, 2, uint64(s.lastMs))
	}
	for i := range s.days {
		d := &s.days[i]
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(d.size()))
		if d.day != 0 {
			b = appendVarintField(b, 1, uint64(int64(d.day)))
		}
		if d.count != 0 {
			b = appendVarintField(b, 2, uint64(int64(d.count)))
		}
		b = append(b, d.unknown...)
	}
	for i := range s.recent {
		o := &s.recent[i]
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(o.size()))
		if o.tsMs != 0 {
			b = appendVarintField(b, 1, uint64(o.tsMs))
		}
		if len(o.id) > 0 {
			b = appendBytesField(b, 2, o.id)
		}
		if len(o.props.raw) > 0 {
			b = appendBytesField(b, 3, o.props.raw)
		}
		b = append(b, o.unknown...)
	}
	return append(b, s.unknown...)
}

func (d *dayCount) size() int {
	n := len(d.unknown)
	if d.day != 0 {
		n += sizeVarintField(uint64(int64(d.day)))
	}
	if d.count != 0 {
		n += sizeVarintField(uint64(int64(d.count)))
	}
	return n
}

func (o *occurrence) size() int {
	n := len(o.unknown)
	if o.tsMs != 0 {
		n += sizeVarintField(uint64(o.tsMs))
	}
	if len(o.id) > 0 {
		n += sizeBytesField(len(o.id))
	}
	if len(o.props.raw) > 0 {
		n += sizeBytesField(len(o.props.raw))
	}
	return n
}

// UserState.campaigns: CampaignMemory

// memory is a decoded hookstreamv1.CampaignMemory: what one campaign's
// trigger remembers about one user. Its pending timers and exposure are the
// generated types, whose unknown fields go through their reflection's
// SetUnknown and GetUnknown.
type memory struct {
	campaign string
	// actionMs (actions): the time of the latest matching occurrence of each
	// listed action (0: not yet), by position.
	actionMs []int64
	// pending timers by key: the map of state.proto, as a slice in key
	// order, cheaper than a map for the one timer most memories hold.
	pending []pendingEntry
	// exposure is the latest exposure, for conversions.
	exposure *hookstreamv1.Exposure
	unknown  []byte
	// encodedSize is the size computed for encoding (see user.encode).
	encodedSize int
}

type pendingEntry struct {
	key   string
	timer *hookstreamv1.PendingTimer
}

// pendingTimer returns the pending timer of key, or nil.
func (m *memory) pendingTimer(key string) *hookstreamv1.PendingTimer {
	if i, ok := m.findPending(key); ok {
		return m.pending[i].timer
	}
	return nil
}

func (m *memory) setPending(key string, p *hookstreamv1.PendingTimer) {
	i, ok := m.findPending(key)
	if ok {
		m.pending[i].timer = p
		return
	}
	m.pending = slices.Insert(m.pending, i, pendingEntry{key, p})
}

func (m *memory) deletePending(key string) {
	if i, ok := m.findPending(key); ok {
		m.pending = slices.Delete(m.pending, i, i+1)
	}
}

func (m *memory) findPending(key string) (int, bool) {
	return slices.BinarySearchFunc(m.pending, key, func(e pendingEntry, k string) int { return strings.Compare(e.key, k) })
}

// empty reports whether m holds nothing worth storing.
func (m *memory) empty() bool {
	return len(m.pending) == 0 && m.exposure == nil && !slices.ContainsFunc(m.actionMs, func(v int64) bool { return v != 0 })
}

// decodeMemory decodes an encoded CampaignMemory whose campaign is known to
// be campaign; bytes fields alias b.
func decodeMemory(b []byte, campaign string) (*memory, error) {
	m := &memory{campaign: campaign}
	it := wireFields{b: b}
	for it.next() {
		f := &it.f
		switch {
		case f.num == 1 && f.typ == protowire.BytesType: // packed
			for v := f.bytes; len(v) > 0; {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return nil, errState
				}
				m.actionMs = append(m.actionMs, int64(x))
				v = v[n:]
			}
		case f.num == 1 && f.typ == protowire.VarintType: // unpacked
			m.actionMs = append(m.actionMs, int64(f.varint))
		case f.num == 2 && f.typ == protowire.BytesType:
			var key string
			var p *hookstreamv1.PendingTimer
			in := wireFields{b: f.bytes}
			for in.next() {
				switch {
				case in.f.num == 1 && in.f.typ == protowire.BytesType:
					key = string(in.f.bytes)
				case in.f.num == 2 && in.f.typ == protowire.BytesType:
					var err error
					if p, err = decodePending(in.f.bytes); err != nil {
						return nil, err
					}
				}
			}
			if in.err != nil {
				return nil, in.err
			}
			if p == nil {
				p = &hookstreamv1.PendingTimer{}
			}
			m.setPending(key, p) // the last one wins, as in a proto map
		case f.num == 3 && f.typ == protowire.BytesType:
			x, err := decodeExposure(f.bytes)
			if err != nil {
				return nil, err
			}
			m.exposure = x
		case f.num == 4 && f.typ == protowire.BytesType:
			// the campaign
		default:
			m.unknown = append(m.unknown, f.raw...)
		}
	}
	if it.err != nil {
		return nil, it.err
	}
	return m, nil
}

func decodePending(b []byte) (*hookstreamv1.PendingTimer, error) {
	p := &hookstreamv1.PendingTimer{}
	var unknown []byte
	it := wireFields{b: b}
	for it.next() {
		f := &it.f
		switch {
		case f.num == 1 && f.typ == protowire.VarintType:
			p.DueMs = int64(f.varint)
		case f.num == 2 && f.typ == protowire.BytesType:
			p.CauseId = string(f.bytes)
		case f.num == 3 && f.typ == protowire.VarintType:
			p.CauseTsMs = int64(f.varint)
		case f.num == 4 && f.typ == protowire.BytesType:
			p.CauseName = string(f.bytes)
		case f.num == 5 && f.typ == protowire.BytesType:
			p.CausePropertiesJson = f.bytes
		case f.num == 6 && f.typ == protowire.VarintType:
			p.CampaignGeneration = int64(f.varint)
		default:
			unknown = append(unknown, f.raw...)
		}
	}
	if unknown != nil {
		p.ProtoReflect().SetUnknown(unknown)
	}
	return p, it.err
}

func decodeExposure(b []byte) (*hookstreamv1.Exposure, error) {
	x := &hookstreamv1.Exposure{}
	var unknown []byte
	it := wireFields{b: b}
	for it.next() {
		f := &it.f
		switch {
		case f.num == 1 && f.typ == protowire.BytesType:
			x.TriggerId = string(f.bytes)
		case f.num == 2 && f.typ == protowire.VarintType:
			x.TsMs = int64(f.varint)
		case f.num == 3 && f.typ == protowire.VarintType:
			x.Control = protowire.DecodeBool(f.varint)
		default:
			unknown = append(unknown, f.raw...)
		}
	}
	if unknown != nil {
		x.ProtoReflect().SetUnknown(unknown)
	}
	return x, it.err
}

// memorySize is the encoded size of m.
func memorySize(m *memory) int {
	n := len(m.unknown)
	if m.campaign != "" {
		n += sizeBytesField(len(m.campaign))
	}
	if len(m.actionMs) > 0 {
		n += sizeBytesField(packedSize(m.actionMs))
	}
	for _, e := range m.pending {
		n += sizeBytesField(pendingEntrySize(e.key, e.timer))
	}
	if m.exposure != nil {
		n += sizeBytesField(exposureSize(m.exposure))
	}
	return n
}

// appendMemory encodes m.
func appendMemory(b []byte, m *memory) []byte {
	if m.campaign != "" {
		b = appendStringField(b, 4, m.campaign)
	}
	if len(m.actionMs) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(packedSize(m.actionMs)))
		for _, v := range m.actionMs {
			b = protowire.AppendVarint(b, uint64(v))
		}
	}
	for _, e := range m.pending {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(pendingEntrySize(e.key, e.timer)))
		if e.key != "" {
			b = appendStringField(b, 1, e.key)
		}
		if e.timer != nil {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(pendingSize(e.timer)))
			b = appendPending(b, e.timer)
		}
	}
	if x := m.exposure; x != nil {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(exposureSize(x)))
		if x.TriggerId != "" {
			b = appendStringField(b, 1, x.TriggerId)
		}
		if x.TsMs != 0 {
			b = appendVarintField(b, 2, uint64(x.TsMs))
		}
		if x.Control {
			b = appendVarintField(b, 3, 1)
		}
		b = append(b, x.ProtoReflect().GetUnknown()...)
	}
	return append(b, m.unknown...)
}

func packedSize(vs []int64) int {
	n := 0
	for _, v := range vs {
		n += protowire.SizeVarint(uint64(v))
	}
	return n
}

func pendingEntrySize(k string, p *hookstreamv1.PendingTimer) int {
	n := 0
	if k != "" {
		n += sizeBytesField(len(k))
	}
	if p != nil {
		n += sizeBytesField(pendingSize(p))
	}
	return n
}

func pendingSize(p *hookstreamv1.PendingTimer) int {
	n := len(p.ProtoReflect().GetUnknown())
	if p.DueMs != 0 {
		n += sizeVarintField(uint64(p.DueMs))
	}
	if p.CauseId != "" {
		n += sizeBytesField(len(p.CauseId))
	}
	if p.CauseTsMs != 0 {
		n += sizeVarintField(uint64(p.CauseTsMs))
	}
	if p.CauseName != "" {
		n += sizeBytesField(len(p.CauseName))
	}
	if len(p.CausePropertiesJson) > 0 {
		n += sizeBytesField(len(p.CausePropertiesJson))
	}
	if p.CampaignGeneration != 0 {
		n += sizeVarintField(uint64(p.CampaignGeneration))
	}
	return n
}

func appendPending(b []byte, p *hookstreamv1.PendingTimer) []byte {
	if p.DueMs != 0 {
		b = appendVarintField(b, 1, uint64(p.DueMs))
	}
	if p.CauseId != "" {
		b = appendStringField(b, 2, p.CauseId)
	}
	if p.CauseTsMs != 0 {
		b = appendVarintField(b, 3, uint64(p.CauseTsMs))
	}
	if p.CauseName != "" {
		b = appendStringField(b, 4, p.CauseName)
	}
	if len(p.CausePropertiesJson) > 0 {
		b = appendBytesField(b, 5, p.CausePropertiesJson)
	}
	if p.CampaignGeneration != 0 {
		b = appendVarintField(b, 6, uint64(p.CampaignGeneration))
	}
	return append(b, p.ProtoReflect().GetUnknown()...)
}

func exposureSize(x *hookstreamv1.Exposure) int {
	n := len(x.ProtoReflect().GetUnknown())
	if x.TriggerId != "" {
		n += sizeBytesField(len(x.TriggerId))
	}
	if x.TsMs != 0 {
		n += sizeVarintField(uint64(x.TsMs))
	}
	if x.Control {
		n += sizeVarintField(1)
	}
	return n
}

// Outputs: timer commands and triggers

// timerCommand encodes the hookstreamv1.TimerCommand that schedules
// evaluator timer id for the user: when due, the timer service produces an
// Event of KIND_TIMER_FIRED carrying an EvaluatorTimer to the events topic.
// scratch is reused for the innermost message and returned.
func timerCommand(scratch, id []byte, eventsTopic, identity, campaign, key string, dueMs, nowMs int64, traceContext map[string]string) (cmd, scratchOut []byte) {
	// EvaluatorTimer{campaign 1, key 2, due_ms 3}, the payload.
	payload := scratch[:0]
	if campaign != "" {
		payload = appendStringField(payload, 1, campaign)
	}
	if key != "" {
		payload = appendStringField(payload, 2, key)
	}
	if dueMs != 0 {
		payload = appendVarintField(payload, 3, uint64(dueMs))
	}
	// TimerFired{timer_id 1, due_ms 2, payload 4}.
	firedSize := 0
	if len(payload) > 0 {
		firedSize += sizeBytesField(len(payload))
	}
	if len(id) > 0 {
		firedSize += sizeBytesField(len(id))
	}
	if dueMs != 0 {
		firedSize += sizeVarintField(uint64(dueMs))
	}
	// Event{kind 1, id 2, identity 3, ts_ms 5, timer 9}; its id is
	// "<timer id>@<due>".
	var due [20]byte
	dueText := strconv.AppendInt(due[:0], dueMs, 10)
	evID := len(id) + 1 + len(dueText)
	eventSize := sizeVarintField(uint64(hookstreamv1.Event_KIND_TIMER_FIRED)) + sizeBytesField(evID) + sizeBytesField(firedSize)
	if identity != "" {
		eventSize += sizeBytesField(len(identity))
	}
	if dueMs != 0 {
		eventSize += sizeVarintField(uint64(dueMs))
	}
	// TimerCommand{id 1, due_ms 2, destination_topic 3, destination_key 4,
	// payload 5, owner 6, created_ms 7, trace_context 8}.
	const owner = "evaluator"
	size := sizeBytesField(eventSize) + sizeBytesField(len(owner))
	if len(id) > 0 {
		size += sizeBytesField(len(id))
	}
	if dueMs != 0 {
		size += sizeVarintField(uint64(dueMs))
	}
	if eventsTopic != "" {
		size += sizeBytesField(len(eventsTopic))
	}
	if identity != "" {
		size += sizeBytesField(len(identity))
	}
	if nowMs != 0 {
		size += sizeVarintField(uint64(nowMs))
	}
	var keys []string
	if len(traceContext) > 0 {
		keys = make([]string, 0, len(traceContext))
		for k, v := range traceContext {
			keys = append(keys, k)
			size += sizeBytesField(mapEntrySize(k, v))
		}
		slices.Sort(keys)
	}

	b := make([]byte, 0, size)
	if len(id) > 0 {
		b = appendBytesField(b, 1, id)
	}
	if dueMs != 0 {
		b = appendVarintField(b, 2, uint64(dueMs))
	}
	if eventsTopic != "" {
		b = appendStringField(b, 3, eventsTopic)
	}
	if identity != "" {
		b = appendStringField(b, 4, identity)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(eventSize))
	{
		b = appendVarintField(b, 1, uint64(hookstreamv1.Event_KIND_TIMER_FIRED))
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(evID))
		b = append(append(append(b, id...), '@'), dueText...)
		if identity != "" {
			b = appendStringField(b, 3, identity)
		}
		if dueMs != 0 {
			b = appendVarintField(b, 5, uint64(dueMs))
		}
		b = protowire.AppendTag(b, 9, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(firedSize))
		if len(id) > 0 {
			b = appendBytesField(b, 1, id)
		}
		if dueMs != 0 {
			b = appendVarintField(b, 2, uint64(dueMs))
		}
		if len(payload) > 0 {
			b = appendBytesField(b, 4, payload)
		}
	}
	b = appendStringField(b, 6, owner)
	if nowMs != 0 {
		b = appendVarintField(b, 7, uint64(nowMs))
	}
	for _, k := range keys {
		v := traceContext[k]
		b = protowire.AppendTag(b, 8, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(mapEntrySize(k, v)))
		if k != "" {
			b = appendStringField(b, 1, k)
		}
		if v != "" {
			b = appendStringField(b, 2, v)
		}
	}
	return b, payload
}

// mapEntrySize is the size of a map<string, string> entry.
func mapEntrySize(k, v string) int {
	n := 0
	if k != "" {
		n += sizeBytesField(len(k))
	}
	if v != "" {
		n += sizeBytesField(len(v))
	}
	return n
}

// triggerValue encodes a Trigger built by the engine (it has no unknown
// fields).
func triggerValue(t *hookstreamv1.Trigger) []byte {
	str := func(n *int, s string) {
		if s != "" {
			*n += sizeBytesField(len(s))
		}
	}
	num := func(n *int, v int64) {
		if v != 0 {
			*n += sizeVarintField(uint64(v))
		}
	}
	var n int
	str(&n, t.Id)
	str(&n, t.Campaign)
	num(&n, t.CampaignGeneration)
	str(&n, t.TriggerType)
	str(&n, t.Identity)
	num(&n, t.TsMs)
	str(&n, t.CauseEventId)
	str(&n, t.CauseEventName)
	num(&n, t.CauseEventTsMs)
	if len(t.CauseEventPropertiesJson) > 0 {
		n += sizeBytesField(len(t.CauseEventPropertiesJson))
	}
	if len(t.ProfileJson) > 0 {
		n += sizeBytesField(len(t.ProfileJson))
	}
	if t.Control {
		n += sizeVarintField(1)
	}
	if t.IsTest {
		n += sizeVarintField(1)
	}

	b := make([]byte, 0, n)
	if t.Id != "" {
		b = appendStringField(b, 1, t.Id)
	}
	if t.Campaign != "" {
		b = appendStringField(b, 2, t.Campaign)
	}
	if t.CampaignGeneration != 0 {
		b = appendVarintField(b, 3, uint64(t.CampaignGeneration))
	}
	if t.TriggerType != "" {
		b = appendStringField(b, 4, t.TriggerType)
	}
	if t.Identity != "" {
		b = appendStringField(b, 5, t.Identity)
	}
	if t.TsMs != 0 {
		b = appendVarintField(b, 6, uint64(t.TsMs))
	}
	if t.CauseEventId != "" {
		b = appendStringField(b, 7, t.CauseEventId)
	}
	if t.CauseEventName != "" {
		b = appendStringField(b, 8, t.CauseEventName)
	}
	if t.CauseEventTsMs != 0 {
		b = appendVarintField(b, 9, uint64(t.CauseEventTsMs))
	}
	if len(t.CauseEventPropertiesJson) > 0 {
		b = appendBytesField(b, 10, t.CauseEventPropertiesJson)
	}
	if len(t.ProfileJson) > 0 {
		b = appendBytesField(b, 11, t.ProfileJson)
	}
	if t.Control {
		b = appendVarintField(b, 12, 1)
	}
	if t.IsTest {
		b = appendVarintField(b, 13, 1)
	}
	return b
}
