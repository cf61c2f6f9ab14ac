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

	"github.com/gdpr-oss/gdpr/modules/event"
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
	// Closed counts requests an operator cancelled or denied: they pass no
	// further stage by design.
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

// Checker runs the check against the audit log and the requests tables.
type Checker struct {
	db *gorm.DB
}

// New returns a checker over db.
func New(db *gorm.DB) *Checker { return &Checker{db: db} }

type requestRow struct {
	ID         string
	Type       string
	State      string
	ErrorClass string
	HasReport  bool
	EmailSent  bool
	NoEmail    bool
	HadEmail   bool
	SkipReason string
	Activity   time.Time
}

type auditRow struct {
	RequestID string
	Type      string
	Kind      string
	Last      time.Time
	First     time.Time
}

// track is what is known about one request.
type track struct {
	id       string
	kind     string
	state    string
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
	db := c.db.WithContext(ctx)
	var now time.Time
	// One clock: the database's, the same one every role stamps rows with.
	if err := db.Raw(`SELECT now()`).Scan(&now).Error; err != nil {
		return Result{}, fmt.Errorf("reading database clock: %w", err)
	}
	since := now.Add(-opts.Since)
	res := Result{CheckedAt: now.UTC(), Since: since.UTC(), Counts: map[string]map[string]int{}}

	var audits []auditRow
	err := db.Raw(`
		WITH ids AS (
			SELECT request_id AS id FROM audit_events
			WHERE type = ? AND occurred_at >= ? AND request_id <> ''
			UNION
			SELECT id::text FROM requests WHERE submitted_at >= ?
		)
		SELECT a.request_id, a.type, max(a.details->>'type') AS kind,
			max(a.occurred_at) AS last, min(a.occurred_at) AS first
		FROM audit_events a JOIN ids ON ids.id = a.request_id
		-- A receipt is not the email a request owes at its end.
		WHERE NOT (a.type = 'notification.sent' AND a.details->>'template' = 'request_received')
		GROUP BY a.request_id, a.type`,
		event.TypeRequestSubmitted, since, since).Scan(&audits).Error
	if err != nil {
		return Result{}, fmt.Errorf("reading audit stages: %w", err)
	}
	var rows []requestRow
	err = db.Raw(`
		WITH ids AS (
			SELECT request_id AS id FROM audit_events
			WHERE type = ? AND occurred_at >= ? AND request_id <> ''
			UNION
			SELECT id::text FROM requests WHERE submitted_at >= ?
		)
		SELECT r.id::text AS id, r.type, r.state, r.last_error_class AS error_class,
			EXISTS (SELECT 1 FROM reports p WHERE p.request_id = r.id) AS has_report,
			EXISTS (SELECT 1 FROM notifications n WHERE n.request_id = r.id AND n.state = 'sent' AND n.template <> 'request_received') AS email_sent,
			EXISTS (SELECT 1 FROM notifications n WHERE n.request_id = r.id AND n.state = 'skipped' AND n.template <> 'request_received') AS no_email,
			r.had_email,
			COALESCE((SELECT string_agg(DISTINCT n.reason, ',') FROM notifications n
				WHERE n.request_id = r.id AND n.state = 'skipped' AND n.template <> 'request_received'), '') AS skip_reason,
			GREATEST(r.received_at, r.updated_at, COALESCE(r.completed_at, r.received_at),
				COALESCE((SELECT max(GREATEST(a.started_at, COALESCE(a.finished_at, a.started_at)))
					FROM request_attempts a WHERE a.request_id = r.id), r.received_at)) AS activity
		FROM requests r JOIN ids ON ids.id = r.id::text`,
		event.TypeRequestSubmitted, since, since).Scan(&rows).Error
	if err != nil {
		return Result{}, fmt.Errorf("reading request stages: %w", err)
	}

	tracks := map[string]*track{}
	get := func(id string) *track {
		t, ok := tracks[id]
		if !ok {
			t = &track{id: id, reached: map[string]bool{}}
			tracks[id] = t
		}
		return t
	}
	for _, a := range audits {
		t := get(a.RequestID)
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
	for _, r := range rows {
		t := get(r.ID)
		t.kind, t.state, t.errClass = r.Type, r.State, r.ErrorClass
		// The row is the requests manager's own record of receipt.
		t.reached[StageReceived] = true
		// A report counts only while its row exists: report.ready in the
		// audit log with the report gone is exactly what this check is for.
		t.reached[StageReportGenerated] = r.HasReport
		// The notifier's own record counts as much as its event does.
		if r.EmailSent {
			t.reached[StageEmailSent] = true
		}
		t.noEmail = r.NoEmail && !t.reached[StageEmailSent]
		t.hadEmail, t.skipReason = r.HadEmail, r.SkipReason
		if r.State == "failed" {
			t.failed = true
		}
		if r.Activity.After(t.lastStamp) {
			t.lastStamp = r.Activity
		}
	}

	ids := make([]string, 0, len(tracks))
	for id := range tracks {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		t := tracks[id]
		kind := t.kind
		if kind == "" {
			kind = "unknown"
		}
		if res.Counts[kind] == nil {
			res.Counts[kind] = map[string]int{}
		}
		for _, s := range Stages() {
			if t.reached[s] {
				res.Counts[kind][s]++
			}
		}
		if t.state == "cancelled" || t.state == "denied" {
			res.Closed++
			continue
		}
		if t.failed {
			res.Failed = append(res.Failed, Failed{RequestID: id, Type: kind, ErrorClass: t.errClass})
			continue
		}
		missing := firstMissing(kind, t.reached)
		if missing == "" {
			continue
		}
		reason := ""
		if missing == StageEmailSent && t.noEmail {
			// An access whose subject was erased before the email went out
			// has nothing left to announce (docs/privacy.md).
			if !t.hadEmail || t.skipReason == "erased" {
				res.EmailSkipped++
				continue
			}
			// Submitted with an address, and the notifier gave up on it: no
			// later progress can bring the email, so it is out of sync now.
			reason = "email skipped: " + t.skipReason
		}
		idle := now.Sub(t.lastStamp)
		if reason == "" && idle <= opts.StuckAfter {
			res.InProgress++
			continue
		}
		var reached []string
		for _, s := range Stages() {
			if t.reached[s] {
				reached = append(reached, s)
			}
		}
		res.Stuck = append(res.Stuck, Stuck{RequestID: id, Type: kind, Missing: missing, Reached: reached, Reason: reason,
			Idle: idle, IdleSeconds: idle.Seconds(), State: t.state})
	}
	return res, nil
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
