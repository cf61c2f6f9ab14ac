// Package intake accepts data subject requests: it validates them, makes
// resubmissions idempotent, publishes request.submitted with a broker confirm,
// and answers status and report download queries. It knows nothing of HTTP
// frameworks; modules/api maps its results and errors to responses.
package intake

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Errors callers map to responses with errors.Is.
var (
	// ErrConflict: the idempotency key was used before with a different body.
	ErrConflict = errors.New("intake: idempotency key reused with a different request")
	// ErrUnavailable: the broker (or Redis, or PostgreSQL) did not answer in
	// time; nothing was accepted and the caller should retry later.
	ErrUnavailable = errors.New("intake: temporarily unavailable")
	// ErrNotFound: no such request (or no report for it yet).
	ErrNotFound = errors.New("intake: not found")
	// ErrForbidden: the download token is not valid for this request.
	ErrForbidden = errors.New("intake: download token not valid")
	// ErrGone: the report was deleted (a GoneError says why).
	ErrGone = errors.New("intake: report deleted")
)

// StateSubmitted is the state of an accepted request the requests manager has not stored yet.
const StateSubmitted = "submitted"

// maxIdempotencyKeyLen bounds the Idempotency-Key header.
const maxIdempotencyKeyLen = 255

// Publisher publishes a message and returns nil only once the broker confirmed it.
type Publisher interface {
	Publish(ctx context.Context, m message.Message) error
}

// Participant is one erasure participant's progress, as shown in a status.
type Participant struct {
	Name        string     `json:"name"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// ParticipantLister lists the erasure participants of a request (the
// canceller's table); serve runs without one until erasure exists.
type ParticipantLister interface {
	ListParticipants(ctx context.Context, requestID string) ([]Participant, error)
}

// ReportOpener streams a stored report's decrypted ZIP (modules/report's Builder).
type ReportOpener interface {
	Open(ctx context.Context, reportID string) (io.ReadCloser, int64, error)
}

// Requests reads what the requests manager stored (requests.Store).
type Requests interface {
	// Get returns the stored request id; found is false when it is not stored (yet).
	Get(ctx context.Context, id string) (r record.Row, found bool, err error)
	// ReportOf returns the request's report and whether it was deleted.
	ReportOf(ctx context.Context, requestID string) (r record.DeletedReport, found bool, err error)
}

// Options configure a Service. Publisher, Redis, Requests and Logger are required.
type Options struct {
	Publisher Publisher
	Redis     redis.UniversalClient
	Requests  Requests
	// KeyPrefix starts every Redis key the service writes.
	KeyPrefix string
	// AcceptedTTL is how long an accepted id is remembered for status queries
	// before the requests manager's row must answer for it.
	AcceptedTTL time.Duration
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration
	// ConfirmTimeout is the publisher's confirm timeout; a submission holding
	// an idempotency key keeps it a little longer than that.
	ConfirmTimeout time.Duration
	// DownloadKey signs report download tokens.
	DownloadKey []byte
	// PreviousDownloadKeys are former download keys whose tokens are still
	// accepted (serve.previous_download_keys).
	PreviousDownloadKeys [][]byte
	// ClientRegulations is each caller's regulation when its submission
	// names none (console.client_regulations), keyed by the caller name
	// the API token check gives.
	ClientRegulations map[string]string
	Participants      ParticipantLister
	Reports           ReportOpener
	Registerer        prometheus.Registerer
	Logger            *slog.Logger
	// VerificationRequired says whether an API caller must state how it
	// verified the subject (privacy.require_verification); nil: never.
	VerificationRequired func(caller string) bool
	// Identifiers are the declared names of named subject identifiers
	// (serve.identifiers); a submission naming another is refused.
	Identifiers []string
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Service is the intake's domain logic.
type Service struct {
	opts      Options
	idem      idempotencyStore
	submitted *prometheus.CounterVec
	now       func() time.Time
	// downloadKeys are the active download key and the previous ones.
	downloadKeys [][]byte
	// fingerprintKeys are derived from downloadKeys, in the same order.
	fingerprintKeys [][]byte
}

// New builds a Service and registers its metrics on opts.Registerer.
func New(opts Options) (*Service, error) {
	if opts.Publisher == nil || opts.Redis == nil || opts.Requests == nil || opts.Logger == nil {
		return nil, errors.New("intake: Publisher, Redis, Requests and Logger are required")
	}
	if opts.AcceptedTTL <= 0 {
		opts.AcceptedTTL = 24 * time.Hour
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if opts.ConfirmTimeout <= 0 {
		opts.ConfirmTimeout = 5 * time.Second
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	s := &Service{
		opts: opts,
		idem: idempotencyStore{
			rdb:    opts.Redis,
			prefix: opts.KeyPrefix,
			ttl:    opts.IdempotencyTTL,
			// Longer than any publish can take, so a live holder is never
			// overtaken; short enough that a crashed holder's key frees soon.
			lease:        opts.ConfirmTimeout + 2*time.Second,
			acceptedTTL:  opts.AcceptedTTL,
			claimScript:  redis.NewScript(claimScriptSrc),
			finishScript: redis.NewScript(finishScriptSrc),
		},
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_requests_submitted_total",
			Help: "Data subject requests accepted by intake (broker confirmed), by type.",
		}, []string{"type"}),
		now:          opts.Now,
		downloadKeys: append([][]byte{opts.DownloadKey}, opts.PreviousDownloadKeys...),
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, k := range s.downloadKeys {
		s.fingerprintKeys = append(s.fingerprintKeys, fingerprintKey(k))
	}
	if err := opts.Registerer.Register(s.submitted); err != nil {
		return nil, fmt.Errorf("registering intake metrics: %w", err)
	}
	for _, k := range []string{event.KindAccess, event.KindErasure} {
		s.submitted.WithLabelValues(k)
	}
	return s, nil
}

// Accepted is the outcome of a successful Submit.
type Accepted struct {
	ID string
	// Replayed is true when an earlier submission with the same idempotency
	// key is answered again.
	Replayed bool

	settle func()
}

// Settle records the confirmed outcome under the idempotency key. Call it
// once the answer is on its way: it costs a Redis round trip the caller
// need not wait for. A replay arriving before it waits a moment; if it never
// runs (a crash), the key's lease ends and a replay re-publishes the same
// request, which consumers deduplicate.
func (a Accepted) Settle() {
	if a.settle != nil {
		a.settle()
	}
}

// Submit publishes sub as request.submitted and returns once the broker
// confirmed it. caller scopes idemKey (each API token has its own keys); an
// empty idemKey makes every call a new request.
//
// Order matters for "nothing half-done": the idempotency record is reserved
// before publishing, but it answers with an id only after the confirm; a
// failed or unknown publish leaves it reusable, and the retry re-publishes
// the same request id and message id, so a message that did reach the broker
// despite the error is deduplicated instead of doubled.
func (s *Service) Submit(ctx context.Context, caller, idemKey string, sub Submission) (Accepted, error) {
	if len(idemKey) > maxIdempotencyKeyLen {
		return Accepted{}, fieldErr("Idempotency-Key", "must be at most %d characters", maxIdempotencyKeyLen)
	}
	for name := range sub.Subject.Identifiers {
		if !slices.Contains(s.opts.Identifiers, name) {
			return Accepted{}, fieldErr("subject.identifiers."+name, "is not declared in serve.identifiers")
		}
	}
	if sub.Verification == nil && s.opts.VerificationRequired != nil && s.opts.VerificationRequired(caller) {
		return Accepted{}, fieldErr("verification", "is required for this client")
	}
	if sub.Regulation == "" {
		sub.Regulation = s.opts.ClientRegulations[caller]
	}
	id, err := uuid.NewV7()
	if err != nil {
		return Accepted{}, fmt.Errorf("making request id: %w", err)
	}
	r := reservation{ID: id.String(), MessageID: uuid.NewString(), SubmittedAt: s.now().UTC(), Client: caller}
	// A caller that hangs up must not turn a confirmed publish into an
	// unknown one; the publisher's confirm timeout still bounds the work.
	work := context.WithoutCancel(ctx)
	if idemKey == "" {
		if err := s.publishRemembering(work, r, sub, true); err != nil {
			// The id was never revealed, so its record is only tidied away.
			if derr := s.opts.Redis.Del(work, s.acceptedKey(r.ID)).Err(); derr != nil {
				s.opts.Logger.WarnContext(trace.WithRequestID(ctx, r.ID), "forgetting unaccepted request failed", "error", derr)
			}
			return Accepted{}, err
		}
		return Accepted{ID: r.ID}, nil
	}
	return s.submitIdempotent(ctx, work, caller, idemKey, r, sub)
}

func (s *Service) submitIdempotent(ctx, work context.Context, caller, idemKey string, r reservation, sub Submission) (Accepted, error) {
	key := s.idem.key(caller, idemKey)
	owner := uuid.NewString()
	// Records written under a previous download key still match theirs.
	fp := sub.fingerprint(s.fingerprintKeys[0])
	var alt []string
	for _, k := range s.fingerprintKeys[1:] {
		alt = append(alt, sub.fingerprint(k))
	}
	// A concurrent duplicate waits for the holder's outcome rather than
	// failing: the holder either confirms (same id for both) or fails (this
	// call takes the record over and publishes the same request).
	deadline := time.Now().Add(s.idem.lease + time.Second)
	backoff := 5 * time.Millisecond
	for {
		outcome, got, err := s.idem.claim(work, key, s.acceptedKey(r.ID), acceptedValue(sub.Type, r.SubmittedAt, r.Client, sub.Regulation), fp, alt, owner, r)
		if err != nil {
			return Accepted{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		switch outcome {
		case claimConflict:
			return Accepted{}, ErrConflict
		case claimDone:
			s.opts.Logger.InfoContext(trace.WithRequestID(ctx, got.ID), "idempotent submission replayed", "caller", caller)
			return Accepted{ID: got.ID, Replayed: true}, nil
		case claimed:
			// A taken-over reservation has an older id whose accepted record
			// may have expired; a fresh one's was written by the claim.
			takeover := got.ID != r.ID
			if err := s.publishRemembering(work, got, sub, takeover); err != nil {
				if ferr := s.idem.finish(work, key, owner, got.ID, false); ferr != nil {
					s.opts.Logger.WarnContext(trace.WithRequestID(ctx, got.ID), "releasing idempotency key failed; it frees when its lease ends", "error", ferr)
				}
				return Accepted{}, err
			}
			settle := func() {
				if err := s.idem.finish(work, key, owner, got.ID, true); err != nil {
					// The request is confirmed and will be processed; a replay of
					// the key re-publishes the same ids, which consumers absorb.
					s.opts.Logger.WarnContext(trace.WithRequestID(ctx, got.ID), "recording idempotency outcome failed", "error", err)
				}
			}
			return Accepted{ID: got.ID, Replayed: takeover, settle: settle}, nil
		case claimBusy:
			if time.Now().After(deadline) {
				return Accepted{}, fmt.Errorf("%w: idempotency key is held by a submission that has not finished", ErrUnavailable)
			}
			select {
			case <-ctx.Done():
				return Accepted{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 100*time.Millisecond)
		}
	}
}

// publishRemembering publishes r and, when remember is set, writes its
// accepted record meanwhile: the id is revealed to nobody before the
// confirm, so the record may exist first, and the two round trips overlap
// instead of adding up.
func (s *Service) publishRemembering(ctx context.Context, r reservation, sub Submission, remember bool) error {
	ctx = trace.WithRequestID(ctx, r.ID)
	var remembered chan error
	if remember {
		remembered = make(chan error, 1)
		go func() {
			remembered <- s.opts.Redis.Set(ctx, s.acceptedKey(r.ID), acceptedValue(sub.Type, r.SubmittedAt, r.Client, sub.Regulation), s.opts.AcceptedTTL).Err()
		}()
	}
	err := s.publish(ctx, r, sub)
	if remember {
		if rerr := <-remembered; rerr != nil && err == nil {
			// The request is safe in the broker; only its status answers 404
			// until the requests manager stored it.
			s.opts.Logger.WarnContext(ctx, "remembering accepted request failed", "error", rerr)
		}
	}
	if err != nil {
		return err
	}
	s.submitted.WithLabelValues(sub.Type).Inc()
	s.opts.Logger.DebugContext(ctx, "request accepted", "type", sub.Type)
	return nil
}

func (s *Service) publish(ctx context.Context, r reservation, sub Submission) error {
	m, err := message.New(event.TypeRequestSubmitted, event.RequestSubmitted{
		RequestID:    r.ID,
		Type:         sub.Type,
		Subject:      sub.Subject,
		SubmittedAt:  r.SubmittedAt,
		Verification: sub.Verification,
		Locale:       sub.Locale,
		Receipt:      sub.Receipt,
		Regulation:   sub.Regulation,
		Client:       r.Client,
	}, nil)
	if err != nil {
		return err
	}
	m.ID = r.MessageID
	m.CorrelationID = r.ID
	m.OccurredAt = r.SubmittedAt
	// Continue the caller's trace (W3C traceparent) into the message.
	m.Traceparent = trace.Child(trace.Traceparent(ctx))
	begin := time.Now()
	if err := s.opts.Publisher.Publish(ctx, m); err != nil {
		s.opts.Logger.WarnContext(ctx, "request not accepted: publish failed", "type", sub.Type, "error", err, "took", time.Since(begin))
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func (s *Service) acceptedKey(id string) string { return s.opts.KeyPrefix + "accepted:" + id }

// ParseID checks that id is a request id (a UUID) and returns its canonical form.
func ParseID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", fieldErr("id", "must be a request id (UUID)")
	}
	return u.String(), nil
}

// DownloadToken checks a report download token for requestID.
func (s *Service) DownloadToken(requestID, token string) error {
	if err := download.VerifyAny(s.downloadKeys, requestID, token, s.now()); err != nil {
		return fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	return nil
}

// Why a report is gone (GoneError.Reason), as recorded in reports.deleted_reason.
const (
	GoneSubjectErasure = "subject_erasure"
	GoneRetention      = "retention"
)

// GoneError is a deleted report: at the subject's own request (their
// erasure) or because its retention ended.
type GoneError struct {
	Reason    string
	DeletedAt time.Time
}

func (e *GoneError) Error() string { return "report deleted (" + e.Reason + ")" }

// Is makes errors.Is(err, ErrGone) hold.
func (e *GoneError) Is(target error) bool { return target == ErrGone }

// ReportDeleted returns a *GoneError saying why request requestID's report
// was deleted, or nil when it was not (or there is none).
func (s *Service) ReportDeleted(ctx context.Context, requestID string) (*GoneError, error) {
	_, gone, err := s.Report(ctx, requestID)
	return gone, err
}

// Report returns, from one read of request requestID's report record, what
// the report holds per source (none without a report, or for one stored
// before the list was kept) and, when it was deleted, a *GoneError saying
// why.
func (s *Service) Report(ctx context.Context, requestID string) ([]record.ReportSource, *GoneError, error) {
	rep, found, err := s.opts.Requests.ReportOf(ctx, requestID)
	switch {
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case !found:
		return nil, nil, nil
	case rep.Deleted:
		return rep.Contents, &GoneError{Reason: rep.Reason, DeletedAt: rep.DeletedAt}, nil
	}
	return rep.Contents, nil, nil
}

// OpenReport verifies the download token and opens the request's report.
// The caller closes the reader. A deleted report is a *GoneError for any
// link gdpr signed, expired or not: the holder of an old link learns why
// it no longer works, a guessed link learns nothing.
func (s *Service) OpenReport(ctx context.Context, requestID, token string) (io.ReadCloser, int64, error) {
	tokenErr := s.DownloadToken(requestID, token)
	if tokenErr != nil && !errors.Is(tokenErr, download.ErrExpired) {
		return nil, 0, tokenErr
	}
	if s.opts.Reports == nil {
		return nil, 0, fmt.Errorf("%w: report storage is not configured", ErrUnavailable)
	}
	rep, found, err := s.opts.Requests.ReportOf(ctx, requestID)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if found && rep.Deleted {
		return nil, 0, &GoneError{Reason: rep.Reason, DeletedAt: rep.DeletedAt}
	}
	if tokenErr != nil {
		return nil, 0, tokenErr
	}
	if !found {
		return nil, 0, ErrNotFound
	}
	reportID := rep.ReportID
	rc, size, err := s.opts.Reports.Open(ctx, reportID)
	if err != nil {
		// Deleted between the lookup and the open: say so, not 500. The
		// report id is the request's one report, so the request finds it.
		if again, ok, againErr := s.opts.Requests.ReportOf(ctx, requestID); againErr == nil && ok && again.Deleted {
			return nil, 0, &GoneError{Reason: again.Reason, DeletedAt: again.DeletedAt}
		}
		return nil, 0, fmt.Errorf("opening report %s: %w", reportID, err)
	}
	return rc, size, nil
}
