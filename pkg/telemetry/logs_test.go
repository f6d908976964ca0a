package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func TestLogsCarryTheTrace(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(TraceHandler{slog.NewJSONHandler(&buf, nil)}).With("component", "test")
	ctx, span := sdktrace.NewTracerProvider().Tracer("t").Start(context.Background(), "op")
	defer span.End()
	log.InfoContext(ctx, "delivered", "campaign", "c")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["trace_id"] != span.SpanContext().TraceID().String() || line["span_id"] != span.SpanContext().SpanID().String() || line["component"] != "test" {
		t.Fatalf("log line %v", line)
	}
	buf.Reset()
	log.Info("no span")
	if bytes.Contains(buf.Bytes(), []byte("trace_id")) {
		t.Fatalf("trace_id without a span: %s", buf.Bytes())
	}
}
