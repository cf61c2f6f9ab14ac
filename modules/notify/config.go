package notify

import (
	"errors"
	"fmt"
	"time"
)

// Config is the notify section: outgoing email.
type Config struct {
	SMTPHost string `yaml:"smtp_host"`
	SMTPPort int    `yaml:"smtp_port"`
	// TLS is none, starttls or tls.
	TLS      string `yaml:"tls"`
	Username string `yaml:"username"`
	Password string `yaml:"password" secret:"true"`
	From     string `yaml:"from"`
	// Timeout bounds one send: the wait for a free session and its SMTP conversation.
	Timeout time.Duration `yaml:"timeout"`
	// Concurrency is how many emails are sent at once.
	Concurrency int `yaml:"concurrency"`
	// Sessions bounds the SMTP sessions open at once; a session is reused
	// for the next email (RSET between messages) instead of a new
	// connection, greeting and login per email. More than concurrency is
	// never used.
	Sessions int `yaml:"sessions"`
	// SessionIdle closes a session no email used for this long; below the
	// server's own idle limit (RFC 5321 asks servers to wait 5 minutes), so
	// that the server rarely closes a session gdpr is about to use.
	SessionIdle time.Duration `yaml:"session_idle"`
	// SessionMessages is how many emails one session carries before it is
	// closed and a new one opened (servers limit messages per connection).
	SessionMessages int `yaml:"session_messages"`
	// ResendAfter is how long a send that started but never recorded its
	// outcome (a crash between SMTP and commit) waits before it is sent again
	// with the same Message-ID; longer than Timeout, so that no send in
	// progress is taken for a dead one.
	ResendAfter time.Duration `yaml:"resend_after"`
}

// DefaultConfig sends through a local test SMTP server (Mailpit).
func DefaultConfig() Config {
	return Config{
		SMTPHost:        "127.0.0.1",
		SMTPPort:        1025,
		TLS:             "none",
		From:            "privacy@example.com",
		Timeout:         30 * time.Second,
		Concurrency:     8,
		Sessions:        8,
		SessionIdle:     30 * time.Second,
		SessionMessages: 100,
		ResendAfter:     2 * time.Minute,
	}
}

// Validate names the first bad setting in full (notify.…).
func (n Config) Validate() error {
	switch {
	case n.SMTPHost == "":
		return errors.New("notify.smtp_host must be set")
	case n.SMTPPort < 1 || n.SMTPPort > 65535:
		return fmt.Errorf("notify.smtp_port must be a port number, got %d", n.SMTPPort)
	case n.TLS != "none" && n.TLS != "starttls" && n.TLS != "tls":
		return fmt.Errorf("notify.tls must be none, starttls or tls, got %q", n.TLS)
	case n.From == "":
		return errors.New("notify.from must be set")
	case n.Timeout <= 0:
		return fmt.Errorf("notify.timeout must be > 0, got %s", n.Timeout)
	case n.Concurrency < 1:
		return fmt.Errorf("notify.concurrency must be >= 1, got %d", n.Concurrency)
	case n.Sessions < 1:
		return fmt.Errorf("notify.sessions must be >= 1, got %d", n.Sessions)
	case n.SessionIdle <= 0:
		return fmt.Errorf("notify.session_idle must be > 0, got %s", n.SessionIdle)
	case n.SessionMessages < 1:
		return fmt.Errorf("notify.session_messages must be >= 1, got %d", n.SessionMessages)
	case n.ResendAfter <= 0:
		return fmt.Errorf("notify.resend_after must be > 0, got %s", n.ResendAfter)
	case n.ResendAfter <= n.Timeout:
		// A send still in its SMTP conversation must never look abandoned,
		// or a redelivery sends the email a second time.
		return fmt.Errorf("notify.resend_after must be longer than notify.timeout (%s), got %s", n.Timeout, n.ResendAfter)
	}
	return nil
}
