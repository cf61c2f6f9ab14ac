// Package event is the contract of every message on the bus: its type (the
// routing key) and its JSON body. Producers and consumers in every module use
// these, so a field renamed in one place is renamed for all.
package event

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// Message types. Commands to one participant are routed with
// TypeErasureCommand + "." + participant name.
const (
	TypeRequestSubmitted = "request.submitted"
	TypeRequestReceived  = "request.received"
	TypeRequestFailed    = "request.failed"
	TypeReportReady      = "report.ready"
	TypeNotificationSent = "notification.sent"

	TypeErasureRequested = "erasure.requested"
	TypeErasureCommand   = "erasure.command"
	TypeErasureConfirmed = "erasure.confirmed"
	TypeErasureOverdue   = "erasure.overdue"
	// TypeErasureCalled: the canceller called an HTTP participant; the
	// call's result, as erasure.confirmed is an AMQP participant's. Only the
	// audit log consumes it.
	TypeErasureCalled = "erasure.called"
	// TypeErasureCompleted: every participant but the email system confirmed;
	// the "your data was deleted" email goes out on it.
	TypeErasureCompleted = "erasure.completed"
	// TypeErasureFinished: the email system confirmed too; the request is completed.
	TypeErasureFinished = "erasure.finished"

	// TypeRequestDenied and TypeRequestExtended: an operator denied a
	// request or extended its deadline; the notifier emails the subject.
	TypeRequestDenied   = "request.denied"
	TypeRequestExtended = "request.extended"
	// TypeOperatorAction: an operator acted on a request (modules/officer);
	// the audit log's record of who did what, and why (a reason code).
	TypeOperatorAction = "operator.action"

	TypeSchedulerSchedule = "scheduler.schedule"
	TypeSchedulerCancel   = "scheduler.cancel"
)

// Request kinds.
const (
	KindAccess  = "access"
	KindErasure = "erasure"
)

// Subject identifies a data subject. At least one field is set. It is
// personal data: it travels in message bodies, never in logs or labels.
// Phone and Identifiers were added to protocol v1 additively (docs/
// protocol.md, Versioning): they are omitted when empty, so a subject known
// only by id and email is the same JSON as before.
type Subject struct {
	ID    string `json:"id,omitempty"`
	Email string `json:"email,omitempty"`
	// Phone is an E.164 number ("+4915112345678"), normalised by intake.
	Phone string `json:"phone,omitempty"`
	// Identifiers are the operator's named identifiers (serve.identifiers),
	// such as a loyalty card number: name → value.
	Identifiers map[string]string `json:"identifiers,omitempty"`
}

// Empty reports whether s identifies nobody.
func (s Subject) Empty() bool {
	return s.ID == "" && s.Email == "" && s.Phone == "" && len(s.Identifiers) == 0
}

// IdentifierPlaceholder is the placeholder name of the named identifier
// name in source and participant templates: {identifier.<name>}.
func IdentifierPlaceholder(name string) string { return "identifier." + name }

// PlaceholderValues maps every placeholder name of s's identifiers
// (besides those a caller names itself, such as subject_id) to its value:
// "phone" and "identifier.<name>".
func (s Subject) PlaceholderValues() map[string]string {
	out := make(map[string]string, 1+len(s.Identifiers))
	if s.Phone != "" {
		out["phone"] = s.Phone
	}
	for n, v := range s.Identifiers {
		out[IdentifierPlaceholder(n)] = v
	}
	return out
}

// Verification methods the service itself uses; API callers may name others.
const (
	// VerificationEmail: the subject proved the address with an emailed
	// code or signed link (the self-service page).
	VerificationEmail = "email"
	// VerificationSession: the subject was logged in to the caller's app.
	VerificationSession = "session"
	// VerificationDocument: the caller checked an identity document.
	VerificationDocument = "document"
)

// Verification says how the data subject was verified and when. It holds
// no personal data (the audit log records it).
type Verification struct {
	Method     string    `json:"method"`
	VerifiedAt time.Time `json:"verified_at"`
}

// RequestSubmitted is published by serve once a request is accepted.
// The message's CorrelationID equals RequestID.
type RequestSubmitted struct {
	RequestID   string    `json:"request_id"`
	Type        string    `json:"type"`
	Subject     Subject   `json:"subject"`
	SubmittedAt time.Time `json:"submitted_at"`
	// Regulation is the law whose clock the request runs on (gdpr, ccpa,
	// lgpd; empty is gdpr): modules/deadline.
	Regulation string `json:"regulation,omitempty"`
	// Verification is how the subject was verified, if the submitter said.
	Verification *Verification `json:"verification,omitempty"`
	// Locale is the language of the subject's emails ("" is the default).
	Locale string `json:"locale,omitempty"`
	// Receipt asks for a receipt email once the request is stored (the
	// self-service page's requests).
	Receipt bool `json:"receipt,omitempty"`
	// Client is the name of the API client that submitted the request
	// (serve.api_clients, or the self-service page's "privacy-page"); only
	// it may read the request's status (requests.client).
	Client string `json:"client,omitempty"`
}

// RequestReceived is published by the requests manager once it stored a request.
type RequestReceived struct {
	RequestID string `json:"request_id"`
	Type      string `json:"type"`
	// VerificationMethod and VerifiedAt say how the subject was verified
	// (flat, so that the audit log, which keeps only scalars, records them).
	VerificationMethod string     `json:"verification_method,omitempty"`
	VerifiedAt         *time.Time `json:"verified_at,omitempty"`
}

// RequestFailed is published when a request exhausted its attempts.
type RequestFailed struct {
	RequestID  string `json:"request_id"`
	Attempts   int    `json:"attempts"`
	ErrorClass string `json:"error_class"`
}

// ReportReady is published once an access report is stored whole.
type ReportReady struct {
	RequestID string    `json:"request_id"`
	ReportID  string    `json:"report_id"`
	Bytes     int64     `json:"bytes"`
	SHA256    string    `json:"sha256"`
	ReadyAt   time.Time `json:"ready_at"`
}

// NotificationSent is published by the notifier after an email went out.
type NotificationSent struct {
	RequestID string `json:"request_id"`
	// Template is report_ready or erasure_completed.
	Template string `json:"template"`
}

// ErasureRequested hands an erasure from the requests manager to the canceller.
type ErasureRequested struct {
	RequestID string  `json:"request_id"`
	Subject   Subject `json:"subject"`
}

// ErasureCommand asks one participant to erase a subject (protocol v1).
type ErasureCommand struct {
	Version     int     `json:"version"`
	RequestID   string  `json:"request_id"`
	Participant string  `json:"participant"`
	Subject     Subject `json:"subject"`
	Attempt     int     `json:"attempt"`
}

// Confirmation outcomes.
const (
	OutcomeErased   = "erased"
	OutcomeNotFound = "not_found"
	OutcomeFailed   = "failed"
	// OutcomeCannotErase: the participant cannot look the subject up by the
	// identifiers the command holds (one that finds people by id, handed
	// only an email). Unlike not_found it does not count as done: the
	// erasure waits for an operator, and the person is not told their data
	// was deleted.
	OutcomeCannotErase = "cannot_erase"
)

// ErasureConfirmed is a participant's answer to an ErasureCommand.
type ErasureConfirmed struct {
	Version     int    `json:"version"`
	RequestID   string `json:"request_id"`
	Participant string `json:"participant"`
	Outcome     string `json:"outcome"`
	Detail      string `json:"detail,omitempty"`
	// Attempt echoes the command's attempt, so a late "failed" for an older
	// attempt does not trigger another re-send. Optional.
	Attempt int `json:"attempt,omitempty"`
}

// ErasureCalled is the result of one call to an HTTP participant. It holds
// no personal data: a status code or an error class, never a response body.
type ErasureCalled struct {
	RequestID   string `json:"request_id"`
	Participant string `json:"participant"`
	Attempt     int    `json:"attempt"`
	// Outcome is erased, not_found or failed (retried or refused for good:
	// the participant's state in the status API tells which).
	Outcome string `json:"outcome"`
	// HTTPStatus is the answer's status code, 0 when none came.
	HTTPStatus int `json:"http_status,omitempty"`
	// ErrorClass says why no answer came: timeout, network_error or bad_url.
	ErrorClass string `json:"error_class,omitempty"`
}

// ErasureOverdue is published when a participant stayed silent after every re-send.
type ErasureOverdue struct {
	RequestID   string `json:"request_id"`
	Participant string `json:"participant"`
}

// ErasureCompleted is published when every participant except the email system confirmed.
type ErasureCompleted struct {
	RequestID string `json:"request_id"`
}

// ErasureFinished is published when the email system confirmed as well.
type ErasureFinished struct {
	RequestID string `json:"request_id"`
}

// Denial reason codes (GDPR Art. 12(5), 12(2), 12(6)).
const (
	DenialManifestlyUnfounded = "manifestly_unfounded"
	DenialExcessive           = "excessive"
	DenialIdentityNotVerified = "identity_not_verified"
	DenialOther               = "other"
)

// DenialCodes lists the reason codes a denial may carry.
func DenialCodes() []string {
	return []string{DenialManifestlyUnfounded, DenialExcessive, DenialIdentityNotVerified, DenialOther}
}

// RequestDenied is published when an operator denied a request. Reason is
// the operator's text for the subject: the audit log drops it.
type RequestDenied struct {
	RequestID  string `json:"request_id"`
	Code       string `json:"code"`
	Reason     string `json:"reason"`
	Regulation string `json:"regulation"`
}

// RequestExtended is published when an operator extended a request's
// deadline. Reason is the operator's text for the subject: the audit log
// drops it.
type RequestExtended struct {
	RequestID     string    `json:"request_id"`
	ExtendedUntil time.Time `json:"extended_until"`
	Reason        string    `json:"reason"`
	Regulation    string    `json:"regulation"`
}

// OperatorAction records an operator's action on a request: the operator's
// configured name (staff, not a data subject), the action, a reason code,
// never free text.
type OperatorAction struct {
	RequestID   string `json:"request_id,omitempty"`
	Participant string `json:"participant,omitempty"`
	Operator    string `json:"operator"`
	Action      string `json:"action"`
	ReasonCode  string `json:"reason_code,omitempty"`
}

// SchedulerSchedule asks the scheduler to publish a message at DeliverAt.
type SchedulerSchedule struct {
	Key        string            `json:"key"`
	DeliverAt  time.Time         `json:"deliver_at"`
	Exchange   string            `json:"exchange,omitempty"`
	RoutingKey string            `json:"routing_key"`
	Headers    map[string]string `json:"headers,omitempty"`
	Body       []byte            `json:"body"`
	// Type is the published message's type; empty means RoutingKey.
	Type string `json:"type,omitempty"`
}

// SchedulerCancel asks the scheduler to drop a pending message.
type SchedulerCancel struct {
	Key string `json:"key"`
}

// Identifier limits: generous for real ids and addresses, small enough that
// a key or a log of sizes stays bounded.
const (
	MaxSubjectIDLen = 256
	MaxEmailLen     = 254 // RFC 5321 path limit
)

// IdentifierProblem says why v cannot be a subject identifier of at most
// maxLen bytes, or returns "" when it can. An identifier fills a path
// segment, a query value or a JSON string of a call to a source or a
// participant, and is shown to operators: so it must not be empty, "." or
// ".." (dot segments walk out of a URL path), and must not contain control
// characters, whitespace, or invisible format characters (Unicode category
// Cf: U+200B, U+202E, U+FEFF, ...) that would make two different ids look
// alike. It must be valid UTF-8.
func IdentifierProblem(v string, maxLen int) string {
	switch {
	case v == "":
		return "must not be empty"
	case v == "." || v == "..":
		return `must not be "." or ".."`
	case len(v) > maxLen:
		return fmt.Sprintf("must be at most %d bytes", maxLen)
	case !utf8.ValidString(v):
		return "must be valid UTF-8"
	}
	for _, r := range v {
		switch {
		case unicode.IsControl(r):
			return "must not contain control characters"
		case unicode.Is(unicode.Cf, r):
			return "must not contain invisible format characters (Unicode Cf)"
		case unicode.IsSpace(r) || unicode.In(r, unicode.Zs, unicode.Zl, unicode.Zp):
			return "must not contain whitespace"
		}
	}
	return ""
}

// InvalidSubjectError names the subject field (subject.id, subject.email)
// that breaks the identifier rules.
type InvalidSubjectError struct {
	Field, Problem string
}

func (e *InvalidSubjectError) Error() string { return e.Field + " " + e.Problem }

// Check applies IdentifierProblem to each identifier present and requires
// at least one. It is run where a subject enters (intake) and again where
// messages carrying one are received, since those can come from elsewhere.
func (s Subject) Check() error {
	if s.Empty() {
		return &InvalidSubjectError{Field: "subject", Problem: "needs at least one of id, email, phone or identifiers"}
	}
	if s.Phone != "" {
		if p := IdentifierProblem(s.Phone, 16); p != "" {
			return &InvalidSubjectError{Field: "subject.phone", Problem: p}
		}
	}
	for n, v := range s.Identifiers {
		if p := IdentifierProblem(v, MaxSubjectIDLen); p != "" {
			return &InvalidSubjectError{Field: "subject.identifiers." + n, Problem: p}
		}
	}
	if s.ID != "" {
		if p := IdentifierProblem(s.ID, MaxSubjectIDLen); p != "" {
			return &InvalidSubjectError{Field: "subject.id", Problem: p}
		}
	}
	if s.Email != "" {
		if p := IdentifierProblem(s.Email, MaxEmailLen); p != "" {
			return &InvalidSubjectError{Field: "subject.email", Problem: p}
		}
	}
	return nil
}
