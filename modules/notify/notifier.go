// Package notify emails data subjects when their report is ready or their
// data was deleted: an SMTP sender and the notifier that consumes
// report.ready and erasure.completed.
package notify

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"text/template"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/inbox"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// Consumer is the inbox name of the notifier.
const Consumer = "worker.notify"

// Queue is the queue the notifier consumes (without the prefix).
const Queue = "worker.notify"

// Bindings are the routing keys that reach Queue: the messages an email goes out on.
func Bindings() []string {
	return []string{event.TypeReportReady, event.TypeErasureCompleted, event.TypeRequestReceived, event.TypeRequestDenied, event.TypeRequestExtended}
}

// Template names (also the gdpr_emails_sent_total label).
const (
	TemplateReportReady      = "report_ready"
	TemplateErasureCompleted = "erasure_completed"
	// TemplateRequestReceived is the receipt, sent at once for the requests
	// that ask for one (the self-service page's); it is not the email a
	// request owes at its end.
	TemplateRequestReceived = "request_received"
	// TemplateRequestDenied tells the subject why an operator denied the
	// request and that they may complain to a supervisory authority (GDPR
	// Art. 12(4)); TemplateRequestExtended, that and why the deadline was
	// extended (Art. 12(3)).
	TemplateRequestDenied   = "request_denied"
	TemplateRequestExtended = "request_extended"
)

// Reasons of a skipped notification (notifications.reason).
const (
	// ReasonNoEmail: the request came without an address.
	ReasonNoEmail = "no_email"
	// ReasonScrubbed: the request came with an address that was blanked
	// before the email was recorded. Never by design; reconcile reports it.
	ReasonScrubbed = "scrubbed"
	// ReasonRejected: the SMTP server refused the address for good.
	ReasonRejected = "rejected"
	// ReasonErased: the subject's erasure completed before this email went
	// out and removed the address (and the report) from gdpr: there is
	// nothing left to tell them about. In sync (docs/privacy.md).
	ReasonErased = "erased"
)

// ErrInvalid marks a message that can never be handled.
var ErrInvalid = errors.New("notify: invalid message")

// errInFlight means another delivery of the same notification is sending
// right now (or died doing so less than ResendAfter ago).
var errInFlight = errors.New("notify: notification is being sent")

//go:embed templates
var templateFS embed.FS

// Sender delivers one email.
type Sender interface {
	Send(ctx context.Context, e Email) error
}

// Outbox enqueues a message inside the caller's transaction.
type Outbox interface {
	Enqueue(ctx context.Context, tx *gorm.DB, m message.Message) error
	// EnqueueSQL is Enqueue as a member of the caller's statement, written
	// only when guard holds (outbox.Store.EnqueueSQL).
	EnqueueSQL(m message.Message, guard string) (string, []any, error)
}

// Recipient is whom a request's email goes to.
type Recipient struct {
	// Email is empty when none was given or it was scrubbed.
	Email string
	// HadEmail: an address came with the request, even if scrubbed since.
	HadEmail bool
	// Erased: another request's erasure of the same subject removed it.
	Erased bool
	// Locale picks the templates; Kind is the request's type, DueAt its deadline.
	Locale string
	Kind   string
	DueAt  time.Time
}

// Requests is what the notifier needs of the requests module's table
// (requests.Store), always inside the notifier's own transaction tx.
type Requests interface {
	// Recipient returns the subject's address of request id; found is
	// false when no such request is stored.
	Recipient(ctx context.Context, tx *gorm.DB, id string) (r Recipient, found bool, err error)
	// LockFinished locks the request's row and reports whether it is completed.
	LockFinished(ctx context.Context, tx *gorm.DB, id string) (bool, error)
	// ForgetEmail blanks the subject's address.
	ForgetEmail(ctx context.Context, tx *gorm.DB, id string) error
}

// LinkFunc returns the signed download link of a request's report and
// when it expires.
type LinkFunc func(requestID string, now time.Time) (link string, expires time.Time, err error)

// Options tune the notifier.
type Options struct {
	// ResendAfter: a 'sending' row older than this is from a delivery that
	// died between the SMTP conversation and its commit; it is sent again.
	ResendAfter time.Duration
	// MessageIDDomain is the right-hand side of generated Message-IDs.
	MessageIDDomain string
	// StatusLink returns a request's status page link for the receipt;
	// nil sends no receipts.
	StatusLink LinkFunc
	// TemplateDir overrides shipped templates with
	// <dir>/email/<locale>/<template>.tmpl (privacy.template_dir).
	TemplateDir string
	// DefaultLocale is the language of a request that named none (or one not shipped).
	DefaultLocale string
}

// Notifier handles report.ready and erasure.completed.
type Notifier struct {
	db       *gorm.DB
	requests Requests
	outbox   Outbox
	sender   Sender
	link     LinkFunc
	cfg      Options
	logger   *slog.Logger
	// templates are keyed "<locale>/<template>".
	templates map[string]*template.Template
	sent      *prometheus.CounterVec
}

// New returns a notifier.
func New(db *gorm.DB, reqs Requests, outbox Outbox, sender Sender, link LinkFunc, cfg Options, logger *slog.Logger, reg prometheus.Registerer) (*Notifier, error) {
	n := &Notifier{
		db: db, requests: reqs, outbox: outbox, sender: sender, link: link, cfg: cfg,
		logger: logger.With("component", "notify"),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_emails_sent_total", Help: "Emails accepted by the SMTP server.",
		}, []string{"template"}),
	}
	if n.cfg.MessageIDDomain == "" {
		n.cfg.MessageIDDomain = "gdpr.invalid"
	}
	if n.cfg.DefaultLocale == "" {
		n.cfg.DefaultLocale = selfservice.LocaleEnglish
	}
	templates, err := selfservice.ParseEmailTemplates(templateFS, "templates", cfg.TemplateDir,
		TemplateReportReady, TemplateErasureCompleted, TemplateRequestReceived, TemplateRequestDenied, TemplateRequestExtended)
	if err != nil {
		return nil, err
	}
	n.templates = templates
	if reg != nil {
		if err := reg.Register(n.sent); err != nil {
			return nil, fmt.Errorf("registering notifier metrics: %w", err)
		}
	}
	return n, nil
}

// Handle is the bus handler of the worker.notify queue.
func (n *Notifier) Handle(ctx context.Context, msg message.Message) error {
	err := n.handle(ctx, msg)
	if errors.Is(err, ErrInvalid) {
		return message.Permanent(err)
	}
	return err
}

type notification struct {
	key, requestID, template string
	// The operator's decision, for the denial and extension emails.
	code, reason, regulation string
	until                    time.Time
}

// recipient is what the requests row says about the email to write.
type recipient struct {
	email, locale, kind string
	dueAt               time.Time
}

func (n *Notifier) handle(ctx context.Context, msg message.Message) error {
	var nt notification
	switch msg.Type {
	case event.TypeReportReady:
		var ev event.ReportReady
		if err := msg.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if ev.ReportID == "" {
			return fmt.Errorf("%w: report_id is empty", ErrInvalid)
		}
		nt = notification{key: TemplateReportReady + ":" + ev.ReportID, requestID: ev.RequestID, template: TemplateReportReady}
	case event.TypeErasureCompleted:
		var ev event.ErasureCompleted
		if err := msg.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		nt = notification{key: TemplateErasureCompleted + ":" + ev.RequestID, requestID: ev.RequestID, template: TemplateErasureCompleted}
	case event.TypeRequestDenied:
		var ev event.RequestDenied
		if err := msg.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		nt = notification{key: TemplateRequestDenied + ":" + ev.RequestID, requestID: ev.RequestID, template: TemplateRequestDenied,
			code: ev.Code, reason: ev.Reason, regulation: ev.Regulation}
	case event.TypeRequestExtended:
		var ev event.RequestExtended
		if err := msg.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		nt = notification{key: TemplateRequestExtended + ":" + ev.RequestID, requestID: ev.RequestID, template: TemplateRequestExtended,
			reason: ev.Reason, regulation: ev.Regulation, until: ev.ExtendedUntil.UTC()}
	case event.TypeRequestReceived:
		var ev event.RequestReceived
		if err := msg.Decode(&ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		nt = notification{key: TemplateRequestReceived + ":" + ev.RequestID, requestID: ev.RequestID, template: TemplateRequestReceived}
	default:
		return fmt.Errorf("%w: unexpected type %q", ErrInvalid, msg.Type)
	}
	if _, err := uuid.Parse(nt.requestID); err != nil {
		return fmt.Errorf("%w: request_id is not a UUID", ErrInvalid)
	}

	to, messageID, send, err := n.begin(ctx, msg, nt)
	if err != nil || !send {
		return err
	}
	e, err := n.render(nt, to, messageID)
	if err != nil {
		return err
	}
	if err := n.sender.Send(ctx, e); err != nil {
		if errors.Is(err, ErrRejected) {
			n.logger.WarnContext(ctx, "email rejected by the SMTP server; not retried", "request_id", nt.requestID, "template", nt.template)
			return n.finish(ctx, msg, nt, StateSkipped, ReasonRejected)
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			// The server may have accepted it: like a crash after the SMTP
			// conversation, the row stays 'sending' until ResendAfter.
			return fmt.Errorf("sending %s email for %s: %w", nt.template, nt.requestID, err)
		}
		// Nothing was accepted: let the redelivery send at once, and say
		// so, so that it is not taken for a send whose outcome is unknown.
		_ = n.db.WithContext(context.WithoutCancel(ctx)).Exec(
			`UPDATE notifications SET updated_at = 'epoch', reason = 'send_failed' WHERE key = ? AND state = ?`, nt.key, StateSending).Error
		return fmt.Errorf("sending %s email for %s: %w", nt.template, nt.requestID, err)
	}
	n.sent.WithLabelValues(nt.template).Inc()
	return n.finish(ctx, msg, nt, StateSent, "")
}

// begin records the send as 'sending' before the SMTP conversation. It
// returns send=false when there is nothing to send: sent before, skipped,
// or the subject has no email address.
func (n *Notifier) begin(ctx context.Context, msg message.Message, nt notification) (to recipient, messageID string, send bool, err error) {
	if nt.template == TemplateRequestReceived {
		// Only requests that asked for a receipt get one; the others (most)
		// leave no notification row and no inbox record, in one statement
		// and no transaction: nothing is owed and nothing happens, so a
		// redelivery decides the same again.
		owed, err := n.receiptOwed(ctx, nt.requestID)
		if err != nil || !owed {
			return recipient{}, "", false, err
		}
	} else {
		var first bool
		if to, messageID, first, err = n.beginFirst(ctx, nt); err != nil || first {
			return to, messageID, first, err
		}
	}
	err = n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var row struct {
			State     State
			MessageID string
			Reason    string
			Stale     bool
		}
		res := tx.Raw(`SELECT state, message_id, reason, updated_at < now() - ?::interval AS stale
			FROM notifications WHERE key = ? FOR UPDATE`, n.cfg.ResendAfter.String(), nt.key).Scan(&row)
		if res.Error != nil {
			return fmt.Errorf("loading notification %s: %w", nt.key, res.Error)
		}
		found := res.RowsAffected > 0
		if found {
			switch {
			case row.State != StateSending:
				// Sent or skipped before: only the inbox record is missing.
				_, err := inbox.Claim(ctx, tx, Consumer, msg.ID)
				return err
			case !row.Stale:
				return errInFlight
			}
			if row.Reason == "send_failed" {
				// The last send failed without the server accepting it.
				n.logger.InfoContext(ctx, "retrying an email whose send failed", "request_id", nt.requestID, "template", nt.template)
			} else {
				// A delivery died between SMTP and commit. Send again, with
				// the same Message-ID so the duplicate (if the first one went
				// out) is identifiable: losing a legally required email is worse.
				n.logger.WarnContext(ctx, "resending an email whose outcome is unknown", "request_id", nt.requestID, "template", nt.template)
			}
			messageID = row.MessageID
			if err := tx.Exec(`UPDATE notifications SET sends = sends + 1, reason = '', updated_at = now() WHERE key = ?`, nt.key).Error; err != nil {
				return fmt.Errorf("marking notification %s sending: %w", nt.key, err)
			}
		} else {
			messageID = strings.ReplaceAll(nt.template, "_", "-") + "." + nt.requestID + "@" + n.cfg.MessageIDDomain
		}
		rcpt, stored, err := n.requests.Recipient(ctx, tx, nt.requestID)
		if err != nil {
			return err
		}
		if !stored {
			return fmt.Errorf("%w: no request %s", ErrInvalid, nt.requestID)
		}
		to = recipient{email: rcpt.Email, locale: rcpt.Locale, kind: rcpt.Kind, dueAt: rcpt.DueAt.UTC()}
		if to.email == "" {
			// Only an id was given: nobody to write to. An address that was
			// given and is gone means the row was scrubbed before its email
			// was recorded; the in-sync check reports that request.
			reason := ReasonNoEmail
			switch {
			case rcpt.Erased:
				reason = ReasonErased
				n.logger.InfoContext(ctx, "email not sent: the subject was erased meanwhile", "request_id", nt.requestID, "template", nt.template)
			case rcpt.HadEmail:
				reason = ReasonScrubbed
				n.logger.ErrorContext(ctx, "the address of a request was scrubbed before its email was sent", "request_id", nt.requestID, "template", nt.template)
			}
			if _, err := inbox.Claim(ctx, tx, Consumer, msg.ID); err != nil {
				return err
			}
			return tx.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, reason)
				VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, updated_at = now()`,
				nt.key, nt.requestID, nt.template, messageID, StateSkipped, reason).Error
		}
		if !found {
			res = tx.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, sends)
				VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (key) DO NOTHING`,
				nt.key, nt.requestID, nt.template, messageID, StateSending)
			if res.Error != nil {
				return fmt.Errorf("recording notification %s sending: %w", nt.key, res.Error)
			}
			if res.RowsAffected == 0 {
				// Another delivery of the same email (a redelivery after a
				// connection loss, a second publish) wrote the row after our
				// SELECT found none: it is the one sending.
				return errInFlight
			}
		}
		send = true
		return nil
	})
	return to, messageID, send, err
}

// receiptOwed reports whether the request asked for a receipt that this
// notifier can write (it has a status link to put in it).
func (n *Notifier) receiptOwed(ctx context.Context, requestID string) (bool, error) {
	if n.cfg.StatusLink == nil {
		return false, nil
	}
	var receipt bool
	if err := n.db.WithContext(ctx).Raw(`SELECT receipt FROM requests WHERE id = ?`, requestID).Scan(&receipt).Error; err != nil {
		return false, fmt.Errorf("loading request %s: %w", requestID, err)
	}
	return receipt, nil
}

// beginFirst is begin for the common case, the first delivery of an email
// to an address, in two statements and no transaction of its own: the
// address, then the 'sending' row inserted if no row exists. Each is atomic
// alone and nothing in between needs a lock: the insert decides, as the
// transaction's insert did, which delivery sends. first=false (an address
// is missing, or a row exists: sent, skipped, in flight or stale) leaves
// the decision to begin's transaction.
func (n *Notifier) beginFirst(ctx context.Context, nt notification) (to recipient, messageID string, first bool, err error) {
	rcpt, stored, err := n.requests.Recipient(ctx, n.db, nt.requestID)
	if err != nil || !stored || rcpt.Email == "" {
		return recipient{}, "", false, err
	}
	messageID = strings.ReplaceAll(nt.template, "_", "-") + "." + nt.requestID + "@" + n.cfg.MessageIDDomain
	res := n.db.WithContext(ctx).Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, sends)
		VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (key) DO NOTHING`,
		nt.key, nt.requestID, nt.template, messageID, StateSending)
	if res.Error != nil {
		return recipient{}, "", false, fmt.Errorf("recording notification %s sending: %w", nt.key, res.Error)
	}
	if res.RowsAffected == 0 {
		return recipient{}, "", false, nil
	}
	return recipient{email: rcpt.Email, locale: rcpt.Locale, kind: rcpt.Kind, dueAt: rcpt.DueAt.UTC()}, messageID, true, nil
}

// finish marks the notification done, records the message in the inbox and
// enqueues notification.sent, in one transaction. For the "deleted" email it
// also blanks the address of an erasure that finished while the email was
// on its way: the requests manager leaves the address on the row until the
// email is recorded (requests.Manager.finishErasure), so whichever of the two
// commits second scrubs it.
func (n *Notifier) finish(ctx context.Context, msg message.Message, nt notification, state State, reason string) error {
	ctx = context.WithoutCancel(ctx)
	if state == StateSent && nt.template != TemplateErasureCompleted && nt.template != TemplateRequestDenied {
		return n.finishSent(ctx, msg, nt)
	}
	return n.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		finished := false
		if nt.template == TemplateErasureCompleted {
			// Locked before the notification changes, as finishErasure does:
			// otherwise both could commit without seeing the other and leave
			// the address on a finished erasure.
			var err error
			if finished, err = n.requests.LockFinished(ctx, tx, nt.requestID); err != nil {
				return err
			}
		}
		if _, err := inbox.Claim(ctx, tx, Consumer, msg.ID); err != nil {
			return err
		}
		res := tx.Exec(`UPDATE notifications SET state = ?, reason = ?, updated_at = now(),
			sent_at = CASE WHEN ? THEN now() END WHERE key = ? AND state = ?`, state, reason, state == StateSent, nt.key, StateSending)
		if res.Error != nil {
			return fmt.Errorf("recording notification %s: %w", nt.key, res.Error)
		}
		// A denied request keeps its address only for its denial email.
		if finished || (nt.template == TemplateRequestDenied && state == StateSent) {
			if err := n.requests.ForgetEmail(ctx, tx, nt.requestID); err != nil {
				return err
			}
		}
		if res.RowsAffected == 0 || state != StateSent {
			return nil
		}
		out, err := sentEvent(msg, nt)
		if err != nil {
			return err
		}
		if err := n.outbox.Enqueue(ctx, tx, out); err != nil {
			return err
		}
		n.logger.InfoContext(ctx, "email sent", "request_id", nt.requestID, "template", nt.template)
		return nil
	})
}

// finishSent is finish for the common case, a sent email whose request
// keeps its address (neither an erasure's nor a denial's), as one statement,
// atomic without a transaction: the inbox record, the 'sent' row and
// notification.sent, enqueued only when this delivery moved the row from
// 'sending' (as finish's transaction does), in one round trip instead of
// five (BEGIN and COMMIT are round trips too).
func (n *Notifier) finishSent(ctx context.Context, msg message.Message, nt notification) error {
	out, err := sentEvent(msg, nt)
	if err != nil {
		return err
	}
	inboxSQL, args := inbox.ClaimSQL(Consumer, msg.ID)
	outSQL, outArgs, err := n.outbox.EnqueueSQL(out, "EXISTS (SELECT 1 FROM done)")
	if err != nil {
		return err
	}
	args = append(args, StateSent, nt.key, StateSending)
	args = append(args, outArgs...)
	var done int
	if err := n.db.WithContext(ctx).Raw(`WITH claimed AS (`+inboxSQL+`),
		done AS (
			UPDATE notifications SET state = ?, reason = '', updated_at = now(), sent_at = now()
			WHERE key = ? AND state = ? RETURNING 1),
		queued AS (`+outSQL+`)
		SELECT count(*) FROM done`, args...).Scan(&done).Error; err != nil {
		return fmt.Errorf("recording notification %s: %w", nt.key, err)
	}
	if done > 0 {
		n.logger.InfoContext(ctx, "email sent", "request_id", nt.requestID, "template", nt.template)
	}
	return nil
}

// sentEvent is notification.sent for nt, caused by msg.
func sentEvent(msg message.Message, nt notification) (message.Message, error) {
	out, err := message.New(event.TypeNotificationSent, event.NotificationSent{RequestID: nt.requestID, Template: nt.template}, &msg)
	if err != nil {
		return message.Message{}, err
	}
	out.CorrelationID = nt.requestID
	return out, nil
}

type templateData struct {
	RequestID string
	// Type is access or erasure.
	Type      string
	Link      string
	ExpiresAt time.Time
	// DueAt is the legal deadline (the receipt states it).
	DueAt time.Time
	// Denial and extension.
	Code, Reason, Regulation, Authority string
	Until                               time.Time
}

func denialText(code string) string {
	switch code {
	case event.DenialManifestlyUnfounded:
		return "the request is manifestly unfounded"
	case event.DenialExcessive:
		return "the request is excessive, in particular because it repeats earlier ones"
	case event.DenialIdentityNotVerified:
		return "we could not verify your identity"
	}
	return "another reason, explained below"
}

func authority(regulation string) string {
	switch regulation {
	case "ccpa":
		return "the California Privacy Protection Agency (cppa.ca.gov) or the California Attorney General"
	case "lgpd":
		return "the Autoridade Nacional de Proteção de Dados (ANPD)"
	}
	return "a data protection supervisory authority, in particular in the EU member state where you live, work or where the alleged infringement took place (GDPR Art. 77), and to seek a judicial remedy (Art. 79)"
}

func (n *Notifier) render(nt notification, to recipient, messageID string) (Email, error) {
	reg := nt.regulation
	if reg == "" {
		reg = "gdpr"
	}
	data := templateData{RequestID: nt.requestID, Type: to.kind, DueAt: to.dueAt, Code: denialText(nt.code), Reason: nt.reason,
		Until: nt.until, Regulation: strings.ToUpper(reg), Authority: authority(nt.regulation)}
	switch nt.template {
	case TemplateReportReady:
		link, expires, err := n.link(nt.requestID, time.Now())
		if err != nil {
			return Email{}, fmt.Errorf("making the download link of %s: %w", nt.requestID, err)
		}
		data.Link, data.ExpiresAt = link, expires.UTC()
	case TemplateRequestReceived:
		link, expires, err := n.cfg.StatusLink(nt.requestID, time.Now())
		if err != nil {
			return Email{}, fmt.Errorf("making the status link of %s: %w", nt.requestID, err)
		}
		data.Link, data.ExpiresAt = link, expires.UTC()
	}
	locale := selfservice.Supported(to.locale)
	if locale == "" {
		locale = n.cfg.DefaultLocale
	}
	t := n.templates[locale+"/"+nt.template]
	var subject, body bytes.Buffer
	if err := t.ExecuteTemplate(&subject, "subject", data); err != nil {
		return Email{}, fmt.Errorf("rendering %s subject: %w", nt.template, err)
	}
	if err := t.ExecuteTemplate(&body, "body", data); err != nil {
		return Email{}, fmt.Errorf("rendering %s body: %w", nt.template, err)
	}
	return Email{
		To: to.email, Subject: subject.String(), Body: strings.TrimLeft(body.String(), "\n"), MessageID: messageID,
		Headers: map[string]string{"X-GDPR-Request-ID": nt.requestID, "X-GDPR-Template": nt.template},
	}, nil
}

// DeleteRecords deletes up to limit notification rows created before cutoff
// whose request's record is gone already (retention.record_for), and
// returns their keys. The rows hold no personal data; they go with the
// record they belong to.
func DeleteRecords(ctx context.Context, db *gorm.DB, cutoff time.Time, limit int, dryRun bool) ([]string, error) {
	const due = `SELECT key FROM notifications n WHERE created_at < ?
		AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.id = n.request_id)
		ORDER BY created_at LIMIT ?`
	var keys []string
	var err error
	if dryRun {
		err = db.WithContext(ctx).Raw(due, cutoff, limit).Scan(&keys).Error
	} else {
		err = db.WithContext(ctx).Raw(`WITH due AS (`+due+` FOR UPDATE OF n SKIP LOCKED)
			DELETE FROM notifications n USING due WHERE n.key = due.key RETURNING n.key`, cutoff, limit).Scan(&keys).Error
	}
	if err != nil {
		return nil, fmt.Errorf("deleting notification records: %w", err)
	}
	return keys, nil
}
