package notify_test

import (
	"context"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

type env struct {
	db   *gorm.DB
	mail *testkit.Mailpit
	n    *notify.Notifier
	reg  *prometheus.Registry
}

func smtpConfig(mp *testkit.Mailpit) notify.Config {
	c := notify.DefaultConfig()
	c.SMTPHost, c.SMTPPort = mp.SMTPHost, mp.SMTPPort
	c.Timeout = 5 * time.Second
	return c
}

func link(id string, now time.Time) (string, time.Time, error) {
	return "https://privacy.example.com/v1/requests/" + id + "/report?token=t", now.Add(time.Hour), nil
}

func newEnv(t *testing.T, sender notify.Sender, resendAfter time.Duration) *env {
	t.Helper()
	gdb, _ := testkit.Postgres(t)
	mp := testkit.StartMailpit(t)
	if sender == nil {
		sender = notify.NewSMTP(smtpConfig(mp))
	}
	reg := prometheus.NewRegistry()
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), sender, link,
		notify.Options{ResendAfter: resendAfter, MessageIDDomain: "test.invalid"}, testkit.Logger(t), reg)
	require.NoError(t, err)
	return &env{db: gdb, mail: mp, n: n, reg: reg}
}

func (e *env) request(t *testing.T, typ, email string) string {
	t.Helper()
	id := uuid.NewString()
	require.NoError(t, e.db.Exec(`INSERT INTO requests (id, type, state, subject_id, subject_email, submitted_at, due_at)
		VALUES (?, ?, 'completed', 's', ?, now(), now() + interval '1 month')`, id, typ, email).Error)
	return id
}

func reportReady(t *testing.T, id string) message.Message {
	m, err := message.New(event.TypeReportReady, event.ReportReady{RequestID: id, ReportID: "rep-" + id, Bytes: 1, SHA256: "x"}, nil)
	require.NoError(t, err)
	m.CorrelationID = id
	return m
}

func (e *env) sentEvents(t *testing.T, id string) int {
	var n int
	require.NoError(t, e.db.Raw(`SELECT count(*) FROM outbox_messages WHERE type = ? AND correlation_id = ?`, event.TypeNotificationSent, id).Scan(&n).Error)
	return n
}

func TestReportReadySendsOneEmailWithLink(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	id := e.request(t, event.KindAccess, "ada@example.com")
	m := reportReady(t, id)
	require.NoError(t, e.n.Handle(t.Context(), m))
	require.NoError(t, e.n.Handle(t.Context(), m), "redelivery")
	dup := reportReady(t, id) // the same report announced under another message id
	require.NoError(t, e.n.Handle(t.Context(), dup))

	msgs, err := e.mail.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "ada@example.com", msgs[0].To[0].Address)
	require.Equal(t, "report-ready."+id+"@test.invalid", msgs[0].MessageID)
	raw, err := e.mail.Raw(t.Context(), msgs[0].ID)
	require.NoError(t, err)
	require.Contains(t, string(raw), "https://privacy.example.com/v1/requests/"+id+"/report?token=t")
	require.Equal(t, 1, e.sentEvents(t, id))
}

func TestErasureCompletedSendsDeletedEmail(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	id := e.request(t, event.KindErasure, "bob@example.com")
	m, err := message.New(event.TypeErasureCompleted, event.ErasureCompleted{RequestID: id}, nil)
	require.NoError(t, err)
	require.NoError(t, e.n.Handle(t.Context(), m))
	require.NoError(t, e.n.Handle(t.Context(), m))
	msgs, err := e.mail.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "Your personal data was deleted", msgs[0].Subject)
	require.Equal(t, 1, e.sentEvents(t, id))
}

func TestNoAddressIsSkipped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	id := e.request(t, event.KindAccess, "")
	require.NoError(t, e.n.Handle(t.Context(), reportReady(t, id)))
	n, err := e.mail.Count(t.Context())
	require.NoError(t, err)
	require.Zero(t, n)
	var state string
	require.NoError(t, e.db.Raw(`SELECT state FROM notifications WHERE request_id = ?`, id).Scan(&state).Error)
	require.Equal(t, "skipped", state)
	require.Zero(t, e.sentEvents(t, id))
}

func TestCrashBetweenSendAndCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, 300*time.Millisecond)
	id := e.request(t, event.KindAccess, "cy@example.com")
	// The first delivery recorded 'sending' and sent, then the process died.
	require.NoError(t, e.db.Exec(`INSERT INTO notifications (key, request_id, template, message_id, state, sends)
		VALUES (?, ?, 'report_ready', ?, 'sending', 1)`, "report_ready:rep-"+id, id, "report-ready."+id+"@test.invalid").Error)
	m := reportReady(t, id)

	err := e.n.Handle(t.Context(), m)
	require.Error(t, err, "a recent 'sending' row may still be in flight: retry later")
	require.NotErrorIs(t, err, message.ErrPermanent)
	require.NoError(t, e.db.Exec(`UPDATE notifications SET updated_at = now() - interval '1s'`).Error)
	require.NoError(t, e.n.Handle(t.Context(), m), "a stale 'sending' row is resent")

	msgs, err := e.mail.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "report-ready."+id+"@test.invalid", msgs[0].MessageID, "the resend carries the original Message-ID")
	var row struct {
		State string
		Sends int
	}
	require.NoError(t, e.db.Raw(`SELECT state, sends FROM notifications WHERE request_id = ?`, id).Scan(&row).Error)
	require.Equal(t, "sent", row.State)
	require.Equal(t, 2, row.Sends)
}

type failingSender struct{ fail bool }

func (f *failingSender) Send(ctx context.Context, e notify.Email) error {
	if f.fail {
		return context.DeadlineExceeded
	}
	return nil
}

func TestSMTPDownIsRetriedAtOnce(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	mp := testkit.StartMailpit(t)
	down := smtpConfig(mp)
	down.SMTPPort = 1 // nothing listens there
	working := notify.NewSMTP(smtpConfig(mp))
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(down), link,
		notify.Options{ResendAfter: time.Hour}, testkit.Logger(t), nil)
	require.NoError(t, err)
	e := &env{db: gdb, mail: mp, n: n}
	id := e.request(t, event.KindAccess, "di@example.com")
	m := reportReady(t, id)
	err = n.Handle(t.Context(), m)
	require.Error(t, err)
	require.NotErrorIs(t, err, message.ErrPermanent)

	var logs testkit.Buffer
	n2, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), working, link,
		notify.Options{ResendAfter: time.Hour}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	require.NoError(t, n2.Handle(t.Context(), m), "a failed send does not wait for resend_after")
	c, err := mp.Count(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, c)
	require.Contains(t, logs.String(), "retrying an email whose send failed")
	require.NotContains(t, logs.String(), "outcome is unknown", "a refused connection is a known outcome")
}

func TestBadMessagesArePoison(t *testing.T) {
	t.Parallel()
	e := newEnv(t, &failingSender{}, time.Minute)
	cases := map[string]message.Message{
		"bad json":        {ID: "1", Type: event.TypeReportReady, Body: []byte("[")},
		"unknown type":    {ID: "2", Type: "report.bogus", Body: []byte("{}")},
		"no report id":    {ID: "3", Type: event.TypeReportReady, Body: []byte(`{"request_id":"` + uuid.NewString() + `"}`)},
		"bad request id":  {ID: "4", Type: event.TypeErasureCompleted, Body: []byte(`{"request_id":"x"}`)},
		"unknown request": reportReady(t, uuid.NewString()),
	}
	for name, m := range cases {
		require.ErrorIs(t, e.n.Handle(t.Context(), m), message.ErrPermanent, name)
	}
	var rows int
	require.NoError(t, e.db.Raw(`SELECT (SELECT count(*) FROM notifications) + (SELECT count(*) FROM inbox)`).Scan(&rows).Error)
	require.Zero(t, rows)
}

func TestEmailsSentMetric(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	id := e.request(t, event.KindAccess, "ed@example.com")
	require.NoError(t, e.n.Handle(t.Context(), reportReady(t, id)))
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "gdpr_emails_sent_total" {
			for _, m := range mf.GetMetric() {
				require.Equal(t, "report_ready", m.GetLabel()[0].GetValue())
				require.Equal(t, 1.0, m.GetCounter().GetValue())
				found = true
			}
		}
	}
	require.True(t, found)
	for _, mf := range mfs {
		require.NotContains(t, mf.String(), "ed@example.com", "no address in metrics")
	}
}

// fakeHangUpSMTP is a fake SMTP server that takes whole messages and hangs
// up before giving its verdict on them: what a connection lost at the end
// of DATA looks like to the sender. Mailpit always answers.
type fakeHangUpSMTP struct {
	port int
	got  atomic.Int32
}

func startFakeHangUpSMTP(t *testing.T) *fakeHangUpSMTP {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	s := &fakeHangUpSMTP{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *fakeHangUpSMTP) serve(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 fake ESMTP")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		switch verb, _, _ := strings.Cut(strings.ToUpper(line), " "); verb {
		case "DATA":
			_ = tp.PrintfLine("354 go ahead")
			if _, err := tp.ReadDotBytes(); err != nil {
				return
			}
			s.got.Add(1)
			return // the whole message arrived; no 250 goes back
		default: // EHLO, MAIL, RCPT
			_ = tp.PrintfLine("250 ok")
		}
	}
}

// TestLostVerdictWaitsForResendAfter: the connection broke after the whole
// message was handed over, before the server said whether it took it. It
// may have: that is the crash window (resent after resend_after, with the
// same Message-ID), not a failed send (retried at once).
func TestLostVerdictWaitsForResendAfter(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	mp := testkit.StartMailpit(t)
	fake := startFakeHangUpSMTP(t)
	hangsUp := smtpConfig(mp)
	hangsUp.SMTPPort = fake.port
	n1, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(hangsUp), link,
		notify.Options{ResendAfter: time.Hour, MessageIDDomain: "test.invalid"}, testkit.Logger(t), nil)
	require.NoError(t, err)
	e := &env{db: gdb, mail: mp, n: n1}
	id := e.request(t, event.KindAccess, "fe@example.com")
	m := reportReady(t, id)

	err = n1.Handle(t.Context(), m)
	require.ErrorIs(t, err, notify.ErrOutcomeUnknown)
	require.NotErrorIs(t, err, message.ErrPermanent)
	require.EqualValues(t, 1, fake.got.Load(), "the server got the whole message")

	var logs testkit.Buffer
	n2, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), notify.NewSMTP(smtpConfig(mp)), link,
		notify.Options{ResendAfter: time.Hour, MessageIDDomain: "test.invalid"}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	require.Error(t, n2.Handle(t.Context(), m), "the redelivery waits: the first send may have gone out")
	c, err := mp.Count(t.Context())
	require.NoError(t, err)
	require.Zero(t, c)

	require.NoError(t, gdb.Exec(`UPDATE notifications SET updated_at = now() - interval '2 hours'`).Error)
	require.NoError(t, n2.Handle(t.Context(), m), "after resend_after it is sent again")
	msgs, err := mp.Messages(t.Context())
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	require.Equal(t, "report-ready."+id+"@test.invalid", msgs[0].MessageID, "the resend carries the original Message-ID")
	require.Contains(t, logs.String(), "resending an email whose outcome is unknown")
}

// TestDeletedEmailScrubsAFinishedErasure: the requests manager leaves the
// address on a finished erasure until its "deleted" email is recorded; the
// notifier blanks it when it records the email. An erasure still open keeps
// its address (the requests manager scrubs it when it finishes).
func TestDeletedEmailScrubsAFinishedErasure(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, time.Minute)
	cases := []struct {
		state    string
		scrubbed bool
	}{
		{"completed", true},
		{"handed_over", false},
	}
	for _, tc := range cases {
		id := uuid.NewString()
		require.NoError(t, e.db.Exec(`INSERT INTO requests (id, type, state, subject_email, had_email, submitted_at, due_at)
			VALUES (?, 'erasure', ?, 'fay@example.com', true, now(), now() + interval '1 month')`, id, tc.state).Error)
		m, err := message.New(event.TypeErasureCompleted, event.ErasureCompleted{RequestID: id}, nil)
		require.NoError(t, err)
		require.NoError(t, e.n.Handle(t.Context(), m))
		var row struct{ State, SubjectEmail string }
		require.NoError(t, e.db.Raw(`SELECT n.state, r.subject_email FROM notifications n JOIN requests r ON r.id = n.request_id
			WHERE n.request_id = ?`, id).Scan(&row).Error)
		require.Equal(t, "sent", row.State, tc.state)
		if tc.scrubbed {
			require.Empty(t, row.SubjectEmail, tc.state)
		} else {
			require.Equal(t, "fay@example.com", row.SubjectEmail, tc.state)
		}
	}
	c, err := e.mail.Count(t.Context())
	require.NoError(t, err)
	require.Equal(t, 2, c)
}

// TestScrubbedAddressIsNotTakenForNone: a request submitted with an address
// whose row has none left is recorded as skipped for "scrubbed", not
// "no_email", and said so in the log, so it cannot pass for a subject
// given by id only.
func TestScrubbedAddressIsNotTakenForNone(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	var logs testkit.Buffer
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), &failingSender{fail: true}, link,
		notify.Options{ResendAfter: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	reasons := map[bool]string{}
	for _, hadEmail := range []bool{true, false} {
		id := uuid.NewString()
		require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, had_email, submitted_at, due_at)
			VALUES (?, 'erasure', 'completed', ?, now(), now() + interval '1 month')`, id, hadEmail).Error)
		m, err := message.New(event.TypeErasureCompleted, event.ErasureCompleted{RequestID: id}, nil)
		require.NoError(t, err)
		require.NoError(t, n.Handle(t.Context(), m))
		var reason string
		require.NoError(t, gdb.Raw(`SELECT reason FROM notifications WHERE request_id = ? AND state = 'skipped'`, id).Scan(&reason).Error)
		reasons[hadEmail] = reason
	}
	require.Equal(t, map[bool]string{true: notify.ReasonScrubbed, false: notify.ReasonNoEmail}, reasons)
	require.Contains(t, logs.String(), "the address of a request was scrubbed before its email was sent")
}

// TestReportOfAnErasedSubjectIsNotAnnounced: a report.ready handled after
// the subject's erasure removed the address (and the report) sends nothing
// and records "erased", which is no error.
func TestReportOfAnErasedSubjectIsNotAnnounced(t *testing.T) {
	t.Parallel()
	gdb, _ := testkit.Postgres(t)
	var logs testkit.Buffer
	n, err := notify.New(gdb, requests.NewStore(gdb, nil), outbox.NewStore(gdb), &failingSender{fail: true}, link,
		notify.Options{ResendAfter: time.Minute}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	id, erasure := uuid.NewString(), uuid.NewString()
	require.NoError(t, gdb.Exec(`INSERT INTO requests (id, type, state, had_email, erased_by, pii_scrubbed_at, submitted_at, due_at)
		VALUES (?, 'access', 'completed', true, ?, now(), now(), now() + interval '1 month')`, id, erasure).Error)
	require.NoError(t, n.Handle(t.Context(), reportReady(t, id)))
	var reason string
	require.NoError(t, gdb.Raw(`SELECT reason FROM notifications WHERE request_id = ? AND state = 'skipped'`, id).Scan(&reason).Error)
	require.Equal(t, notify.ReasonErased, reason)
	require.NotContains(t, logs.String(), "level=ERROR")
}
