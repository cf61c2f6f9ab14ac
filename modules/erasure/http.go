package erasure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// callResult classifies one HTTP participant call.
type callResult int

const (
	callErased callResult = iota
	callNotFound
	// callTransient: 5xx, 429, 409, a timeout or a network error; retried with backoff.
	callTransient
	// callPermanent: any other 4xx (or an unexpected status); an operator must act.
	callPermanent
	// callCannot: the URL template could not be filled (a missing or
	// refused identifier); nothing was sent.
	callCannot
)

// reply is what one call got: its class, the HTTP status (0 when no answer
// came) or why none came, and a detail for operators. None of it holds
// personal data.
type reply struct {
	result callResult
	status int
	class  string // timeout, network_error or bad_url when status is 0
	detail string
}

// DefaultHTTPTimeout bounds a participant call whose timeout is not configured.
const DefaultHTTPTimeout = 10 * time.Second

// call makes attempt t.Attempt to an HTTP participant (outside any
// transaction: the call may be slow) and records its result.
func (c *Canceller) call(ctx context.Context, m message.Message, t Timer, p Participant) error {
	var cur struct {
		State        State
		Attempt      int
		Erasure      ErasureState
		SubjectID    string
		SubjectEmail string
		SubjectPhone string
		SubjectIDs   string `gorm:"column:subject_identifiers"`
	}
	res := c.db.WithContext(ctx).Raw(`SELECT p.state, p.attempt, e.state AS erasure, e.subject_id, e.subject_email,
			e.subject_phone, e.subject_identifiers::text AS subject_identifiers
		FROM erasure_participants p JOIN erasures e USING (request_id)
		WHERE p.request_id = ? AND p.participant = ?`, t.RequestID, t.Participant).Scan(&cur)
	if res.Error != nil {
		return fmt.Errorf("reading participant %s of %s: %w", t.Participant, t.RequestID, res.Error)
	}
	if res.RowsAffected == 0 {
		return fmt.Errorf("%w: %s has no participant %s", ErrUnknownRequest, t.RequestID, t.Participant)
	}
	if cur.Erasure == ErasureFinished || cur.Erasure == ErasureCancelled || cur.Attempt != t.Attempt-1 || (cur.State != StatePending && cur.State != StateRetrying) {
		return nil // stale: another replica made this attempt, or an operator acted
	}
	rep := c.tracedDo(ctx, p, t, storedSubject(cur.SubjectID, cur.SubjectEmail, cur.SubjectPhone, cur.SubjectIDs))
	result, detail := rep.result, rep.detail
	if ctx.Err() != nil {
		// Shutting down: the call's outcome is unknown; the timer is redelivered.
		return ctx.Err()
	}
	return c.transition(ctx, t, &m, func(s step, r row) error {
		tx := s.tx
		if r.Attempt != t.Attempt-1 || (r.State != StatePending && r.State != StateRetrying) {
			return nil
		}
		r.Attempt = t.Attempt
		if err := tx.WithContext(ctx).Exec(`UPDATE erasure_participants SET attempt = ?, sent_at = now(), updated_at = now()
			WHERE request_id = ? AND participant = ?`, r.Attempt, t.RequestID, t.Participant).Error; err != nil {
			return fmt.Errorf("recording call to %s: %w", t.Participant, err)
		}
		// The result goes on the bus for the audit log, as an AMQP
		// participant's confirmation does, and causes what follows from it.
		outcome := event.OutcomeFailed
		switch result {
		case callErased:
			outcome = event.OutcomeErased
		case callNotFound:
			outcome = event.OutcomeNotFound
		}
		called, err := message.New(event.TypeErasureCalled, event.ErasureCalled{
			RequestID: t.RequestID, Participant: t.Participant, Attempt: r.Attempt,
			Outcome: outcome, HTTPStatus: rep.status, ErrorClass: rep.class,
		}, &m)
		if err != nil {
			return err
		}
		called.CorrelationID = t.RequestID
		if err := c.outbox.Enqueue(ctx, tx, called); err != nil {
			return err
		}
		// What follows from the call's result is caused by erasure.called.
		s.cause = &called
		switch result {
		case callErased, callNotFound:
			// Each of the two outcomes names its state (StateErased, StateNotFound).
			if err := c.setState(ctx, s, t.Participant, State(outcome), r.Attempt, outcome, detail); err != nil {
				return err
			}
			s.fx.confirmed = append(s.fx.confirmed, t.Participant+"\x00"+outcome)
			return c.checkCompletion(ctx, s)
		case callCannot:
			c.logger.WarnContext(ctx, "erasure participant cannot erase; operator action needed",
				"request_id", t.RequestID, "participant", t.Participant, "detail", detail)
			return c.setState(ctx, s, t.Participant, StateCannotErase, r.Attempt, "", detail)
		case callPermanent:
			s.fx.confirmed = append(s.fx.confirmed, t.Participant+"\x00"+event.OutcomeFailed)
			c.logger.ErrorContext(ctx, "erasure call refused permanently; operator action needed",
				"request_id", t.RequestID, "participant", t.Participant, "detail", detail)
			return c.setState(ctx, s, t.Participant, StateFailed, r.Attempt, event.OutcomeFailed, detail)
		default:
			s.fx.confirmed = append(s.fx.confirmed, t.Participant+"\x00"+event.OutcomeFailed)
			c.logger.WarnContext(ctx, "erasure call failed; will retry", "request_id", t.RequestID,
				"participant", t.Participant, "attempt", r.Attempt, "detail", detail)
			r.State = StateSent // so an exhausted participant becomes overdue
			return c.retryOrOverdue(ctx, s, r, event.OutcomeFailed, detail)
		}
	})
}

// do performs one call. detail never contains personal data: it is a status
// code or an error class, because it is stored and shown to operators.
func (c *Canceller) do(ctx context.Context, p Participant, requestID string, s event.Subject) reply {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultHTTPTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	method := p.Method
	if method == "" {
		method = http.MethodDelete
	}
	target, err := c.expandURL(p, requestID, s)
	if err != nil {
		// The text names the placeholder, never the value.
		return reply{result: callCannot, class: "cannot_erase", detail: err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return reply{result: callPermanent, class: "bad_url", detail: "bad request URL"}
	}
	if p.AuthHeader != "" {
		name, value := "Authorization", p.AuthHeader
		if n, v, ok := strings.Cut(p.AuthHeader, ":"); ok && isToken(n) {
			name, value = n, strings.TrimSpace(v)
		}
		req.Header.Set(name, value)
	}
	req.Header.Set("X-Request-Id", requestID)
	if tp := trace.Traceparent(ctx); tp != "" {
		req.Header.Set("traceparent", tp)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return reply{result: callTransient, class: "timeout", detail: "timeout after " + timeout.String()}
		}
		if errors.Is(err, expand.ErrRedirect) {
			// A redirect is not a confirmation; the operator must look.
			return reply{result: callPermanent, class: "redirect", detail: "redirect not followed (another origin or method)"}
		}
		return reply{result: callTransient, class: "network_error", detail: "network error"}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	rep := reply{status: resp.StatusCode, detail: "http " + strconv.Itoa(resp.StatusCode)}
	expected := p.ExpectedStatuses
	if len(expected) == 0 {
		expected = []int{http.StatusOK, http.StatusAccepted, http.StatusNoContent}
	}
	switch code := resp.StatusCode; {
	case slices.Contains(expected, code):
		rep.result = callErased
	case code == http.StatusNotFound:
		rep.result = callNotFound
	case code == http.StatusTooManyRequests, code == http.StatusConflict, code >= 500:
		rep.result = callTransient
	default:
		rep.result = callPermanent
	}
	return rep
}

// expandURL fills participant p's URL template with the shared expander:
// each value fills one path segment or query value, percent-encoded, and an
// empty, "." or ".." value is refused, so no call can reach the collection
// or a parent path.
func (c *Canceller) expandURL(p Participant, requestID string, s event.Subject) (string, error) {
	u, ok := c.registry.urls[p.Name]
	if !ok {
		var err error
		if u, err = expand.ParseURL(p.URL, urlPlaceholders(p.URL)...); err != nil {
			return "", err
		}
	}
	return u.Expand(urlValues(requestID, s))
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}
