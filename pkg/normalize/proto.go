package normalize

import (
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of hookstream.v1.Event (proto/hookstream/v1/event.proto).
const (
	fieldKind         = 1
	fieldID           = 2
	fieldIdentity     = 3
	fieldName         = 4
	fieldTsMs         = 5
	fieldIngestedMs   = 6
	fieldProperties   = 7
	fieldSourceFormat = 8
)

// AppendProto appends the protobuf encoding of the event f describes to b
// and returns the extended slice: the bytes proto.Marshal gives for
// f.Event(), without building the message. f must not be an error.
func (f *Flat) AppendProto(b []byte) []byte {
	if f.Kind != 0 {
		b = appendVarint(append(b, tag(fieldKind, protowire.VarintType)), uint64(f.Kind))
	}
	b = appendBytesField(b, fieldID, f.ID)
	b = appendBytesField(b, fieldIdentity, f.Identity)
	b = appendBytesField(b, fieldName, f.Name)
	if f.TsMs != 0 {
		b = protowire.AppendVarint(append(b, tag(fieldTsMs, protowire.VarintType)), uint64(f.TsMs))
	}
	if f.IngestedMs != 0 {
		b = protowire.AppendVarint(append(b, tag(fieldIngestedMs, protowire.VarintType)), uint64(f.IngestedMs))
	}
	b = appendBytesField(b, fieldProperties, f.Properties)
	if f.Format != "" {
		b = appendVarint(append(b, tag(fieldSourceFormat, protowire.BytesType)), uint64(len(f.Format)))
		b = append(b, f.Format...)
	}
	return b
}

// tag is the one-byte tag of a field numbered below 16.
func tag(num protowire.Number, typ protowire.Type) byte { return byte(num)<<3 | byte(typ) }

// appendVarint is protowire.AppendVarint, inlined for one-byte values.
func appendVarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

// appendBytesField appends a string or bytes field, omitted when empty as
// proto3 does.
func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	return append(appendVarint(append(b, tag(num, protowire.BytesType)), uint64(len(v))), v...)
}
