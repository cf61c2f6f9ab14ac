// Package record holds the rows of the requests module that other modules
// name in their interfaces (intake's statuses and downloads), without the
// manager's dependencies: intake imports it, not requests, so that a module
// the notifier uses (selfservice) can use intake without an import cycle.
package record

import "time"

// State is the state of a request (requests.state); docs/requests.md draws
// the machine.
type State string

// Request states.
const (
	StateReceived   State = "received"
	StateProcessing State = "processing"
	StateHandedOver State = "handed_over"
	StateCompleted  State = "completed"
	StateFailed     State = "failed"
	// StateCancelled and StateDenied are ends an operator gives a request
	// (modules/officer): nothing more is done for it.
	StateCancelled State = "cancelled"
	StateDenied    State = "denied"
)

// Row is a stored request as a status shows it: progress and deadline,
// never the subject.
type Row struct {
	ID          string
	Type        string
	State       State
	SubmittedAt time.Time
	ReceivedAt  time.Time
	DueAt       time.Time
	// ExtendedUntil is the deadline an operator extended due_at to (GDPR
	// Art. 12(3)), nil when not extended; when set it is the one in force.
	ExtendedUntil  *time.Time
	CompletedAt    *time.Time
	Attempts       int
	NextAttemptAt  time.Time
	LastErrorClass string
	UpdatedAt      time.Time
	// Client is the API client that submitted the request (requests.client).
	Client string
}

// Deadline is the deadline in force: the extension when there is one,
// else due_at.
func (r Row) Deadline() time.Time {
	if r.ExtendedUntil != nil {
		return *r.ExtendedUntil
	}
	return r.DueAt
}

// DeletedReport says whether, when and why the report of a request was
// deleted, and what it holds.
type DeletedReport struct {
	ReportID  string
	Deleted   bool
	Reason    string
	DeletedAt time.Time
	// Contents lists the report's sources in archive order; empty for a
	// report stored before migration 083.
	Contents []ReportSource
}

// ReportSource is one source's part of a report: no personal data, only the
// source's name (its files are <name>.json and <name>.csv) and a count.
type ReportSource struct {
	Name string `json:"name"`
	Rows int64  `json:"rows"`
	// Skipped: the subject lacks an identifier the source needs, so it was
	// not read.
	Skipped bool `json:"skipped,omitempty"`
}
