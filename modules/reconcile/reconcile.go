// Package reconcile is the in-sync check the seed asks for: the numbers of
// requests submitted, received by the requests manager, answered with a
// report or an erasure, and emailed must agree. It compares, per request,
// the stages it passed according to the audit log and the database, and
// names the requests stuck between two stages.
package reconcile

import (
	"context"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

// Stages in the order a request passes them. An access request needs
// report_generated, an erasure erasure_completed; both end with email_sent.
const (
	StageSubmitted        = "submitted"
	StageReceived         = "received"
	StageReportGenerated  = "report_generated"
	StageErasureCompleted = "erasure_completed"
	StageEmailSent        = "email_sent"
)

// Stages lists every stage, in order.
func Stages() []string {
	return []string{StageSubmitted, StageReceived, StageReportGenerated, StageErasureCompleted, StageEmailSent}
}

// Options bound one check.
type Options struct {
	// Since is how far back to look: requests first seen before now-Since are ignored.
	Since time.Duration
	// StuckAfter is how long a request may go without any progress before a
	// missing stage counts as out of sync. Requests still moving (retrying,
	// waiting for participants that are being re-sent commands) stay in sync.
	StuckAfter time.Duration
}

// Stuck is one request that is out of sync.
type Stuck struct {
	RequestID string `json:"request_id"`
	Type      string `json:"type"`
	// Missing is the first stage the request has not reached (the label of gdpr_out_of_sync).
	Missing string `json:"missing"`
	// Reached lists the stages it did reach; a later stage reached with an
	// earlier one missing means something was lost or deleted behind the
	// service's back.
	Reached []string `json:"reached"`
	// Reason says why, when the stage is missing for good rather than late:
	// "email skipped: scrubbed" (the address was blanked before the email
	// was recorded), "email skipped: no_email" or "email skipped: rejected"
	// for a request that was submitted with an address.
	Reason string `json:"reason,omitempty"`
	// Idle is how long since the request's last progress.
	Idle  time.Duration `json:"-"`
	State string        `json:"state,omitempty"`
	// IdleSeconds is Idle for JSON readers.
	IdleSeconds float64 `json:"idle_seconds"`
}

// Failed is a request that exhausted its attempts; it is reported (and
// alerted) separately, not as out of sync.
type Failed struct {
	RequestID  string `json:"request_id"`
	Type       string `json:"type"`
	ErrorClass string `json:"error_class,omitempty"`
}

// Result is the outcome of one check.
type Result struct {
	CheckedAt time.Time `json:"checked_at"`
	Since     time.Time `json:"since"`
	// Counts[type][stage] is the number of requests of that type that reached the stage.
	Counts map[string]map[string]int `json:"counts"`
	// InProgress is the number of requests not finished but still within the threshold.
	InProgress int `json:"in_progress"`
	// EmailSkipped counts requests submitted without an email address whose
	// email was skipped: in sync, but not in email_sent. A request submitted
	// with an address that got no email is out of sync instead, whatever
	// its row holds now, unless the subject's erasure removed the address
	// first (reason "erased"), which is counted here too.
	EmailSkipped int `json:"email_skipped"`
	// Closed counts requests an operator cancelled or denied
	// (modules/officer): they pass no further stage by design, so they are
	// neither stuck nor failed, whatever they reached before.
	Closed int      `json:"closed"`
	Stuck  []Stuck  `json:"stuck"`
	Failed []Failed `json:"failed"`
}

// InSync reports whether no request is stuck.
func (r Result) InSync() bool { return len(r.Stuck) == 0 }

// OutOfSync counts stuck requests by missing stage; every stage is present.
func (r Result) OutOfSync() map[string]int {
	out := make(map[string]int, len(Stages()))
	for _, s := range Stages() {
		out[s] = 0
	}
	for _, s := range r.Stuck {
		out[s.Missing]++
	}
	return out
}

// AuditLog is what the check reads of the audit log (audit.Store).
type AuditLog interface {
	// SubmittedSince returns the ids of requests whose request.submitted occurred since.
	SubmittedSince(ctx context.Context, since time.Time) ([]string, error)
	// Stages returns, per request and message type, what the log holds.
	Stages(ctx context.Context, requestIDs []string) ([]audit.Stage, error)
}

// Requests is what the check reads of the requests manager's record (requests.Store).
type Requests interface {
	// SubmittedSince returns the ids of the stored requests submitted since.
	SubmittedSince(ctx context.Context, since time.Time) ([]string, error)
	// Progresses returns how far each stored one of ids got.
	Progresses(ctx context.Context, ids []string) ([]requests.Progress, error)
}

// Emails is what the check reads of the notifier's record (notify.Store).
type Emails interface {
	// Outcomes returns what became of the emails of each of requestIDs.
	Outcomes(ctx context.Context, requestIDs []string) ([]notify.Outcome, error)
}

// Sources are the owners' records the check compares.
type Sources struct {
	Audit    AuditLog
	Requests Requests
	Emails   Emails
}

// Checker runs the check against the audit log and the requests tables.
type Checker struct {
	db  *gorm.DB
	src Sources
}

// New returns a checker comparing src; db gives the clock.
func New(db *gorm.DB, src Sources) *Checker { return &Checker{db: db, src: src} }

// track is what is known about one request.
type track struct {
	id       string
	kind     string
	state    requests.State
	errClass string
	reached  map[string]bool
	failed   bool
	noEmail  bool
	// hadEmail: submitted with an address (requests.had_email, set at
	// receipt and kept through the scrub), so an email is owed.
	hadEmail   bool
	skipReason string
	lastStamp  time.Time
}

// Check compares every request first seen within opts.Since.
func (c *Checker) Check(ctx context.Context, opts Options) (Result, error) {
	var now time.Time
	// One clock: the database's, the same one every role stamps rows with.
	if err := c.db.WithContext(ctx).Raw(`SELECT now()`).Scan(&now).Error; err != nil {
		return Result{}, fmt.Errorf("reading database clock: %w", err)
	}
	since := now.Add(-opts.Since)
	ids, err := c.ids(ctx, since)
	if err != nil {
		return Result{}, err
	}
	tracks, err := c.collect(ctx, ids)
	if err != nil {
		return Result{}, err
	}
	res := Result{CheckedAt: now.UTC(), Since: since.UTC(), Counts: map[string]map[string]int{}}
	for _, id := range ids {
		if t, ok := tracks[id]; ok {
			res.add(t, now, opts.StuckAfter)
		}
	}
	return res, nil
}

// ids are the requests first seen since: submitted according to the audit
// log or stored by the requests manager, sorted.
func (c *Checker) ids(ctx context.Context, since time.Time) ([]string, error) {
	logged, err := c.src.Audit.SubmittedSince(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("reading audit stages: %w", err)
	}
	stored, err := c.src.Requests.SubmittedSince(ctx, since)
	if err != nil {
		return nil, fmt.Errorf("reading request stages: %w", err)
	}
	ids := slices.Concat(logged, stored)
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// collect merges what each owner's record says about ids.
func (c *Checker) collect(ctx context.Context, ids []string) (map[string]*track, error) {
	tracks := map[string]*track{}
	if len(ids) == 0 {
		return tracks, nil
	}
	get := func(id string) *track {
		t, ok := tracks[id]
		if !ok {
			t = &track{id: id, reached: map[string]bool{}}
			tracks[id] = t
		}
		return t
	}
	stages, err := c.src.Audit.Stages(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("reading audit stages: %w", err)
	}
	for _, a := range stages {
		get(a.RequestID).logged(a)
	}
	progresses, err := c.src.Requests.Progresses(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("reading request stages: %w", err)
	}
	outcomes, err := c.src.Emails.Outcomes(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("reading request stages: %w", err)
	}
	emails := make(map[string]notify.Outcome, len(outcomes))
	for _, o := range outcomes {
		emails[o.RequestID] = o
	}
	for _, p := range progresses {
		get(p.ID).stored(p, emails[p.ID])
	}
	return tracks, nil
}

// logged adds what the audit log holds of one message type.
func (t *track) logged(a audit.Stage) {
	if a.Last.After(t.lastStamp) {
		t.lastStamp = a.Last
	}
	switch a.Type {
	case event.TypeRequestSubmitted:
		t.reached[StageSubmitted] = true
		if t.kind == "" {
			t.kind = a.Kind
		}
	case event.TypeRequestReceived:
		t.reached[StageReceived] = true
	case event.TypeErasureCompleted:
		t.reached[StageErasureCompleted] = true
	case event.TypeNotificationSent:
		t.reached[StageEmailSent] = true
	case event.TypeRequestFailed:
		t.failed = true
	}
}

// stored adds the requests manager's and the notifier's records, after the
// audit log's.
func (t *track) stored(p requests.Progress, email notify.Outcome) {
	t.kind, t.state, t.errClass = p.Type, p.State, p.ErrorClass
	// The row is the requests manager's own record of receipt.
	t.reached[StageReceived] = true
	// A report counts only while its row exists: report.ready in the
	// audit log with the report gone is exactly what this check is for.
	t.reached[StageReportGenerated] = p.HasReport
	// The notifier's own record counts as much as its event does.
	if email.Sent {
		t.reached[StageEmailSent] = true
	}
	t.noEmail = email.Skipped && !t.reached[StageEmailSent]
	t.hadEmail, t.skipReason = p.HadEmail, email.SkipReasons
	if p.State == requests.StateFailed {
		t.failed = true
	}
	if p.Activity.After(t.lastStamp) {
		t.lastStamp = p.Activity
	}
}

// add counts t's stages and files it as failed, in progress, stuck or in sync.
func (r *Result) add(t *track, now time.Time, stuckAfter time.Duration) {
	kind := t.kind
	if kind == "" {
		kind = "unknown"
	}
	if r.Counts[kind] == nil {
		r.Counts[kind] = map[string]int{}
	}
	for _, s := range Stages() {
		if t.reached[s] {
			r.Counts[kind][s]++
		}
	}
	if t.state == requests.StateCancelled || t.state == requests.StateDenied {
		r.Closed++
		return
	}
	if t.failed {
		r.Failed = append(r.Failed, Failed{RequestID: t.id, Type: kind, ErrorClass: t.errClass})
		return
	}
	missing := firstMissing(kind, t.reached)
	if missing == "" {
		return
	}
	reason := ""
	if missing == StageEmailSent && t.noEmail {
		// An access whose subject was erased before the email went out
		// has nothing left to announce (docs/privacy.md).
		if !t.hadEmail || t.skipReason == notify.ReasonErased {
			r.EmailSkipped++
			return
		}
		// Submitted with an address, and the notifier gave up on it: no
		// later progress can bring the email, so it is out of sync now.
		reason = "email skipped: " + t.skipReason
	}
	idle := now.Sub(t.lastStamp)
	if reason == "" && idle <= stuckAfter {
		r.InProgress++
		return
	}
	var reached []string
	for _, s := range Stages() {
		if t.reached[s] {
			reached = append(reached, s)
		}
	}
	r.Stuck = append(r.Stuck, Stuck{RequestID: t.id, Type: kind, Missing: missing, Reached: reached, Reason: reason,
		Idle: idle, IdleSeconds: idle.Seconds(), State: string(t.state)})
}

// Expected returns the stages a request of kind must pass, in order.
func Expected(kind string) []string {
	switch kind {
	case event.KindAccess:
		return []string{StageSubmitted, StageReceived, StageReportGenerated, StageEmailSent}
	case event.KindErasure:
		return []string{StageSubmitted, StageReceived, StageErasureCompleted, StageEmailSent}
	}
	return []string{StageSubmitted, StageReceived}
}

func firstMissing(kind string, reached map[string]bool) string {
	for _, s := range Expected(kind) {
		if !reached[s] {
			return s
		}
	}
	return ""
}

// Stores are the owners' stores over one database, the usual Sources.
func Stores(db *gorm.DB) Sources {
	return Sources{Audit: audit.NewStore(db), Requests: requests.NewStore(db, nil), Emails: notify.NewStore(db)}
}
