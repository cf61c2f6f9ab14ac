package requests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// claimed is a request a worker holds the lease on.
type claimed struct {
	ID           string
	Type         string
	SubjectID    string
	SubjectEmail string
	// SubjectPhone and SubjectIdentifiers (subject_identifiers as JSON).
	SubjectPhone       string
	SubjectIdentifiers string
	SubmittedAt        time.Time
	Attempt            int // the attempt now running, 1-based
	Token              int64
	// Traceparent and CauseID continue the trace of the request.received
	// message that made the request due.
	Traceparent string
	CauseID     string
}

// traced carries the request id, the trace and the causing message id into
// ctx, so log lines and published events of the work continue the trace.
func (c claimed) traced(ctx context.Context) context.Context {
	ctx = trace.WithRequestID(ctx, c.ID)
	if c.Traceparent != "" {
		ctx = trace.WithTraceparent(ctx, c.Traceparent)
	}
	if c.CauseID != "" {
		ctx = trace.WithMessageID(ctx, c.CauseID)
	}
	return ctx
}

func (c claimed) subject() event.Subject {
	return event.Subject{ID: c.SubjectID, Email: c.SubjectEmail, Phone: c.SubjectPhone, Identifiers: parseIdentifiers(c.SubjectIdentifiers)}
}

type candidate struct {
	ID                 string
	Type               string
	State              State
	SubjectID          string
	SubjectEmail       string
	SubjectPhone       string
	SubjectIdentifiers string
	SubmittedAt        time.Time
	Attempts           int
	Traceparent        string
	CauseID            string `gorm:"column:received_message_id"`
}

// ProcessOne picks one due request, works on it and commits the outcome. It
// reports whether it found one. Workers call it in a loop; tests call it directly.
func (m *Manager) ProcessOne(ctx context.Context) (bool, error) {
	c, lease, err := m.claim(ctx)
	if err != nil || c == nil {
		return false, err
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	ctx = c.traced(ctx)
	// The lease's context descends from the claim's, which had no ids yet.
	work, stop := m.keepLease(c.traced(lease.Context()), c)
	defer stop()
	switch c.Type {
	case event.KindAccess:
		err = m.access(ctx, work, c)
	case event.KindErasure:
		err = m.erasure(ctx, work, c)
	}
	return true, err
}

// claim selects the oldest due request (or one whose worker died), takes
// its Redis lock and its PostgreSQL lease, and marks it processing. The
// lock is released in one place: when no request comes out of the
// transaction, whatever the reason.
func (m *Manager) claim(ctx context.Context) (*claimed, *lock.Lease, error) {
	var out *claimed
	var lease *lock.Lease
	err := m.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		cand, found, err := m.due(tx)
		if err != nil || !found {
			return err
		}
		l, err := m.locker.Obtain(ctx, "request:"+cand.ID, m.cfg.LeaseTTL)
		if errors.Is(err, lock.ErrNotObtained) {
			// A worker that lost its lease may still hold the mutex until
			// it expires; the row stays due and is tried again later.
			m.metrics.contention.WithLabelValues("request").Inc()
			return nil
		}
		if err != nil {
			return err
		}
		lease = l
		out, err = m.take(ctx, tx, cand)
		return err
	})
	if err != nil || out == nil {
		if lease != nil {
			_ = lease.Release(context.WithoutCancel(ctx))
		}
		return nil, nil, err
	}
	return out, lease, nil
}

// due selects and row-locks the oldest due request, or one whose worker died.
func (m *Manager) due(tx *gorm.DB) (candidate, bool, error) {
	var cand candidate
	res := tx.Raw(`SELECT id, type, state, subject_id, subject_email, subject_phone, subject_identifiers::text AS subject_identifiers, submitted_at, attempts,
			traceparent, received_message_id FROM requests
		WHERE (state = ? AND next_attempt_at <= now())
		   OR (state = ? AND lease_until < now())
		ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED`, StateReceived, StateProcessing).Scan(&cand)
	if res.Error != nil {
		return candidate{}, false, fmt.Errorf("selecting a due request: %w", res.Error)
	}
	return cand, res.RowsAffected > 0, nil
}

// take claims cand's fence and starts its next attempt inside tx. It
// returns nil without an error when the request is not to be worked on:
// someone else's fence won, or a dead worker used up its last attempt (then
// tx fails the request).
func (m *Manager) take(ctx context.Context, tx *gorm.DB, cand candidate) (*claimed, error) {
	if cand.State == StateReceived {
		// The common case, in one statement: the fence's claim, the state
		// change and the attempt's record (what lock.Fence.Claim, the
		// UPDATE and the INSERT below do one round trip each).
		return m.takeReceived(ctx, tx, cand)
	}
	token, err := m.fence.Claim(ctx, tx, cand.ID, m.cfg.LeaseTTL)
	if errors.Is(err, lock.ErrFenced) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The previous worker died mid-attempt: that attempt counts, so
	// a request that crashes every worker still ends.
	attempts := cand.Attempts + 1
	if err := m.closeAttempt(tx, cand.ID, attempts, "abandoned", ClassAbandoned, nil); err != nil {
		return nil, err
	}
	m.logger.WarnContext(ctx, "request abandoned by a dead worker; retrying", "request_id", cand.ID, "attempt", attempts)
	if attempts >= m.cfg.MaxAttempts {
		return nil, m.fail(ctx, tx, cand.ID, cand.Type, attempts, ClassAbandoned, m.stage(cand.Type))
	}
	if err := tx.Exec(`UPDATE requests SET state = ?, attempts = ?, updated_at = now() WHERE id = ?`,
		StateProcessing, attempts, cand.ID).Error; err != nil {
		return nil, fmt.Errorf("marking request %s processing: %w", cand.ID, err)
	}
	// The attempt belongs to the request's current generation (one per
	// operator's retry), so a retried request's earlier attempts stay.
	if err := tx.Exec(`INSERT INTO request_attempts (request_id, generation, attempt)
		SELECT id, retries, ? FROM requests WHERE id = ?
		ON CONFLICT (request_id, generation, attempt) DO UPDATE SET started_at = now(), finished_at = NULL,
			outcome = 'running', error_class = '', next_attempt_at = NULL`, attempts+1, cand.ID).Error; err != nil {
		return nil, fmt.Errorf("recording attempt of %s: %w", cand.ID, err)
	}
	return cand.claimed(attempts+1, token), nil
}

// takeReceived is take for a request in state received: the fence's claim
// (lock.Fence.Claim's condition and token, on the same columns), the state
// change and the attempt's record of the current generation, as one
// statement inside tx.
func (m *Manager) takeReceived(ctx context.Context, tx *gorm.DB, cand candidate) (*claimed, error) {
	var token int64
	res := tx.WithContext(ctx).Raw(`WITH taken AS (
			UPDATE requests SET lease_token = lease_token + 1, lease_until = clock_timestamp() + make_interval(secs => ?),
				state = ?, updated_at = now()
			WHERE id = ? AND (lease_until IS NULL OR lease_until < clock_timestamp())
			RETURNING id, retries, lease_token),
		attempt AS (
			INSERT INTO request_attempts (request_id, generation, attempt)
			SELECT id, retries, ?::integer FROM taken
			ON CONFLICT (request_id, generation, attempt) DO UPDATE SET started_at = now(), finished_at = NULL,
				outcome = 'running', error_class = '', next_attempt_at = NULL)
		SELECT lease_token FROM taken`, m.cfg.LeaseTTL.Seconds(), StateProcessing, cand.ID, cand.Attempts+1).Scan(&token)
	if res.Error != nil {
		return nil, fmt.Errorf("claiming request %s: %w", cand.ID, res.Error)
	}
	if res.RowsAffected == 0 {
		// Someone else's fence won (lock.ErrFenced of Fence.Claim).
		return nil, nil
	}
	return cand.claimed(cand.Attempts+1, token), nil
}

func (cand candidate) claimed(attempt int, token int64) *claimed {
	return &claimed{ID: cand.ID, Type: cand.Type, SubjectID: cand.SubjectID, SubjectEmail: cand.SubjectEmail,
		SubjectPhone: cand.SubjectPhone, SubjectIdentifiers: cand.SubjectIdentifiers,
		SubmittedAt: cand.SubmittedAt, Attempt: attempt, Token: token,
		Traceparent: cand.Traceparent, CauseID: cand.CauseID}
}

// keepLease renews the PostgreSQL lease while the work runs; the returned
// context ends when the Redis lock or the lease is lost.
func (m *Manager) keepLease(ctx context.Context, c *claimed) (context.Context, func()) {
	work, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-t.C:
				err := m.fence.Extend(work, m.db, c.ID, c.Token, m.cfg.LeaseTTL)
				if err != nil && work.Err() == nil {
					m.logger.WarnContext(work, "request lease lost; stopping work", "request_id", c.ID, "error", err)
					cancel(fmt.Errorf("%w: %w", lock.ErrFenced, err))
					return
				}
			}
		}
	}()
	return work, func() {
		cancel(context.Canceled)
		<-done
	}
}

func (m *Manager) stage(typ string) string {
	if typ == event.KindErasure {
		return "erasure"
	}
	return "report"
}

// access builds the report and commits the outcome under the fence.
func (m *Manager) access(ctx, work context.Context, c *claimed) error {
	rep, err := m.builder.Build(work, c.ID, c.subject())
	// Results commit with a context of their own: a lost lease is caught by
	// the fence check, not by an aborted write.
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err == nil {
		return m.complete(commitCtx, c, rep)
	}
	if work.Err() != nil {
		// Shutdown or a lost lock stopped the build: not the source's
		// fault, so the attempt does not count.
		return m.interrupt(commitCtx, c)
	}
	return m.retry(commitCtx, c, m.builder.ErrorClass(err))
}

func (m *Manager) complete(ctx context.Context, c *claimed, rep Report) error {
	out, err := message.New(event.TypeReportReady, event.ReportReady{
		RequestID: c.ID, ReportID: rep.ID, Bytes: rep.Bytes, SHA256: rep.SHA256, ReadyAt: time.Now().UTC(),
	}, nil)
	if err != nil {
		return err
	}
	out.CorrelationID = c.ID
	out.CausationID = c.CauseID
	out.Traceparent = trace.Child(trace.Traceparent(ctx))
	outSQL, outArgs, err := m.outbox.EnqueueSQL(out, "EXISTS (SELECT 1 FROM done)")
	if err != nil {
		return err
	}
	// One statement, atomic without a transaction: the fence
	// (lock.Fence.Check's condition; the UPDATE takes the row lock Check's
	// FOR UPDATE took, and waits for a holder as it did), the state, the
	// report's record, the attempt's end and report.ready, all or none.
	// attempts counts the attempt that succeeded too, so a status agrees
	// with the attempt=N of the log lines.
	parts := rep.Contents
	if parts == nil {
		parts = []ReportSource{}
	}
	contents, err := json.Marshal(parts)
	if err != nil {
		return fmt.Errorf("encoding the contents of report %s: %w", rep.ID, err)
	}
	var done int
	err = m.db.WithContext(ctx).Raw(`WITH done AS (
			UPDATE requests SET state = ?, completed_at = now(), updated_at = now(),
				attempts = ?, last_error_class = '', lease_until = NULL
			WHERE id = ? AND lease_token = ? AND lease_until >= clock_timestamp()
			RETURNING id, retries),
		report AS (
			INSERT INTO reports (id, request_id, bytes, sha256, contents) SELECT ?::text, id, ?::bigint, ?::text, ?::jsonb FROM done
			ON CONFLICT (request_id) DO UPDATE SET id = EXCLUDED.id, bytes = EXCLUDED.bytes,
				sha256 = EXCLUDED.sha256, contents = EXCLUDED.contents, created_at = now()),
		attempt AS (
			UPDATE request_attempts a SET finished_at = now(), outcome = 'succeeded', error_class = '', next_attempt_at = NULL
			FROM done WHERE a.request_id = done.id AND a.attempt = ? AND a.generation = done.retries),
		queued AS (`+outSQL+`)
		SELECT count(*) FROM done`,
		append([]any{StateCompleted, c.Attempt, c.ID, c.Token, rep.ID, rep.Bytes, rep.SHA256, contents, c.Attempt}, outArgs...)...).Scan(&done).Error
	if err != nil {
		err = fmt.Errorf("completing request %s: %w", c.ID, err)
	} else if done == 0 {
		err = lock.ErrFenced
	}
	if err != nil {
		if errors.Is(err, lock.ErrFenced) {
			// Another worker owns the request now; it rebuilds the same
			// report id, so nothing of ours must be deleted.
			m.logger.WarnContext(ctx, "lease lost before commit; result dropped", "request_id", c.ID)
		}
		return err
	}
	// gdpr_reports_generated_total and gdpr_report_bytes_total are the report library's.
	m.logger.InfoContext(ctx, "report stored", "request_id", c.ID, "report_id", rep.ID, "bytes", rep.Bytes, "attempt", c.Attempt)
	return nil
}

// retry records a failed attempt: the partial report is deleted, and the
// request is due again after a backoff or failed after its last attempt.
func (m *Manager) retry(ctx context.Context, c *claimed, class string) error {
	stage := m.stage(c.Type)
	failed := false
	err := m.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := m.fence.Check(ctx, tx, c.ID, c.Token); err != nil {
			return err
		}
		// Under the row lock nobody else can build this request, so the
		// deterministic report id is ours to delete.
		if c.Type == event.KindAccess {
			if err := m.builder.Delete(ctx, c.ID); err != nil {
				return fmt.Errorf("deleting partial report of %s: %w", c.ID, err)
			}
		}
		if c.Attempt >= m.cfg.MaxAttempts {
			failed = true
			if err := m.closeAttempt(tx, c.ID, c.Attempt, "failed", class, nil); err != nil {
				return err
			}
			return m.fail(ctx, tx, c.ID, c.Type, c.Attempt, class, stage)
		}
		// Due times are judged by the database clock, like the lease.
		delay := Backoff(c.Attempt, m.cfg.BackoffBase, m.cfg.BackoffMax)
		if err := m.closeAttempt(tx, c.ID, c.Attempt, "failed", class, &delay); err != nil {
			return err
		}
		return tx.Exec(`UPDATE requests SET state = ?, attempts = ?, last_error_class = ?,
			next_attempt_at = now() + make_interval(secs => ?), lease_until = NULL, updated_at = now() WHERE id = ?`,
			StateReceived, c.Attempt, class, delay.Seconds(), c.ID).Error
	})
	if err != nil {
		return err
	}
	if !failed {
		m.metrics.retries.WithLabelValues(stage, class).Inc()
		m.logger.WarnContext(ctx, "attempt failed; will retry", "request_id", c.ID, "attempt", c.Attempt, "error_class", class)
	}
	return nil
}

// fail marks the request failed and enqueues request.failed, inside tx.
func (m *Manager) fail(ctx context.Context, tx *gorm.DB, id, typ string, attempts int, class, stage string) error {
	if err := tx.Exec(`UPDATE requests SET state = ?, attempts = ?, last_error_class = ?,
		lease_until = NULL, updated_at = now() WHERE id = ?`, StateFailed, attempts, class, id).Error; err != nil {
		return fmt.Errorf("failing request %s: %w", id, err)
	}
	out, err := message.New(event.TypeRequestFailed, event.RequestFailed{RequestID: id, Attempts: attempts, ErrorClass: class}, nil)
	if err != nil {
		return err
	}
	out.CorrelationID = id
	out.CausationID = trace.MessageID(ctx)
	out.Traceparent = trace.Child(trace.Traceparent(ctx))
	if err := m.outbox.Enqueue(ctx, tx, out); err != nil {
		return err
	}
	m.metrics.failures.WithLabelValues(stage, class).Inc()
	m.logger.ErrorContext(ctx, "request failed after its last attempt", "request_id", id, "type", typ, "attempts", attempts, "error_class", class)
	return nil
}

// interrupt gives a request back on shutdown without counting the attempt.
func (m *Manager) interrupt(ctx context.Context, c *claimed) error {
	return m.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := m.fence.Check(ctx, tx, c.ID, c.Token); err != nil {
			return err
		}
		if c.Type == event.KindAccess {
			if err := m.builder.Delete(ctx, c.ID); err != nil {
				return fmt.Errorf("deleting partial report of %s: %w", c.ID, err)
			}
		}
		if err := tx.Exec(`DELETE FROM request_attempts WHERE request_id = ? AND attempt = ?
			AND generation = (SELECT retries FROM requests WHERE id = ?)`, c.ID, c.Attempt, c.ID).Error; err != nil {
			return fmt.Errorf("dropping interrupted attempt of %s: %w", c.ID, err)
		}
		return tx.Exec(`UPDATE requests SET state = ?, next_attempt_at = now(), lease_until = NULL,
			updated_at = now() WHERE id = ?`, StateReceived, c.ID).Error
	})
}

// closeAttempt records an attempt's end; delay, when set, is the backoff
// until the next attempt.
func (m *Manager) closeAttempt(tx *gorm.DB, id string, attempt int, outcome, class string, delay *time.Duration) error {
	var secs *float64
	if delay != nil {
		v := delay.Seconds()
		secs = &v
	}
	if err := tx.Exec(`UPDATE request_attempts SET finished_at = now(), outcome = ?, error_class = ?,
		next_attempt_at = now() + make_interval(secs => ?::double precision)
		WHERE request_id = ? AND attempt = ? AND generation = (SELECT retries FROM requests WHERE id = ?)`,
		outcome, class, secs, id, attempt, id).Error; err != nil {
		return fmt.Errorf("closing attempt %d of %s: %w", attempt, id, err)
	}
	return nil
}

// Backoff is the delay before attempt+1 after attempt failed: exponential
// from base, capped at max, with full jitter so retries of many requests
// failing together spread out.
func Backoff(attempt int, base, limit time.Duration) time.Duration {
	ceiling := base
	for i := 1; i < attempt && ceiling < limit; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, limit)
	return rand.N(ceiling + 1) //nolint:gosec // jitter spreads retries; it needs no unpredictability.
}
