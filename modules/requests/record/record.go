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
)

// Row is a stored request as a status shows it: progress and deadline,
// never the subject.
type Row struct {
	ID             string
	Type           string
	State          State
	SubmittedAt    time.Time
	ReceivedAt     time.Time
	DueAt          time.Time
	CompletedAt    *time.Time
	Attempts       int
	NextAttemptAt  time.Time
	LastErrorClass string
	UpdatedAt      time.Time
	// Client is the API client that submitted the request (requests.client).
	Client string
}

// DeletedReport says whether, when and why the report of a request was deleted.
type DeletedReport struct {
	ReportID  string
	Deleted   bool
	Reason    string
	DeletedAt time.Time
}
