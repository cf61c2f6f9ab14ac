package message

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"

	"github.com/gdpr-oss/gdpr/modules/trace"
)

// ErrPermanent marks a failure that retrying cannot cure: bad JSON, an
// unknown type, a reference to nothing. Whatever moves the message (the bus
// consumer) dead-letters it with the reason instead of trying again; any
// other error means "try again later".
var ErrPermanent = errors.New("permanent failure")

// Permanent marks err as permanent (see ErrPermanent); err stays visible
// to errors.Is and errors.As.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// IsPermanent reports whether err is marked permanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// ErrPanic marks the error a recovered handler panic became.
var ErrPanic = errors.New("handler panic")

// Handler handles one message. It returns nil once the message's effect is
// committed, a Permanent error for a message that can never be processed,
// or any other error to have it tried again later.
type Handler func(ctx context.Context, m Message) error

// Middleware wraps a Handler with behaviour every message gets.
type Middleware func(Handler) Handler

// Chain wraps h in mws; the first middleware is the outermost, so it sees
// the message first and the result last.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// TraceContext returns ctx carrying m's message id, trace context and
// request id, which the trace log handler adds to every line.
func TraceContext(ctx context.Context, m Message) context.Context {
	ctx = trace.WithMessageID(ctx, m.ID)
	ctx = trace.WithTraceparent(ctx, m.Traceparent)
	if m.CorrelationID != "" {
		ctx = trace.WithRequestID(ctx, m.CorrelationID)
	}
	return ctx
}

// Trace is the middleware that runs the handler under TraceContext, so its
// logs and the messages it causes carry the trace of the message.
func Trace(next Handler) Handler {
	return func(ctx context.Context, m Message) error {
		return next(TraceContext(ctx, m), m)
	}
}

// Recover is the middleware that turns a handler panic into an ErrPanic
// error, so one bad message cannot crash the process and take every other
// message in flight with it. The error is not permanent: a panic may come
// from a passing condition (a dependency answering nonsense during an
// outage), and a message that panics every time is still dead-lettered
// once its retries run out (amqp.retry_for, the queue's delivery limit).
func Recover(next Handler) Handler {
	return func(ctx context.Context, m Message) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w handling %s: %v\n%s", ErrPanic, m.Type, r, debug.Stack())
			}
		}()
		return next(ctx, m)
	}
}

// PermanentOn is the middleware that marks the handler's errors matching
// any of targets (errors.Is) permanent: a module names its bad-input
// errors once, where it wires its handler, instead of in every branch.
func PermanentOn(targets ...error) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m Message) error {
			err := next(ctx, m)
			if err == nil || IsPermanent(err) {
				return err
			}
			for _, t := range targets {
				if errors.Is(err, t) {
					return Permanent(err)
				}
			}
			return err
		}
	}
}
