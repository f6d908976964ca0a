package webhook

import (
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/hookstream/hookstream/pkg/telemetry/spanattr"
)

// do sends req (the Sender's own request) through the client. Within a
// recording span (a sampled delivery attempt or linked-content fetch) it
// makes an HTTP client span ("HTTP POST") around the exchange, redirects
// included, and writes the span's context into req's traceparent; any
// other request goes as it is, at no cost (the traceparent passed through
// from the trigger, if any, is set by Send).
//
// The span records the method, the server's host and port, and the
// response status: not the URL's path or query, which may hold secrets (a
// token in the path) or personal data (query values rendered from the
// profile). otelhttp, which this replaces, records the full URL, and costs
// several µs per request even when no span records.
func (s *Sender) do(req *http.Request) (*http.Response, error) {
	if !trace.SpanFromContext(req.Context()).IsRecording() {
		return s.client.Do(req)
	}
	ctx, span := s.tracer.Start(req.Context(), spanName(req.Method), ClientKind)
	defer span.End()
	return s.doWithin(req.WithContext(ctx), span, nil)
}

// doWithin sends req within span, a client span that req's context holds
// (do's own, or the caller's: Attempt.Span): the exchange is recorded on it,
// in one SetAttributes call once the answer is in, together with attrs (the
// caller's, from spanattr.Get; nil for none), and its context is the
// request's traceparent.
func (s *Sender) doWithin(req *http.Request, span trace.Span, attrs *[]attribute.KeyValue) (*http.Response, error) {
	otel.GetTextMapPropagator().Inject(req.Context(), propagation.HeaderCarrier(req.Header))
	resp, err := s.client.Do(req)
	if attrs == nil {
		attrs = spanattr.Get()
	}
	*attrs = appendRequestAttrs(*attrs, req)
	if err != nil {
		*attrs = append(*attrs, semconv.ErrorTypeKey.String("transport"))
		spanattr.Set(span, attrs)
		span.SetStatus(codes.Error, err.Error())
		return resp, err
	}
	*attrs = append(*attrs, semconv.HTTPResponseStatusCodeKey.Int(resp.StatusCode))
	if resp.StatusCode >= 400 {
		*attrs = append(*attrs, semconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	spanattr.Set(span, attrs)
	return resp, nil
}

// ClientKind is the span start option of a client span, for Attempt.Span.
var ClientKind = trace.WithSpanKind(trace.SpanKindClient)

func spanName(method string) string {
	switch method {
	case http.MethodPost:
		return "HTTP POST"
	case http.MethodPut:
		return "HTTP PUT"
	case http.MethodGet:
		return "HTTP GET"
	}
	return "HTTP " + method
}

// appendRequestAttrs appends a request's span attributes to attrs.
func appendRequestAttrs(attrs []attribute.KeyValue, r *http.Request) []attribute.KeyValue {
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(r.Method), semconv.ServerAddressKey.String(r.URL.Hostname()))
	// The port only when the URL names one other than the scheme's
	// (OpenTelemetry's HTTP conventions): an attribute fewer on most spans.
	if port := r.URL.Port(); port != "" && !(port == "443" && r.URL.Scheme == "https") && !(port == "80" && r.URL.Scheme == "http") {
		if n, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.ServerPortKey.Int(n))
		}
	}
	return attrs
}
