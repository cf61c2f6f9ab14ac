// Package trace carries W3C trace context and request/message ids through
// contexts and into every log line.
package trace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
)

type ctxKey int

const (
	keyTraceparent ctxKey = iota
	keyRequestID
	keyMessageID
	// keyTracer holds the role's OpenTelemetry tracer; absent when
	// telemetry.otlp_endpoint is empty, so that spans cost nothing then.
	keyTracer
)

// Child returns a traceparent continuing parent's trace with a new span id,
// or a new trace when parent is empty or malformed.
func Child(parent string) string {
	traceID, ok := TraceID(parent)
	if !ok {
		traceID = randomHex(16)
	}
	return "00-" + traceID + "-" + randomHex(8) + "-01"
}

// TraceID extracts the trace id from a traceparent value
// (version-traceid-parentid-flags, lowercase hex, ids not all zero).
func TraceID(traceparent string) (string, bool) { //nolint:revive // trace.TraceID is clearer at call sites than trace.ID
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || parts[0] == "ff" {
		return "", false
	}
	for i, n := range []int{2, 32, 16, 2} {
		if !isHex(parts[i], n) {
			return "", false
		}
	}
	if strings.Trim(parts[1], "0") == "" || strings.Trim(parts[2], "0") == "" {
		return "", false
	}
	return parts[1], true
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WithTraceparent stores the traceparent in ctx.
func WithTraceparent(ctx context.Context, tp string) context.Context {
	return context.WithValue(ctx, keyTraceparent, tp)
}

// Traceparent returns the traceparent stored in ctx, or "".
func Traceparent(ctx context.Context) string {
	s, _ := ctx.Value(keyTraceparent).(string)
	return s
}

// WithRequestID stores the data subject request's id in ctx.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, keyRequestID, id)
}

// RequestID returns the request id stored in ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(keyRequestID).(string)
	return s
}

// WithMessageID stores the id of the message being handled in ctx.
func WithMessageID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, keyMessageID, id)
}

// MessageID returns the message id stored in ctx, or "".
func MessageID(ctx context.Context) string {
	s, _ := ctx.Value(keyMessageID).(string)
	return s
}

// Handler adds request_id, message_id and trace_id from the context to every
// record logged with a *Context method.
type Handler struct {
	slog.Handler
}

// NewHandler wraps next.
func NewHandler(next slog.Handler) *Handler { return &Handler{Handler: next} }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	// A caller that names an id explicitly wins; adding it again from the
	// context would print the key twice in one JSON line.
	present := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "request_id", "message_id", "trace_id":
			present[a.Key] = true
		}
		return true
	})
	add := func(key, value string) {
		if value != "" && !present[key] {
			r.AddAttrs(slog.String(key, value))
		}
	}
	add("request_id", RequestID(ctx))
	add("message_id", MessageID(ctx))
	if id, ok := TraceID(Traceparent(ctx)); ok {
		add("trace_id", id)
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{Handler: h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{Handler: h.Handler.WithGroup(name)}
}
