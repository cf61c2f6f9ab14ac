package config

import (
	"strconv"
	"time"
)

// Canceller configures the erasure fan-out role.
type Canceller struct {
	AdminAddr string `yaml:"admin_addr"`
	// Participants are the services and APIs that must confirm an erasure.
	Participants []Participant `yaml:"participants"`
	// ConfirmTimeout is how long a participant may stay silent before a re-send.
	ConfirmTimeout time.Duration `yaml:"confirm_timeout"`
	// MaxResends is how many re-sends happen before a participant is overdue.
	MaxResends int `yaml:"max_resends"`
	// EmailDelay postpones the email system's erasure so the "deleted" email is delivered.
	EmailDelay time.Duration `yaml:"email_delay"`
}

// Participant is one service that holds personal data and must erase it.
type Participant struct {
	Name string `yaml:"name"`
	// Kind is amqp, http or email (an amqp participant erased last, after EmailDelay).
	Kind       string        `yaml:"kind"`
	Method     string        `yaml:"method"`
	URL        string        `yaml:"url"`
	AuthHeader string        `yaml:"auth_header" secret:"true"`
	Timeout    time.Duration `yaml:"timeout"`
	// ExpectedStatuses are the HTTP statuses meaning "erased"; default 200, 202, 204.
	ExpectedStatuses []int `yaml:"expected_statuses"`
}

func defaultCanceller() Canceller {
	return Canceller{
		AdminAddr:      "127.0.0.1:9093",
		ConfirmTimeout: time.Hour,
		MaxResends:     5,
		EmailDelay:     72 * time.Hour,
	}
}

func (c Canceller) validate() error {
	switch {
	case c.AdminAddr == "":
		return invalid("canceller.admin_addr", "must be set")
	case c.ConfirmTimeout <= 0:
		return invalid("canceller.confirm_timeout", "must be > 0, got %s", c.ConfirmTimeout)
	case c.MaxResends < 0:
		return invalid("canceller.max_resends", "must be >= 0, got %d", c.MaxResends)
	case c.EmailDelay < 0:
		return invalid("canceller.email_delay", "must be >= 0, got %s", c.EmailDelay)
	}
	seen := map[string]bool{}
	for i, p := range c.Participants {
		field := "canceller.participants[" + strconv.Itoa(i) + "]"
		switch {
		case p.Name == "":
			return invalid(field+".name", "must be set")
		case seen[p.Name]:
			return invalid(field+".name", "must be unique, %q repeats", p.Name)
		}
		seen[p.Name] = true
		switch p.Kind {
		case "amqp", "email":
		case "http":
			if p.URL == "" {
				return invalid(field+".url", "must be set for kind http")
			}
		default:
			return invalid(field+".kind", "must be amqp, http or email, got %q", p.Kind)
		}
	}
	return nil
}
