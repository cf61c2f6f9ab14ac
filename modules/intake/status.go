package intake

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Status is what a caller may know about a request: its progress and
// deadline, never the subject's data.
type Status struct {
	ID          string
	Type        string
	State       string
	SubmittedAt time.Time
	ReceivedAt  *time.Time
	// DueAt is the deadline in force: the regulation's deadline from the
	// receipt, or the later one an operator extended it to (GDPR Art.
	// 12(3)), which the subject was emailed.
	DueAt          time.Time
	CompletedAt    *time.Time
	UpdatedAt      *time.Time
	Attempts       int
	NextAttemptAt  *time.Time
	LastErrorClass string
	// Participants is set for erasures once a ParticipantLister is wired.
	Participants []Participant
	// Client is the client that submitted the request ("" for one stored
	// before requests recorded it).
	Client string
}

// Status returns the state of request id: the requests manager's row if it
// stored the request, else "submitted" if this service accepted it recently,
// else ErrNotFound.
func (s *Service) Status(ctx context.Context, id string) (Status, error) {
	ctx = trace.WithRequestID(ctx, id)
	r, found, err := s.opts.Requests.Get(ctx, id)
	if err != nil {
		return Status{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !found {
		return s.acceptedStatus(ctx, id)
	}
	st := Status{
		ID:             r.ID,
		Type:           r.Type,
		State:          string(r.State),
		SubmittedAt:    r.SubmittedAt.UTC(),
		ReceivedAt:     utcPtr(r.ReceivedAt),
		DueAt:          r.Deadline().UTC(),
		CompletedAt:    r.CompletedAt,
		UpdatedAt:      utcPtr(r.UpdatedAt),
		Attempts:       r.Attempts,
		LastErrorClass: r.LastErrorClass,
		Client:         r.Client,
	}
	if st.CompletedAt != nil {
		st.CompletedAt = utcPtr(*st.CompletedAt)
	}
	if r.State == record.StateReceived && r.Attempts > 0 {
		// Only a retry's wait is worth showing; a fresh request is due at once.
		st.NextAttemptAt = utcPtr(r.NextAttemptAt)
	}
	if r.Type == event.KindErasure && s.opts.Participants != nil {
		ps, err := s.opts.Participants.ListParticipants(ctx, id)
		if err != nil {
			return Status{}, fmt.Errorf("%w: listing participants of %s: %w", ErrUnavailable, id, err)
		}
		st.Participants = ps
	}
	return st, nil
}

func (s *Service) acceptedStatus(ctx context.Context, id string) (Status, error) {
	v, err := s.opts.Redis.Get(ctx, s.acceptedKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return Status{}, ErrNotFound
	}
	if err != nil {
		return Status{}, fmt.Errorf("%w: reading accepted record of %s: %w", ErrUnavailable, id, err)
	}
	typ, at, client, regulation, ok := parseAccepted(v)
	if !ok {
		return Status{}, fmt.Errorf("accepted record of %s is malformed", id)
	}
	// The clock of the submission's regulation, from submission: the
	// requests manager counts it again from receipt, moments later.
	reg, err := deadline.Parse(regulation)
	if err != nil {
		reg = deadline.GDPR
	}
	return Status{ID: id, Type: typ, State: StateSubmitted, SubmittedAt: at, DueAt: reg.DueAt(at), Client: client}, nil
}

// StatusFor is Status as client c may see it: another client's request is
// ErrNotFound, exactly as an unknown id is (a 404, not a 403: a client
// learns nothing about requests that are not its own, not even that they
// exist).
func (s *Service) StatusFor(ctx context.Context, c Client, id string) (Status, error) {
	st, err := s.Status(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if !c.Owns(st.Client) {
		return Status{}, ErrNotFound
	}
	return st, nil
}

// CheckOwner returns ErrNotFound unless request id exists and is client c's.
func (s *Service) CheckOwner(ctx context.Context, c Client, id string) error {
	ctx = trace.WithRequestID(ctx, id)
	r, found, err := s.opts.Requests.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if found {
		if !c.Owns(r.Client) {
			return ErrNotFound
		}
		return nil
	}
	_, err = s.StatusFor(ctx, c, id)
	return err
}

func utcPtr(t time.Time) *time.Time {
	t = t.UTC()
	return &t
}
