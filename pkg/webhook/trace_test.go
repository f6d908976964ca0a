package webhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hookstream/hookstream/pkg/manifest"
)

// A request sent within a sampled trace gets an HTTP client span, whose
// context the receiver gets in traceparent; the span names the server but
// never the URL's path or query (secrets, personal data). A request
// outside a recording span is sent as it is.
func TestSendTracesWithinASampledTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("traceparent"))
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	s := NewSender(true)
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: srv.URL + "/secret-token/hook"}}
	attempt := Attempt{ID: "msg_1", Timestamp: time.Now(), Request: Request{Body: []byte("{}"), ContentType: "application/json",
		Query: map[string][]string{"email": {"jack@example.com"}}}}

	ctx, parent := tp.Tracer("test").Start(context.Background(), "dispatcher.deliver")
	if res := s.Send(ctx, wh, attempt); res.Status != http.StatusTeapot {
		t.Fatalf("traced send: %+v", res)
	}
	parent.End()
	if res := s.Send(context.Background(), wh, attempt); res.Status != http.StatusTeapot {
		t.Fatalf("untraced send: %+v", res)
	}

	var client sdktrace.ReadOnlySpan
	for _, sp := range exp.GetSpans().Snapshots() {
		if sp.Name() == "HTTP POST" {
			if client != nil {
				t.Fatal("two client spans for one traced request")
			}
			client = sp
		}
	}
	if client == nil {
		t.Fatalf("no client span; spans: %v", exp.GetSpans())
	}
	if client.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("client span's parent %s, want the delivery span %s", client.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	if want := "-" + client.SpanContext().TraceID().String() + "-" + client.SpanContext().SpanID().String() + "-"; len(got) != 2 || !strings.Contains(got[0], want) {
		t.Errorf("receiver got traceparent %q, want the client span's (%s)", got, want)
	}
	if got[1] != "" {
		t.Errorf("untraced request carried traceparent %q", got[1])
	}
	attrs := map[string]string{}
	for _, a := range client.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
		if v := a.Value.Emit(); strings.Contains(v, "secret-token") || strings.Contains(v, "jack") {
			t.Errorf("span attribute %s=%s carries the URL's path or query", a.Key, v)
		}
	}
	for k, v := range map[string]string{"http.request.method": "POST", "server.address": "127.0.0.1", "http.response.status_code": "418"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
}

// With Attempt.Span, the exchange is recorded on the caller's span of the
// attempt (no child span): the receiver's traceparent names it, and it
// gets the HTTP attributes and, for a failing answer, the error status.
func TestSendRecordsOnTheAttemptsSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	prevProp := otel.GetTextMapPropagator()
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() { otel.SetTextMapPropagator(prevProp) })

	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("traceparent")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s := NewSender(true)
	wh := &manifest.Webhook{Spec: manifest.WebhookSpec{URL: srv.URL + "/hook?token=secret"}}
	ctx, span := tp.Tracer("test").Start(context.Background(), "dispatcher.deliver", ClientKind)
	res := s.Send(ctx, wh, Attempt{ID: "msg_1", Timestamp: time.Now(), Request: Request{Body: []byte("{}"), ContentType: "application/json"},
		Traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Span: span})
	span.End()
	if res.Status != http.StatusServiceUnavailable {
		t.Fatalf("send: %+v", res)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("spans %v, want the attempt's alone", spans)
	}
	sp := spans[0]
	if want := "00-" + sp.SpanContext.TraceID().String() + "-" + sp.SpanContext.SpanID().String() + "-01"; got != want {
		t.Errorf("receiver got traceparent %q, want the attempt span's %q", got, want)
	}
	attrs := map[string]string{}
	for _, a := range sp.Attributes {
		attrs[string(a.Key)] = a.Value.Emit()
		if strings.Contains(a.Value.Emit(), "secret") {
			t.Errorf("span attribute %s=%s carries the URL's query", a.Key, a.Value.Emit())
		}
	}
	for k, v := range map[string]string{"http.request.method": "POST", "server.address": "127.0.0.1", "http.response.status_code": "503", "error.type": "503"} {
		if attrs[k] != v {
			t.Errorf("attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
	if attrs["server.port"] == "" {
		t.Errorf("no server.port for a URL with a port of its own: %v", attrs)
	}
	if sp.Status.Code != codes.Error {
		t.Errorf("status %v, want an error for a 503", sp.Status)
	}
}
