// Package console holds the `console:` settings and the identity of the
// people who use the admin API and the web console: named operators with a
// role, authenticated by tokens kept only as SHA-256 digests. It imports
// nothing of the service's other modules, so the configuration can compose
// it.
package console

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gdpr-oss/gdpr/modules/deadline"
)

// Roles of an operator.
const (
	// RoleViewer reads everything the console and the admin API show.
	RoleViewer = "viewer"
	// RoleOperator reads and acts.
	RoleOperator = "operator"
)

// Config is the `console:` section: who may use the admin API and the web
// console, and the clocks they watch.
type Config struct {
	// Operators are the named admin users of the admin API and the web
	// console. Each signs in with a token of which only the SHA-256 digest
	// is configured.
	Operators []Operator `yaml:"operators"`
	// SessionTTL is how long a web console session lasts after sign-in.
	SessionTTL time.Duration `yaml:"session_ttl"`
	// NearDeadline is, per regulation, how long before its deadline an open
	// request counts as near it (dashboard, near_deadline filter).
	NearDeadline NearDeadline `yaml:"near_deadline"`
	// ClientRegulations sets the regulation of an API client's requests
	// that name none (otherwise gdpr).
	ClientRegulations []ClientRegulation `yaml:"client_regulations"`
}

// Operator is one named admin user.
type Operator struct {
	// Name identifies the operator in the audit log (operator_actions).
	Name string `yaml:"name"`
	// Role is viewer (reads) or operator (reads and acts).
	Role string `yaml:"role"`
	// TokenSHA256 is the hex SHA-256 digest of the operator's token
	// (`printf %s "$TOKEN" | sha256sum`).
	TokenSHA256 string `yaml:"token_sha256" secret:"true"`
}

// NearDeadline is the near-deadline window of each regulation.
type NearDeadline struct {
	// GDPR is the window of gdpr requests (deadline one calendar month).
	GDPR time.Duration `yaml:"gdpr"`
	// CCPA is the window of ccpa requests (deadline 45 days).
	CCPA time.Duration `yaml:"ccpa"`
	// LGPD is the window of lgpd requests (deadline 15 days).
	LGPD time.Duration `yaml:"lgpd"`
}

// Map returns the windows keyed by regulation name.
func (n NearDeadline) Map() map[string]time.Duration {
	return map[string]time.Duration{string(deadline.GDPR): n.GDPR, string(deadline.CCPA): n.CCPA, string(deadline.LGPD): n.LGPD}
}

// ClientRegulation maps one API client to a regulation.
type ClientRegulation struct {
	// Client is the API client's name: serve.api_clients[].name, or for a
	// flat serve.api_tokens entry the first 16 hex characters of its digest.
	Client string `yaml:"client"`
	// Regulation is gdpr, ccpa or lgpd.
	Regulation string `yaml:"regulation"`
}

// DefaultConfig has no operators (the admin API and the console refuse
// everyone but serve.admin_tokens), 8-hour sessions, and near-deadline
// windows of a week (gdpr, ccpa) and three days (lgpd).
func DefaultConfig() Config {
	return Config{
		SessionTTL:   8 * time.Hour,
		NearDeadline: NearDeadline{GDPR: 7 * 24 * time.Hour, CCPA: 7 * 24 * time.Hour, LGPD: 3 * 24 * time.Hour},
	}
}

// invalid names the full dotted setting; config marks it as its ErrInvalid.
func invalid(setting, format string, args ...any) error {
	return fmt.Errorf("%s %s", setting, fmt.Sprintf(format, args...))
}

// Validate names the full dotted setting of each error.
func (c Config) Validate() error {
	var errs []error
	names := map[string]bool{}
	digests := map[string]bool{}
	for i, op := range c.Operators {
		p := "console.operators[" + strconv.Itoa(i) + "]"
		switch {
		case op.Name == "":
			errs = append(errs, invalid(p+".name", "must be set"))
		case names[op.Name]:
			errs = append(errs, invalid(p+".name", "must be unique, %q is used twice", op.Name))
		}
		names[op.Name] = true
		if op.Role != RoleViewer && op.Role != RoleOperator {
			errs = append(errs, invalid(p+".role", "must be viewer or operator, got %q", op.Role))
		}
		if raw, err := hex.DecodeString(op.TokenSHA256); err != nil || len(raw) != 32 {
			errs = append(errs, invalid(p+".token_sha256", "must be a SHA-256 hex digest (64 hex characters)"))
		} else if digests[op.TokenSHA256] {
			errs = append(errs, invalid(p+".token_sha256", "must be unique: two operators share a token"))
		}
		digests[op.TokenSHA256] = true
	}
	if c.SessionTTL < time.Minute {
		errs = append(errs, invalid("console.session_ttl", "must be >= 1m, got %s", c.SessionTTL))
	}
	for name, d := range map[string]time.Duration{"gdpr": c.NearDeadline.GDPR, "ccpa": c.NearDeadline.CCPA, "lgpd": c.NearDeadline.LGPD} {
		if d <= 0 {
			errs = append(errs, invalid("console.near_deadline."+name, "must be > 0, got %s", d))
		}
	}
	for i, cr := range c.ClientRegulations {
		p := "console.client_regulations[" + strconv.Itoa(i) + "]"
		if cr.Client == "" {
			errs = append(errs, invalid(p+".client", "must be set"))
		}
		if _, err := deadline.Parse(cr.Regulation); err != nil || cr.Regulation == "" {
			errs = append(errs, invalid(p+".regulation", "must be gdpr, ccpa or lgpd, got %q", cr.Regulation))
		}
	}
	return errors.Join(errs...)
}

// Regulations returns ClientRegulations as a map (intake.Options).
func (c Config) Regulations() map[string]string {
	out := map[string]string{}
	for _, cr := range c.ClientRegulations {
		out[cr.Client] = cr.Regulation
	}
	return out
}
