package selfservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// Accounts finds the account id that belongs to a verified email address.
// The page proves only that the visitor can read the address's mail, so an
// account id is never taken from the visitor (anyone can type another
// customer's id); it comes from the operator's own records, or not at all.
type Accounts interface {
	// AccountOf returns the one account id recorded for email, or "" when
	// there is none or more than one.
	AccountOf(ctx context.Context, email string) (string, error)
}

// AccountField is the member of privacy.account_lookup's records that
// holds the account id.
const AccountField = "subject_id"

// SourceAccounts reads the account id with a report source configured as
// privacy.account_lookup, given only the verified email: its records'
// subject_id member is the id.
type SourceAccounts struct {
	src     source.Source
	timeout time.Duration
	logger  *slog.Logger
}

// DefaultAccountLookupTimeout bounds a lookup whose timeout is not set: the
// person is waiting on the page.
const DefaultAccountLookupTimeout = 10 * time.Second

// NewSourceAccounts builds the lookup of privacy.account_lookup.
func NewSourceAccounts(cfg source.Config, opts source.Options, logger *slog.Logger) (*SourceAccounts, error) {
	src, err := source.New(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("privacy.account_lookup: %w", err)
	}
	// The lookup must run on the address alone, and use nothing else: a
	// subject with the other fixed identifiers but no address must not
	// apply, and no field may name an identifier of serve.identifiers.
	others := event.Subject{ID: "someone", Phone: "+10000000000"}
	if !src.Applies(event.Subject{Email: "someone@example.com"}) || src.Applies(others) || namesIdentifiers(cfg) {
		_ = src.Close()
		return nil, errors.New("privacy.account_lookup must use only the email identifier (@email or {email}): the address is all the page verified")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultAccountLookupTimeout
	}
	return &SourceAccounts{src: src, timeout: timeout, logger: logger}, nil
}

// namesIdentifiers says whether any field of cfg uses a named identifier,
// in its kind's syntax.
func namesIdentifiers(cfg source.Config) bool {
	for _, f := range cfg.Identifiers() {
		if len(f.Names) > 0 {
			return true
		}
	}
	return false
}

// AccountOf implements Accounts.
func (a *SourceAccounts) AccountOf(ctx context.Context, email string) (string, error) {
	subject := event.Subject{Email: email}
	if !a.src.Applies(subject) {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	ids := &accountSink{}
	if err := a.src.Read(ctx, subject, ids); err != nil {
		return "", fmt.Errorf("looking up the account of a verified address: %w", err)
	}
	switch len(ids.seen) {
	case 0:
		return "", nil
	case 1:
		return ids.seen[0], nil
	}
	// Two accounts under one address: taking either could hand one
	// person's data to the other (a shared or recycled address). The request
	// goes by the email alone; what it misses shows as skipped sources and
	// participants that cannot erase.
	a.logger.WarnContext(ctx, "account lookup found more than one account for a verified address; the request names only the address", "accounts", len(ids.seen))
	return "", nil
}

// Close releases the lookup's connections.
func (a *SourceAccounts) Close() error { return a.src.Close() }

// accountSink keeps the distinct non-empty subject_id values of the
// records (strings, or numbers as written); two are enough to know the
// address is ambiguous.
type accountSink struct{ seen []string }

func (s *accountSink) Columns([]string) error { return nil }

func (s *accountSink) Row(obj []byte) error {
	return source.Fields(obj, func(key string, raw []byte) error {
		if key != AccountField {
			return nil
		}
		id, err := source.DecodeString(raw)
		if err != nil {
			return err
		}
		if id = strings.TrimSpace(id); id == "" || len(s.seen) > 1 {
			return nil
		}
		if !slices.Contains(s.seen, id) {
			s.seen = append(s.seen, id)
		}
		return nil
	})
}
