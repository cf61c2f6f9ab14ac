package message_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

func TestPermanentIsVisibleThroughWrapping(t *testing.T) {
	t.Parallel()
	cause := errors.New("no such request")
	err := fmt.Errorf("handling erasure.confirmed: %w", message.Permanent(cause))
	require.True(t, message.IsPermanent(err))
	require.ErrorIs(t, err, cause)
	require.False(t, message.IsPermanent(cause))
	require.False(t, message.IsPermanent(nil))
}

func TestChainRunsTheFirstMiddlewareOutermost(t *testing.T) {
	t.Parallel()
	var order []string
	mw := func(name string) message.Middleware {
		return func(next message.Handler) message.Handler {
			return func(ctx context.Context, m message.Message) error {
				order = append(order, name+" in")
				err := next(ctx, m)
				order = append(order, name+" out")
				return err
			}
		}
	}
	h := message.Chain(func(context.Context, message.Message) error {
		order = append(order, "handler")
		return nil
	}, mw("a"), mw("b"))
	require.NoError(t, h(t.Context(), message.Message{}))
	require.Equal(t, []string{"a in", "b in", "handler", "b out", "a out"}, order)
}

func TestTracePutsTheMessagesTraceInTheContext(t *testing.T) {
	t.Parallel()
	m, err := message.New("report.ready", map[string]string{}, nil)
	require.NoError(t, err)
	m.CorrelationID = "req-1"
	var got context.Context
	h := message.Trace(func(ctx context.Context, _ message.Message) error {
		got = ctx
		return nil
	})
	require.NoError(t, h(t.Context(), m))
	require.Equal(t, m.ID, trace.MessageID(got))
	require.Equal(t, m.Traceparent, trace.Traceparent(got))
	require.Equal(t, "req-1", trace.RequestID(got))
}

func TestRecoverTurnsAPanicIntoARetryableError(t *testing.T) {
	t.Parallel()
	h := message.Recover(func(context.Context, message.Message) error { panic("nil map") })
	var err error
	require.NotPanics(t, func() { err = h(t.Context(), message.Message{Type: "report.ready"}) })
	require.ErrorIs(t, err, message.ErrPanic)
	require.ErrorContains(t, err, "handling report.ready: nil map")
	require.False(t, message.IsPermanent(err), "a panic is retried, not dead-lettered at once")

	ok := message.Recover(func(context.Context, message.Message) error { return nil })
	require.NoError(t, ok(t.Context(), message.Message{}))
}

func TestPermanentOnMarksOnlyTheNamedErrors(t *testing.T) {
	t.Parallel()
	errInvalid := errors.New("invalid")
	errDown := errors.New("database down")
	for name, tc := range map[string]struct {
		returned  error
		permanent bool
	}{
		"nil":               {nil, false},
		"named":             {fmt.Errorf("decoding: %w", errInvalid), true},
		"other":             {errDown, false},
		"already permanent": {message.Permanent(errDown), true},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := message.PermanentOn(errInvalid)(func(context.Context, message.Message) error { return tc.returned })
			err := h(t.Context(), message.Message{})
			require.Equal(t, tc.permanent, message.IsPermanent(err))
			if tc.returned == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.returned)
		})
	}
}
