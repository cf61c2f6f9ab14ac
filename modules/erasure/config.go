package erasure

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/gdpr-oss/gdpr/modules/expand"
)

// ParticipantPlaceholders are the values an http participant's URL
// template may use: the fixed ones, and {identifier.<name>} for a named
// identifier (serve.identifiers) the template names.
func ParticipantPlaceholders() []string {
	return []string{"subject_id", "subject_email", "phone", "request_id"}
}

// urlPlaceholders are the placeholder names of URL template tmpl.
func urlPlaceholders(tmpl string) []string {
	return append(ParticipantPlaceholders(), expand.IdentifierPlaceholders(tmpl)...)
}

// identifiesSubject reports whether a URL template's placeholders name the
// subject (any identifier but request_id).
func identifiesSubject(names []string) bool {
	for _, n := range names {
		if n != "request_id" {
			return true
		}
	}
	return false
}

// Config is the canceller section: the erasure fan-out role and its
// domain policy (re-send and retry waits, the overdue bound).
type Config struct {
	AdminAddr string `yaml:"admin_addr"`
	// Participants are the services and APIs that must confirm an erasure.
	Participants []Participant `yaml:"participants"`
	// NoParticipants declares that no service of this install holds personal
	// data to erase. Only then do canceller and all start with no participants
	// (an erasure then completes at once and its email says the data was
	// deleted); otherwise they refuse to start (exit 2). Ignored when
	// participants are listed.
	NoParticipants bool `yaml:"no_participants"`
	// ConfirmTimeout is how long a participant may stay silent before a
	// re-send; each further re-send waits twice as long (capped at MaxBackoff).
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// MaxResends is how many re-sends happen before a participant is overdue.
	MaxResends int `yaml:"max_resends"`
	// RetryBackoff is the first wait before a command is re-sent after a
	// "failed" confirmation or an HTTP participant's transient error; it doubles
	// with each attempt, capped at MaxBackoff.
	RetryBackoff time.Duration `yaml:"retry_backoff"`
	// MaxBackoff caps every wait between two attempts.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// EmailDelay postpones the email system's erasure so the "deleted" email is delivered.
	EmailDelay time.Duration `yaml:"email_delay"`
	// Concurrency is how many canceller messages (requests, confirmations,
	// timers, HTTP calls) one process handles at once.
	Concurrency int `yaml:"concurrency"`
}

// Participant is one service that holds personal data and must erase it.
type Participant struct {
	Name string `yaml:"name"`
	// Kind is amqp, http or email (an amqp participant erased last, after EmailDelay).
	Kind string `yaml:"kind"`
	// Method is the HTTP method of an http participant; default DELETE.
	Method string `yaml:"method"`
	// URL is an http participant's URL template using {subject_id},
	// {subject_email}, {phone} or {identifier.<name>} (and optionally
	// {request_id}), each filling one path segment or query value,
	// percent-encoded.
	URL string `yaml:"url"`
	// AuthHeader is sent with every call: "Name: value", or a bare value sent
	// as the Authorization header.
	AuthHeader string        `yaml:"auth_header" secret:"true"`
	Timeout    time.Duration `yaml:"timeout"`
	// ExpectedStatuses are the HTTP statuses meaning "erased"; default 200, 202, 204.
	ExpectedStatuses []int `yaml:"expected_statuses"`
	// Requires names the identifiers (subject_id, subject_email) without
	// which the participant cannot find a subject. An erasure whose subject
	// lacks one never commands the participant, which is cannot_erase at
	// once: a participant that looks people up by id, handed only an email,
	// would otherwise answer not_found and the person be told their data
	// was deleted. An http participant also requires what its URL uses.
	Requires []string `yaml:"requires"`
}

// CheckParticipants is the start check of the roles that fan erasures out.
// With no participant an erasure completes at once and the person is told
// their data was deleted, which is false unless the install really keeps
// none: so an empty list must be declared with NoParticipants.
func (c Config) CheckParticipants() error {
	if len(c.Participants) == 0 && !c.NoParticipants {
		return errors.New("canceller.participants is empty: list the services that must erase a subject's data, " +
			"or set canceller.no_participants: true (GDPR_CANCELLER_NO_PARTICIPANTS=true) if this install keeps personal data nowhere else; " +
			"an erasure then completes at once and tells the person their data was deleted")
	}
	return nil
}

// legalDeadline is GDPR Art. 12(3)'s one month, taken as its shortest (28 days).
const legalDeadline = 28 * 24 * time.Hour

// DefaultConfig re-sends hourly, doubling, and makes a silent participant
// overdue well inside the legal deadline.
func DefaultConfig() Config {
	return Config{
		AdminAddr:      "127.0.0.1:9093",
		ConfirmTimeout: time.Hour,
		MaxResends:     5,
		RetryBackoff:   5 * time.Minute,
		MaxBackoff:     12 * time.Hour,
		EmailDelay:     72 * time.Hour,
		Concurrency:    32,
	}
}

// ResendWait is how long attempt n (1-based) of a command waits for its
// confirmation: ConfirmTimeout doubled per earlier attempt, capped at MaxBackoff.
func (c Config) ResendWait(attempt int) time.Duration {
	return backoff(c.ConfirmTimeout, attempt, max(c.MaxBackoff, c.ConfirmTimeout))
}

// RetryWait is how long to wait before attempt n+1 after attempt n failed.
func (c Config) RetryWait(attempt int) time.Duration {
	return backoff(c.RetryBackoff, attempt, max(c.MaxBackoff, c.RetryBackoff))
}

// OverdueAfter is the longest a silent participant takes to become overdue.
func (c Config) OverdueAfter() time.Duration {
	var total time.Duration
	for n := 1; n <= c.MaxResends+1; n++ {
		total += c.ResendWait(n)
	}
	return total
}

func backoff(base time.Duration, attempt int, ceiling time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < ceiling; i++ {
		d *= 2
	}
	return min(d, ceiling)
}

// Validate names the first bad setting in full (canceller.…).
func (c Config) Validate() error {
	switch {
	case c.AdminAddr == "":
		return errors.New("canceller.admin_addr must be set")
	case c.ConfirmTimeout <= 0:
		return fmt.Errorf("canceller.confirm_timeout must be > 0, got %s", c.ConfirmTimeout)
	case c.MaxResends < 0:
		return fmt.Errorf("canceller.max_resends must be >= 0, got %d", c.MaxResends)
	case c.MaxResends > 50:
		return fmt.Errorf("canceller.max_resends must be <= 50, got %d", c.MaxResends)
	case c.RetryBackoff <= 0:
		return fmt.Errorf("canceller.retry_backoff must be > 0, got %s", c.RetryBackoff)
	case c.MaxBackoff <= 0:
		return fmt.Errorf("canceller.max_backoff must be > 0, got %s", c.MaxBackoff)
	case c.EmailDelay < 0:
		return fmt.Errorf("canceller.email_delay must be >= 0, got %s", c.EmailDelay)
	case c.Concurrency < 1:
		return fmt.Errorf("canceller.concurrency must be >= 1, got %d", c.Concurrency)
	case c.OverdueAfter() > legalDeadline/2:
		// Overdue must leave operators time to act before the legal deadline.
		return fmt.Errorf("canceller.max_resends with confirm_timeout %s makes a silent participant overdue only after %s; must be <= %s (half the legal deadline)",
			c.ConfirmTimeout, c.OverdueAfter(), legalDeadline/2)
	}
	seen := map[string]bool{}
	emails := 0
	for i, p := range c.Participants {
		field := "canceller.participants[" + strconv.Itoa(i) + "]"
		switch {
		case p.Name == "":
			return fmt.Errorf("%s.name must be set", field)
		case !validName(p.Name):
			return fmt.Errorf("%s.name must be letters, digits, '-' or '_', got %q", field, p.Name)
		case seen[p.Name]:
			return fmt.Errorf("%s.name must be unique, %q repeats", field, p.Name)
		case p.Timeout < 0:
			return fmt.Errorf("%s.timeout must be >= 0, got %s", field, p.Timeout)
		}
		seen[p.Name] = true
		for j, id := range p.Requires {
			if id != "subject_id" && id != "subject_email" {
				return fmt.Errorf("%s.requires[%d] must be subject_id or subject_email, got %q", field, j, id)
			}
		}
		switch p.Kind {
		case "amqp":
		case "email":
			emails++
			if emails > 1 {
				return fmt.Errorf("%s.kind email may be given to one participant only", field)
			}
		case "http":
			if p.URL == "" {
				return fmt.Errorf("%s.url must be set for kind http", field)
			}
			u, err := expand.ParseURL(p.URL, urlPlaceholders(p.URL)...)
			if err != nil {
				return fmt.Errorf("%s.url %w", field, err)
			}
			// Without the subject in the URL every call is the same call: on
			// a collection URL, a DELETE of everybody.
			if !identifiesSubject(u.Names()) {
				return fmt.Errorf("%s.url must use {subject_id}, {subject_email}, {phone} or {identifier.<name>}", field)
			}
			if p.Method != "" && !validMethod(p.Method) {
				return fmt.Errorf("%s.method must be an HTTP method, got %q", field, p.Method)
			}
			for _, s := range p.ExpectedStatuses {
				if s < 200 || s > 299 {
					return fmt.Errorf("%s.expected_statuses must be 2xx statuses, got %d", field, s)
				}
			}
		default:
			return fmt.Errorf("%s.kind must be amqp, http or email, got %q", field, p.Kind)
		}
	}
	return nil
}

// validName keeps participant names safe inside routing keys and queue names.
func validName(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return len(s) <= 64
}

func validMethod(m string) bool {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
