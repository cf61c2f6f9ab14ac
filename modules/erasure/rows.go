package erasure

import (
	"context"
	"fmt"
	"strings"

	"gorm.io/gorm"
)

// rowSet is one erasure's participant rows as a transaction of it sees them
// under the erasure's row lock, kept in memory so that a batch of
// confirmations reads them once and writes what changed in one statement
// (flush) instead of a read and a write per confirmation.
type rowSet struct {
	requestID string
	// state is the erasure's state as the transaction left it so far.
	state  ErasureState
	byName map[string]*row
	order  []string
	// deferred: setState records the change here and flush writes it; else
	// setState writes at once and only mirrors the change here.
	deferred bool
	pending  map[string]*rowUpdate
	touched  []string
}

// rowUpdate is what setState changes of one row, merged over a transaction.
type rowUpdate struct {
	state   State
	attempt int
	outcome string // "" keeps last_outcome
	detail  string
}

func newRowSet(requestID string, state ErasureState, n int) *rowSet {
	return &rowSet{requestID: requestID, state: state, byName: make(map[string]*row, n), order: make([]string, 0, n)}
}

func (rs *rowSet) add(r row) {
	rs.byName[r.Participant] = &r
	rs.order = append(rs.order, r.Participant)
}

// all returns the rows in the order they were read.
func (rs *rowSet) all() []row {
	out := make([]row, 0, len(rs.order))
	for _, n := range rs.order {
		out = append(out, *rs.byName[n])
	}
	return out
}

// set mirrors a change of participant name's row, and records it for flush
// when deferred.
func (rs *rowSet) set(name string, state State, attempt int, outcome, detail string) {
	if r, ok := rs.byName[name]; ok {
		r.State, r.Attempt = state, attempt
	}
	if !rs.deferred {
		return
	}
	if rs.pending == nil {
		rs.pending = map[string]*rowUpdate{}
	}
	u, ok := rs.pending[name]
	if !ok {
		u = &rowUpdate{}
		rs.pending[name] = u
		rs.touched = append(rs.touched, name)
	}
	u.state, u.attempt, u.detail = state, attempt, detail
	if outcome != "" {
		u.outcome = outcome
	}
}

// lockAll takes the row locks of the erasures ids (sorted) for the rest of
// tx, in id order, so that two transactions locking several never wait for
// each other in a cycle; an unknown id is absent from the result.
func (c *Canceller) lockAll(ctx context.Context, tx *gorm.DB, ids []string) (map[string]erasureRow, error) {
	var es []erasureRow
	if err := tx.WithContext(ctx).Raw(`SELECT request_id, state, subject_id, subject_email, subject_phone,
			subject_identifiers::text AS subject_identifiers, completed_at, now() AS now
		FROM erasures WHERE request_id IN ? ORDER BY request_id FOR UPDATE`, ids).Scan(&es).Error; err != nil {
		return nil, fmt.Errorf("locking %d erasures: %w", len(ids), err)
	}
	out := make(map[string]erasureRow, len(es))
	for _, e := range es {
		out[e.RequestID] = e
	}
	return out, nil
}

// readRowsAll reads every participant row of the erasures es (locked by an
// earlier statement, lockAll, so that this one sees what the locks' previous
// holders committed: lockParticipant says why a join would not).
func (c *Canceller) readRowsAll(ctx context.Context, tx *gorm.DB, ids []string, es map[string]erasureRow) (map[string]*rowSet, error) {
	var rows []row
	if err := tx.WithContext(ctx).Raw(`SELECT request_id, participant, kind, state, attempt FROM erasure_participants
		WHERE request_id IN ? ORDER BY request_id, participant`, ids).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading participants of %d erasures: %w", len(ids), err)
	}
	out := make(map[string]*rowSet, len(es))
	for id, e := range es {
		rs := newRowSet(id, e.State, 10)
		rs.deferred = true
		out[id] = rs
	}
	for _, r := range rows {
		if rs, ok := out[r.RequestID]; ok {
			rs.add(r)
		}
	}
	return out, nil
}

// flush writes the deferred changes of s's rows (flushAll).
func (c *Canceller) flush(ctx context.Context, s step) error {
	if s.rows == nil {
		return nil
	}
	return c.flushAll(ctx, s.tx, []*rowSet{s.rows})
}

// flushAll writes the deferred changes of sets in one statement, as
// setState would have one by one (confirmed_at set when a row becomes
// erased or not_found, last_outcome kept when no outcome was given).
func (c *Canceller) flushAll(ctx context.Context, tx *gorm.DB, sets []*rowSet) error {
	var sb strings.Builder
	// The first two bind the confirmations in the statement's CASE.
	args := []any{StateErased, StateNotFound}
	n := 0
	for _, rs := range sets {
		for _, name := range rs.touched {
			u := rs.pending[name]
			if n > 0 {
				sb.WriteString(", ")
			}
			n++
			sb.WriteString("(?::uuid, ?::text, ?::text, ?::int, ?::text, ?::text)")
			args = append(args, rs.requestID, name, u.state, u.attempt, u.outcome, truncate(u.detail, 500))
		}
	}
	if n == 0 {
		return nil
	}
	err := tx.WithContext(ctx).Exec(`UPDATE erasure_participants p SET state = v.state, attempt = v.attempt,
			last_outcome = CASE WHEN v.outcome = '' THEN p.last_outcome ELSE v.outcome END, detail = v.detail,
			confirmed_at = CASE WHEN v.state IN (?, ?) THEN now() ELSE p.confirmed_at END, updated_at = now()
		FROM (VALUES `+sb.String()+`) AS v (request_id, participant, state, attempt, outcome, detail)
		WHERE p.request_id = v.request_id AND p.participant = v.participant`, args...).Error
	if err != nil {
		return fmt.Errorf("updating %d participant rows: %w", n, err)
	}
	for _, rs := range sets {
		rs.pending, rs.touched = nil, nil
	}
	return nil
}
