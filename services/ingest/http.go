package ingest

import (
	"compress/gzip"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/normalize"
)

// Rejection is one rejected record of a POST /v1/events body.
type Rejection struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Response is the body of POST /v1/events (CONTRACT.md section 1).
type Response struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected"`
}

// Register adds POST /v1/events to mux.
func (i *Ingest) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/events", i.postEvents)
}

// Authorized reports whether r carries one of tokens as a bearer token
// (compared in constant time). The scheme is case-insensitive, as HTTP
// authentication schemes are (RFC 9110 section 11.1). No tokens configured
// means no auth.
func Authorized(r *http.Request, tokens []string) bool {
	if len(tokens) == 0 {
		return true
	}
	scheme, got, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	match := 0
	for _, t := range tokens {
		match |= subtle.ConstantTimeCompare([]byte(got), []byte(t))
	}
	return match == 1
}

func (i *Ingest) postEvents(w http.ResponseWriter, r *http.Request) {
	if !Authorized(r, i.cfg.Tokens) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="hookstream"`)
		app.WriteError(w, http.StatusUnauthorized, "missing or invalid ingest token (Authorization: Bearer TOKEN)")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			app.WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("bad Content-Type %q", ct))
			return
		case mt != "application/json" && mt != "application/x-ndjson" && mt != "application/jsonl" && mt != "text/plain":
			app.WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %s is not accepted: send application/json or application/x-ndjson", mt))
			return
		}
	}
	cl := i.producer.Load()
	if cl == nil {
		app.WriteError(w, http.StatusServiceUnavailable, "ingest is not running")
		return
	}
	var body io.Reader = r.Body
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			app.WriteError(w, http.StatusBadRequest, "body is not valid gzip: "+err.Error())
			return
		}
		defer gz.Close()
		body = gz
	default:
		app.WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %s is not accepted: send gzip or none", enc))
		return
	}
	data, err := io.ReadAll(io.LimitReader(body, int64(i.cfg.MaxBodyBytes)+1))
	if err != nil {
		app.WriteError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	if len(data) > i.cfg.MaxBodyBytes {
		app.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes: split it", i.cfg.MaxBodyBytes))
		return
	}
	records, err := normalize.SplitBody(data)
	if err != nil {
		app.WriteJSON(w, http.StatusBadRequest, Response{Rejected: []Rejection{{Index: 0, Error: err.Error()}}})
		return
	}
	resp := Response{Rejected: []Rejection{}}
	// With tracing on, the request's trace (or a new one) continues in an
	// ingest.http span that the events' Context carries; otherwise the
	// request's trace headers are passed on as they are.
	var trace []kgo.RecordHeader
	var spanCtx context.Context
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	if sctx, span := i.tracer.Start(ctx, "ingest.http", oteltrace.WithAttributes(attribute.Int("records", len(records)))); span.IsRecording() {
		spanCtx = sctx
		defer span.End()
	} else {
		trace = requestTraceHeaders(r.Header)
	}
	var (
		out     []*kgo.Record
		counts  counts
		buf     []byte
		scratch normalize.Scratch
		flats   []normalize.Flat
	)
	now := i.norm.Now()
	for idx, rec := range records {
		flats = i.norm.AppendFlat(flats[:0], rec, now, &scratch)
		for k := range flats {
			f := &flats[k]
			// A body that is one CleverTap upload reports positions in
			// "d"; otherwise the position of the record in the body.
			index := idx
			if len(records) == 1 {
				index = f.Index
			}
			if f.Err != nil {
				counts.reject(f.Err.Code)
				resp.Rejected = append(resp.Rejected, Rejection{Index: index, Error: f.Err.Error()})
				continue
			}
			kr := new(kgo.Record)
			buf = i.appendEvent(kr, buf, f, trace)
			kr.Context, kr.Timestamp = spanCtx, now
			out = append(out, kr)
			counts.accept(f.Format)
		}
		scratch.Reset()
	}
	if err := kafka.ProduceSync(r.Context(), cl, out...); err != nil {
		status := http.StatusServiceUnavailable
		if errors.Is(err, r.Context().Err()) {
			status = http.StatusRequestTimeout
		}
		app.WriteError(w, status, "events not stored, send them again: "+err.Error())
		return
	}
	counts.add(r.Context(), i, "http")
	resp.Accepted = len(out)
	status := http.StatusOK
	if resp.Accepted == 0 && len(resp.Rejected) > 0 {
		status = http.StatusBadRequest
	}
	app.WriteJSON(w, status, resp)
}

// requestTraceHeaders carries the request's W3C trace context (if any) onto
// the records it produces, as the Kafka path does with record headers.
func requestTraceHeaders(h http.Header) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for _, k := range [...]string{"traceparent", "tracestate", "baggage"} {
		if v := h.Get(k); v != "" {
			out = append(out, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
	}
	return out
}
