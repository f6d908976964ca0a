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
	ctx, span := s.tracer.Start(req.Context(), spanName(req.Method), clientKind, trace.WithAttributes(requestAttrs(req)...))
	defer span.End()
	req = req.WithContext(ctx)
	otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := s.client.Do(req)
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String("transport"))
		span.SetStatus(codes.Error, err.Error())
		return resp, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCodeKey.Int(resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(resp.StatusCode)))
		span.SetStatus(codes.Error, "")
	}
	return resp, nil
}

var clientKind = trace.WithSpanKind(trace.SpanKindClient)

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

func requestAttrs(r *http.Request) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 2, 3)
	attrs[0], attrs[1] = semconv.HTTPRequestMethodKey.String(r.Method), semconv.ServerAddressKey.String(r.URL.Hostname())
	port := r.URL.Port()
	switch {
	case port != "":
	case r.URL.Scheme == "https":
		port = "443"
	default:
		port = "80"
	}
	if n, err := strconv.Atoi(port); err == nil {
		attrs = append(attrs, semconv.ServerPortKey.Int(n))
	}
	return attrs
}
