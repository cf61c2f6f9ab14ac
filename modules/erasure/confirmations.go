package erasure

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/strictjson"
	"github.com/google/uuid"
)

// Confirmations of one erasure all take its row lock (lock), so handled one
// transaction each they queue behind each other, and each costs a
// transaction of its own: with ten participants, ten commits per erasure.
// Instead, confirmations are recorded in shared transactions, as a database
// groups commits: the confirmations (of any erasures) that arrive while a
// transaction of their lane is running are recorded together in the lane's
// next one, and every handler returns (and its delivery is acknowledged)
// only after the transaction holding its confirmation committed. A lane is
// a hash of the request id, so the confirmations of one erasure share one;
// within one process a confirmation never waits for more than the
// transaction in progress. A batch locks its erasures in one statement in
// request id order (lockAll), so two batches, of this replica or another,
// never wait for each other in a cycle.

// confirmationLanes is how many confirmation transactions of one process run
// at once: two let one batch's commit overlap the next one's statements.
const confirmationLanes = 2

// confirmation is one erasure.confirmed message waiting for its transaction.
type confirmation struct {
	m    message.Message
	body event.ErasureConfirmed
	fx   effects
	err  error
}

// confirmationBatch is the confirmations that go into one transaction.
type confirmationBatch struct {
	items []*confirmation
	done  chan struct{}
}

// confirmationGroup is one erasure's transaction in progress and the batch
// that gathers behind it.
type confirmationGroup struct {
	next *confirmationBatch
}

type confirmationGroups struct {
	mu      sync.Mutex
	running map[uint32]*confirmationGroup
}

// lane is the lane of requestID's confirmations.
func lane(requestID string) uint32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(requestID))
	return h.Sum32() % confirmationLanes
}

// submit records cf: at once in its own transaction when none of its lane
// is running, else in the lane's next batch, which the handler of the
// running transaction commits after its own.
func (g *confirmationGroups) submit(ctx context.Context, c *Canceller, cf *confirmation) error {
	id := lane(cf.body.RequestID)
	g.mu.Lock()
	if grp, ok := g.running[id]; ok {
		if grp.next == nil {
			grp.next = &confirmationBatch{done: make(chan struct{})}
		}
		b := grp.next
		b.items = append(b.items, cf)
		g.mu.Unlock()
		// Not bounded by ctx: the running handler records cf whatever this
		// delivery does meanwhile, and the answer must follow that commit.
		<-b.done
		return cf.err
	}
	grp := &confirmationGroup{}
	g.running[id] = grp
	g.mu.Unlock()

	c.recordConfirmations(ctx, []*confirmation{cf})
	for {
		g.mu.Lock()
		b := grp.next
		grp.next = nil
		if b == nil {
			delete(g.running, id)
			g.mu.Unlock()
			return cf.err
		}
		g.mu.Unlock()
		// The batch belongs to other deliveries: this one's cancellation
		// (a drain at shutdown) must not fail them.
		c.recordConfirmations(context.WithoutCancel(ctx), b.items)
		close(b.done)
	}
}

// recordConfirmations records cfs in one transaction and sets each one's
// err. Their erasures are locked in one statement and their participant rows
// read in one; each confirmation is applied to them in memory, in order, and
// what changed is written in one statement at the end (rowSet, flushAll),
// with one inbox statement for every message id. A confirmation of an
// unknown erasure or naming a participant its erasure does not have fails
// alone. When the transaction fails with confirmations of several erasures,
// each erasure's are recorded again in a transaction of their own, so that
// one erasure's failure does not hold the others back.
func (c *Canceller) recordConfirmations(ctx context.Context, cfs []*confirmation) {
	byErasure := map[string][]*confirmation{}
	var ids []string
	for _, cf := range cfs {
		id := cf.body.RequestID
		if _, ok := byErasure[id]; !ok {
			ids = append(ids, id)
		}
		byErasure[id] = append(byErasure[id], cf)
	}
	slices.Sort(ids)
	err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		for _, cf := range cfs {
			cf.err, cf.fx = nil, effects{}
		}
		es, err := c.lockAll(ctx, tx, ids)
		if err != nil {
			return err
		}
		sets, err := c.readRowsAll(ctx, tx, ids, es)
		if err != nil {
			return err
		}
		claim := make([]string, 0, len(cfs))
		for _, cf := range cfs {
			rs, ok := sets[cf.body.RequestID]
			switch {
			case !ok:
				cf.err = fmt.Errorf("%w: %s", ErrUnknownRequest, cf.body.RequestID)
			case rs.byName[cf.body.Participant] == nil:
				cf.err = fmt.Errorf("%w: %q is not a participant of %s", ErrUnknownParty, cf.body.Participant, cf.body.RequestID)
			default:
				claim = append(claim, cf.m.ID)
			}
		}
		fresh, err := inbox.ClaimAll(ctx, tx, inboxConfirmed, claim)
		if err != nil {
			return err
		}
		for _, cf := range cfs {
			if cf.err != nil || !fresh[cf.m.ID] {
				continue
			}
			delete(fresh, cf.m.ID) // a repeat of the id within cfs is a duplicate
			id := cf.body.RequestID
			rs := sets[id]
			e := es[id]
			e.State = rs.state
			s := step{tx: tx, e: e, requestID: id, cause: &cf.m, fx: &cf.fx, rows: rs}
			// Each confirmation under its own message's trace: the batch's
			// transaction runs in the context of whichever delivery ran it,
			// and its lines would name that delivery's message.
			if err := c.confirm(message.TraceContext(ctx, cf.m), s, cf.body, *rs.byName[cf.body.Participant]); err != nil {
				return err
			}
		}
		all := make([]*rowSet, 0, len(ids))
		for _, id := range ids {
			if rs, ok := sets[id]; ok {
				all = append(all, rs)
			}
		}
		return c.flushAll(ctx, tx, all)
	})
	if err != nil && len(ids) > 1 {
		for _, id := range ids {
			c.recordConfirmations(ctx, byErasure[id])
		}
		return
	}
	for _, cf := range cfs {
		switch {
		case cf.err != nil:
			cf.err = fmt.Errorf("recording confirmation of %s by %s: %w", cf.body.RequestID, cf.body.Participant, cf.err)
		case err != nil:
			cf.err = fmt.Errorf("recording confirmation of %s by %s: %w", cf.body.RequestID, cf.body.Participant, err)
		default:
			c.apply(cf.fx)
		}
	}
}

// HandleConfirmed records a participant's confirmation. A duplicate changes
// nothing; "failed" schedules a re-send with backoff until max_resends.
func (c *Canceller) HandleConfirmed(ctx context.Context, m message.Message) error {
	var body event.ErasureConfirmed
	// Confirmations come from participants, outside this service: a repeated
	// member ("outcome":"erased","outcome":"failed") or a miscased one would
	// otherwise be taken silently, the last one winning.
	if err := strictjson.Check(m.Body, &body); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := m.Decode(&body); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	switch {
	case m.ID == "":
		return fmt.Errorf("%w: message_id is missing", ErrInvalid)
	case body.Version != 1:
		return fmt.Errorf("%w: version must be 1, got %d", ErrInvalid, body.Version)
	case body.Participant == "":
		return fmt.Errorf("%w: participant is missing", ErrInvalid)
	}
	if _, err := uuid.Parse(body.RequestID); err != nil {
		return fmt.Errorf("%w: request_id %q is not a UUID", ErrInvalid, body.RequestID)
	}
	switch body.Outcome {
	case event.OutcomeErased, event.OutcomeNotFound, event.OutcomeFailed, event.OutcomeCannotErase:
	default:
		return fmt.Errorf("%w: outcome must be erased, not_found, failed or cannot_erase, got %q", ErrInvalid, body.Outcome)
	}
	if _, ok := c.registry.Get(body.Participant); !ok {
		return fmt.Errorf("%w: %q", ErrUnknownParty, body.Participant)
	}
	return c.confirmations.submit(ctx, c, &confirmation{m: m, body: body})
}

// confirm applies one participant's confirmation to its row r.
func (c *Canceller) confirm(ctx context.Context, s step, body event.ErasureConfirmed, r row) error {
	if r.State == StateErased || r.State == StateNotFound {
		c.logger.InfoContext(ctx, "duplicate confirmation ignored", "request_id", body.RequestID, "participant", body.Participant)
		return nil
	}
	switch body.Outcome {
	case event.OutcomeErased, event.OutcomeNotFound:
		// Each of the two outcomes names its state (StateErased, StateNotFound).
		if err := c.setState(ctx, s, r.Participant, State(body.Outcome), r.Attempt, body.Outcome, body.Detail); err != nil {
			return err
		}
		s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
		return c.checkCompletion(ctx, s)
	case event.OutcomeCannotErase:
		// Not retried: the participant cannot find the subject by what the
		// command holds, and asking again holds the same. An operator erases
		// by other means and confirms; the erasure stays open until then.
		if body.Attempt != 0 && body.Attempt < r.Attempt {
			return nil
		}
		s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
		c.logger.WarnContext(ctx, "erasure participant cannot erase; operator action needed",
			"request_id", body.RequestID, "participant", r.Participant)
		detail := body.Detail
		if detail == "" {
			detail = DetailCannotFind
		}
		return c.setState(ctx, s, r.Participant, StateCannotErase, r.Attempt, body.Outcome, detail)
	}
	// failed
	s.fx.confirmed = append(s.fx.confirmed, r.Participant+"\x00"+body.Outcome)
	if body.Attempt != 0 && body.Attempt < r.Attempt {
		c.logger.InfoContext(ctx, "failure of an older attempt ignored", "request_id", body.RequestID, "participant", r.Participant, "attempt", body.Attempt)
		return nil
	}
	if r.State != StateSent && r.State != StateOverdue {
		// Already retrying (or never sent): the next attempt is scheduled.
		return nil
	}
	return c.retryOrOverdue(ctx, s, r, event.OutcomeFailed, body.Detail)
}
