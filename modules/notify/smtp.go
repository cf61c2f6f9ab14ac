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
	"slices"
	"strconv"
	"strings"
	"sync"
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

// SMTP sends emails over a bounded pool of SMTP sessions: at most
// Config.Sessions are open at once, and a session that delivered an email
// carries the next one (RSET first) until it has carried
// Config.SessionMessages or stayed unused for Config.SessionIdle. A session
// that broke (the server closed it while idle, restarted, timed out) is
// closed and never reused.
type SMTP struct {
	cfg   Config
	roots *x509.CertPool
	// slots holds one token per send in progress: a send dials only when no
	// idle session is left, so open sessions never exceed its capacity.
	slots chan struct{}

	mu     sync.Mutex
	idle   []*session
	closed bool
}

// session is one SMTP connection past its greeting, TLS and login.
type session struct {
	conn net.Conn
	c    *smtp.Client
	sent int
	// expire closes the session once it stayed idle for SessionIdle.
	expire *time.Timer
}

// SMTPOption adjusts an SMTP sender.
type SMTPOption func(*SMTP)

// WithRootCAs makes the sender trust roots instead of the system's pool
// (a private mail relay, tests).
func WithRootCAs(roots *x509.CertPool) SMTPOption { return func(s *SMTP) { s.roots = roots } }

// NewSMTP returns a sender configured by cfg. Close it to end its idle sessions.
func NewSMTP(cfg Config, opts ...SMTPOption) *SMTP {
	// An unvalidated Config (a test's) still gets a working pool.
	cfg.Sessions = max(cfg.Sessions, 1)
	cfg.SessionMessages = max(cfg.SessionMessages, 1)
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = DefaultConfig().SessionIdle
	}
	s := &SMTP{cfg: cfg, slots: make(chan struct{}, cfg.Sessions)}
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

// errStale marks a reused session that failed before any part of the
// message reached the server: nothing can have been accepted, so a new
// session may send it at once.
var errStale = errors.New("notify: the smtp session broke before the message")

// Send delivers e. It returns once the server accepted the message. The
// whole send, waiting for a session included, is bounded by Config.Timeout
// (notify.resend_after counts on that).
func (s *SMTP) Send(ctx context.Context, e Email) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for an smtp session: %w", ctx.Err())
	}
	defer func() { <-s.slots }()
	msg := s.render(e)
	if ss := s.take(); ss != nil {
		err := s.deliver(ctx, ss, e.To, msg, true)
		if !errors.Is(err, errStale) {
			return err
		}
		// Sent again on a new session below: the old one ended before the
		// server saw this message.
	}
	ss, err := s.dial(ctx)
	if err != nil {
		return err
	}
	return s.deliver(ctx, ss, e.To, msg, false)
}

// Close ends the idle sessions; sessions in use end when their send does.
func (s *SMTP) Close() error {
	s.mu.Lock()
	s.closed = true
	idle := s.idle
	s.idle = nil
	s.mu.Unlock()
	for _, ss := range idle {
		ss.expire.Stop()
		s.quit(ss)
	}
	return nil
}

// take returns the most recently used idle session, or nil. The newest
// goes first so that under light load the older ones reach SessionIdle and close.
func (s *SMTP) take() *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.idle) == 0 {
		return nil
	}
	ss := s.idle[len(s.idle)-1]
	s.idle = s.idle[:len(s.idle)-1]
	ss.expire.Stop()
	return ss
}

// put keeps ss for the next send, or ends it when the sender is closed or
// ss carried its share.
func (s *SMTP) put(ss *session) {
	s.mu.Lock()
	if s.closed || ss.sent >= s.cfg.SessionMessages {
		s.mu.Unlock()
		s.quit(ss)
		return
	}
	ss.expire = time.AfterFunc(s.cfg.SessionIdle, func() { s.expireIdle(ss) })
	s.idle = append(s.idle, ss)
	s.mu.Unlock()
}

// expireIdle ends ss if it is still idle (take may have won the race).
func (s *SMTP) expireIdle(ss *session) {
	s.mu.Lock()
	i := slices.Index(s.idle, ss)
	if i < 0 {
		s.mu.Unlock()
		return
	}
	s.idle = slices.Delete(s.idle, i, i+1)
	s.mu.Unlock()
	s.quit(ss)
}

// quit ends a healthy session politely, within a short bound.
func (s *SMTP) quit(ss *session) {
	_ = ss.conn.SetDeadline(time.Now().Add(min(s.cfg.Timeout, 5*time.Second)))
	if err := ss.c.Quit(); err != nil {
		_ = ss.c.Close()
	}
}

// guard bounds every read and write on conn by ctx; the returned stop
// reports whether conn is still open (false: ctx ended and closed it).
func guard(ctx context.Context, conn net.Conn) (stop func() bool) {
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	// Closing the connection when ctx ends unblocks any read or write.
	return context.AfterFunc(ctx, func() { _ = conn.Close() })
}

// dial opens a session: connection, greeting, HELO, TLS and login.
func (s *SMTP) dial(ctx context.Context) (*session, error) {
	addr := net.JoinHostPort(s.cfg.SMTPHost, strconv.Itoa(s.cfg.SMTPPort))
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to smtp %s: %w", addr, err)
	}
	stop := guard(ctx, conn)
	defer stop()
	tlsCfg := &tls.Config{ServerName: s.cfg.SMTPHost, MinVersion: tls.VersionTLS12, RootCAs: s.roots}
	if s.cfg.TLS == "tls" {
		conn = tls.Client(conn, tlsCfg)
	}
	c, err := smtp.NewClient(conn, s.cfg.SMTPHost)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("greeting smtp %s: %w", addr, err)
	}
	fail := func(step string, err error) (*session, error) {
		_ = c.Close()
		return nil, fmt.Errorf("%s: %w", step, err)
	}
	if err := c.Hello("localhost"); err != nil {
		return fail("smtp hello", err)
	}
	if s.cfg.TLS == "starttls" {
		if err := c.StartTLS(tlsCfg); err != nil {
			return fail("smtp starttls", err)
		}
	}
	if s.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.Username, s.cfg.Password, s.cfg.SMTPHost)); err != nil {
			return fail("smtp auth", err)
		}
	}
	return &session{conn: conn, c: c}, nil
}

// deliver sends one message on ss and then keeps ss for the next send or
// ends it. On a reused session, a failure before the message's content
// was written is errStale.
func (s *SMTP) deliver(ctx context.Context, ss *session, to string, msg []byte, reused bool) error {
	stop := guard(ctx, ss.conn)
	err := s.transaction(ss.c, to, msg, reused)
	if open := stop(); open && inSync(err) {
		ss.sent++
		s.put(ss)
	} else {
		_ = ss.c.Close()
	}
	return err
}

func (s *SMTP) transaction(c *smtp.Client, to string, msg []byte, reused bool) error {
	early := func(step string, err error) error {
		err = classify(step, err)
		if reused && !errors.Is(err, ErrRejected) {
			return fmt.Errorf("%w: %w", errStale, err)
		}
		return err
	}
	if reused {
		// The previous transaction ended at its end of data; RSET also
		// proves the session is still alive before this message starts.
		if err := c.Reset(); err != nil {
			return early("smtp rset", err)
		}
	}
	if err := c.Mail(s.cfg.From); err != nil {
		return early("smtp mail from", err)
	}
	if err := c.Rcpt(to); err != nil {
		return early("smtp rcpt to", err)
	}
	w, err := c.Data()
	if err != nil {
		return early("smtp data", err)
	}
	if _, err := w.Write(msg); err != nil {
		// Without the final "." the server accepts nothing.
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
	return nil
}

// inSync reports whether a session can carry another message after err:
// after success or a reply the server gave (a refusal), unless the reply
// says the server is closing the session (421).
func inSync(err error) bool {
	if err == nil {
		return true
	}
	var perr *textproto.Error
	return !errors.Is(err, errStale) && errors.As(err, &perr) && perr.Code != 421
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
