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
	// state is the erasure's state as the transaction left it so far.
	state  string
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
	state   string
	attempt int
	outcome string // "" keeps last_outcome
	detail  string
}

func newRowSet(state string, n int) *rowSet {
	return &rowSet{state: state, byName: make(map[string]*row, n), order: make([]string, 0, n)}
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
func (rs *rowSet) set(name, state string, attempt int, outcome, detail string) {
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

// readRows reads every participant row of requestID; the caller holds the
// erasure's row lock (lock), taken by an earlier statement so that this one
// sees what the lock's previous holder committed.
func (c *Canceller) readRows(ctx context.Context, tx *gorm.DB, requestID, state string) (*rowSet, error) {
	var rows []row
	if err := tx.WithContext(ctx).Raw(`SELECT participant, kind, state, attempt FROM erasure_participants
		WHERE request_id = ?`, requestID).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading participants of %s: %w", requestID, err)
	}
	rs := newRowSet(state, len(rows))
	for _, r := range rows {
		rs.add(r)
	}
	return rs, nil
}

// flush writes the deferred changes of s's rows in one statement, as
// setState would have one by one (confirmed_at set when a row becomes
// erased or not_found, last_outcome kept when no outcome was given).
func (c *Canceller) flush(ctx context.Context, s step) error {
	rs := s.rows
	if rs == nil || len(rs.touched) == 0 {
		return nil
	}
	var sb strings.Builder
	args := make([]any, 0, 5*len(rs.touched)+1)
	for i, name := range rs.touched {
		u := rs.pending[name]
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(?::text, ?::text, ?::int, ?::text, ?::text)")
		args = append(args, name, u.state, u.attempt, u.outcome, truncate(u.detail, 500))
	}
	args = append(args, s.requestID)
	err := s.tx.WithContext(ctx).Exec(`UPDATE erasure_participants p SET state = v.state, attempt = v.attempt,
			last_outcome = CASE WHEN v.outcome = '' THEN p.last_outcome ELSE v.outcome END, detail = v.detail,
			confirmed_at = CASE WHEN v.state IN ('erased', 'not_found') THEN now() ELSE p.confirmed_at END, updated_at = now()
		FROM (VALUES `+sb.String()+`) AS v (participant, state, attempt, outcome, detail)
		WHERE p.request_id = ? AND p.participant = v.participant`, args...).Error
	if err != nil {
		return fmt.Errorf("updating %d participants of %s: %w", len(rs.touched), s.requestID, err)
	}
	rs.pending, rs.touched = nil, nil
	return nil
}
