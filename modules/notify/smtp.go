package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// Email is one message to one recipient.
type Email struct {
	To      string
	Subject string
	Body    string
	// MessageID is the RFC 5322 Message-ID (without angle brackets); a resend
	// after a crash carries the same one, so duplicates are identifiable.
	MessageID string
	// Headers are extra headers, e.g. X-GDPR-Request-ID.
	Headers map[string]string
}

// SMTP sends emails over one SMTP conversation each.
type SMTP struct {
	cfg   Config
	roots *x509.CertPool
}

// SMTPOption adjusts an SMTP sender.
type SMTPOption func(*SMTP)

// WithRootCAs makes the sender trust roots instead of the system's pool
// (a private mail relay, tests).
func WithRootCAs(roots *x509.CertPool) SMTPOption { return func(s *SMTP) { s.roots = roots } }

// NewSMTP returns a sender configured by cfg.
func NewSMTP(cfg Config, opts ...SMTPOption) *SMTP {
	s := &SMTP{cfg: cfg}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ErrRejected marks an address or message the SMTP server refused
// permanently (5xx): sending again will not help.
var ErrRejected = errors.New("notify: rejected by the SMTP server")

// ErrOutcomeUnknown marks a send that broke off after the whole message was
// handed over and before the server's verdict arrived: the server may have
// accepted it.
var ErrOutcomeUnknown = errors.New("notify: the SMTP server's verdict was lost")

// Send delivers e. It returns once the server accepted the message.
func (s *SMTP) Send(ctx context.Context, e Email) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	addr := net.JoinHostPort(s.cfg.SMTPHost, strconv.Itoa(s.cfg.SMTPPort))
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connecting to smtp %s: %w", addr, err)
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Closing the connection when ctx ends unblocks any read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	tlsCfg := &tls.Config{ServerName: s.cfg.SMTPHost, MinVersion: tls.VersionTLS12, RootCAs: s.roots}
	if s.cfg.TLS == "tls" {
		conn = tls.Client(conn, tlsCfg)
	}
	c, err := smtp.NewClient(conn, s.cfg.SMTPHost)
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("greeting smtp %s: %w", addr, err)
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return fmt.Errorf("smtp hello: %w", err)
	}
	if s.cfg.TLS == "starttls" {
		if err := c.StartTLS(tlsCfg); err != nil {
			return fmt.Errorf("smtp starttls: %w", err)
		}
	}
	if s.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.cfg.SMTPHost)); err != nil {
			return fmt.Errorf("smtp auth: %w", err)
		}
	}
	if err := c.Mail(s.cfg.From); err != nil {
		return classify("smtp mail from", err)
	}
	if err := c.Rcpt(e.To); err != nil {
		return classify("smtp rcpt to", err)
	}
	w, err := c.Data()
	if err != nil {
		return classify("smtp data", err)
	}
	if _, err := w.Write(s.render(e)); err != nil {
		return fmt.Errorf("smtp writing message: %w", err)
	}
	if err := w.Close(); err != nil {
		var perr *textproto.Error
		if !errors.As(err, &perr) {
			// No reply, so no refusal either.
			return fmt.Errorf("smtp end of data: %w: %w", ErrOutcomeUnknown, err)
		}
		return classify("smtp end of data", err)
	}
	if err := c.Quit(); err != nil {
		// The message was accepted at end of data; a failed QUIT loses nothing.
		return nil
	}
	return nil
}

func classify(step string, err error) error {
	var perr *textproto.Error
	if errors.As(err, &perr) && perr.Code >= 500 {
		return fmt.Errorf("%s: %w: %w", step, ErrRejected, err)
	}
	return fmt.Errorf("%s: %w", step, err)
}

func (s *SMTP) render(e Email) []byte {
	var b bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	h("From", s.cfg.From)
	h("To", e.To)
	h("Subject", mime.QEncoding.Encode("utf-8", e.Subject))
	h("Date", time.Now().UTC().Format(time.RFC1123Z))
	h("Message-ID", "<"+e.MessageID+">")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "8bit")
	for k, v := range e.Headers {
		h(k, v)
	}
	b.WriteString("\r\n")
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(e.Body, "\r\n", "\n"), "\n", "\r\n"))
	return b.Bytes()
}
