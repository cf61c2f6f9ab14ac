package selfservice

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// Config is the `privacy:` section: the self-service page and how data
// subjects are verified.
type Config struct {
	// Enabled serves the self-service page at /privacy on serve's address,
	// and makes the "report ready" email link to its download page.
	Enabled bool `yaml:"enabled"`
	// CodeTTL is how long an emailed verification code (and the signed link
	// sent with it) can be used.
	CodeTTL time.Duration `yaml:"code_ttl"`
	// CodeTries is how many wrong codes void a verification; the next try is
	// refused even with the right code.
	CodeTries int `yaml:"code_tries"`
	// StatusLinkTTL is how long the status link of a receipt email works.
	StatusLinkTTL time.Duration `yaml:"status_link_ttl"`
	// SendWindow is the fixed window the send limits count in.
	SendWindow time.Duration `yaml:"send_window"`
	// SendsPerAddress bounds verification emails per client IP address per
	// send_window; beyond it the page answers as always but sends nothing.
	SendsPerAddress int `yaml:"sends_per_address"`
	// SendsPerEmail bounds verification emails to one address per send_window.
	SendsPerEmail int `yaml:"sends_per_email"`
	// CodeFailuresPerEmail bounds wrong codes for one address, summed over
	// all its verifications, per code_failure_window; beyond it every code
	// for the address is refused, the right one too, until the window ends.
	// code_tries alone bounds the guesses of one verification, and a new
	// verification is one click away.
	CodeFailuresPerEmail int `yaml:"code_failures_per_email"`
	// CodeFailureWindow is the fixed window code_failures_per_email counts in.
	CodeFailureWindow time.Duration `yaml:"code_failure_window"`
	// TrustedProxies is deprecated: use serve.trusted_proxies, which every limit by client address (the API's and this page's) shares. Entries here are still honoured, added to serve.trusted_proxies, with a warning at startup.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// DefaultLocale is the language of pages and emails when neither the
	// browser nor the API caller asks for a shipped one (en or de).
	DefaultLocale string `yaml:"default_locale"`
	// TemplateDir overrides shipped templates: pages/*.html (html/template
	// definitions replacing those of the same name) and email/<locale>/<name>.tmpl.
	TemplateDir string `yaml:"template_dir"`
	// RequireVerification lists the API callers (their names as the API logs
	// them, or "*" for every caller) whose submissions must say how the
	// subject was verified (the `verification` member).
	RequireVerification []string `yaml:"require_verification"`
	// AccountLookup finds the account id of a verified address in the
	// operator's records: a report source (any kind) that uses only the
	// email identifier (@email, {email}) and returns the id in a subject_id
	// column or member. Without it (kind empty) a page request names only
	// the address, and sources and participants keyed by account id are
	// skipped or cannot erase. The page never asks for an account id: it
	// can prove only that the visitor reads the address's mail.
	AccountLookup source.Config `yaml:"account_lookup"`
}

// DefaultConfig returns the defaults: page off, 6-digit codes valid ten
// minutes with three tries.
func DefaultConfig() Config {
	return Config{
		CodeTTL:         10 * time.Minute,
		CodeTries:       3,
		StatusLinkTTL:   120 * 24 * time.Hour,
		SendWindow:      time.Hour,
		SendsPerAddress: 20,
		SendsPerEmail:   5,
		// 10 guesses a day at a 6-digit code: a 1 in 100,000 chance a day,
		// 0.4% a year, and every guess needs a verification email the
		// address's owner receives.
		CodeFailuresPerEmail: 10,
		CodeFailureWindow:    24 * time.Hour,
		DefaultLocale:        LocaleEnglish,
		AccountLookup:        source.Config{Name: "account_lookup"},
	}
}

// Validate names the setting at fault.
func (c Config) Validate() error {
	switch {
	case c.CodeTTL < time.Minute:
		return fmt.Errorf("privacy.code_ttl must be >= 1m, got %s", c.CodeTTL)
	case c.CodeTries < 1:
		return fmt.Errorf("privacy.code_tries must be >= 1, got %d", c.CodeTries)
	case c.StatusLinkTTL < time.Hour:
		return fmt.Errorf("privacy.status_link_ttl must be >= 1h, got %s", c.StatusLinkTTL)
	case c.SendWindow < time.Second:
		return fmt.Errorf("privacy.send_window must be >= 1s, got %s", c.SendWindow)
	case c.SendsPerAddress < 1:
		return fmt.Errorf("privacy.sends_per_address must be >= 1, got %d", c.SendsPerAddress)
	case c.SendsPerEmail < 1:
		return fmt.Errorf("privacy.sends_per_email must be >= 1, got %d", c.SendsPerEmail)
	case c.CodeFailuresPerEmail < 1:
		return fmt.Errorf("privacy.code_failures_per_email must be >= 1, got %d", c.CodeFailuresPerEmail)
	case c.CodeFailureWindow < time.Second:
		return fmt.Errorf("privacy.code_failure_window must be >= 1s, got %s", c.CodeFailureWindow)
	case !slices.Contains(Locales(), c.DefaultLocale):
		return fmt.Errorf("privacy.default_locale must be one of %v, got %q", Locales(), c.DefaultLocale)
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		return err
	}
	if c.AccountLookup.Kind != "" {
		if err := c.AccountLookup.Validate("privacy.account_lookup"); err != nil {
			return err
		}
	}
	if c.TemplateDir != "" {
		if st, err := os.Stat(c.TemplateDir); err != nil || !st.IsDir() {
			return fmt.Errorf("privacy.template_dir must be a directory, got %q", c.TemplateDir)
		}
	}
	return nil
}

// Required says whether caller must state a verification.
func (c Config) Required(caller string) bool {
	return slices.Contains(c.RequireVerification, "*") || slices.Contains(c.RequireVerification, caller)
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("privacy.trusted_proxies[%s] must be an IP address or CIDR range, got %q", strconv.Itoa(i), s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}
