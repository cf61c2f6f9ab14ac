package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// DevDownloadKey is the download key used when none is configured. It is
// public (it is in the source code): anyone can sign download links with it,
// so a role refuses it unless serve.public_url is a loopback address.
const DevDownloadKey = "dev-download-key-change-me"

// MinDownloadKeyLen is the shortest download key any configuration accepts;
// one reachable from outside must be longer (config.CheckSecretKeys).
const MinDownloadKeyLen = 16

// Config is the serve section: the HTTP intake role's listeners, tokens,
// download links and the limits of its connections.
type Config struct {
	// Addr is the public API listen address.
	Addr string `yaml:"addr"`
	// AdminAddr serves /healthz, /readyz and /metrics for this role.
	AdminAddr string `yaml:"admin_addr"`
	// PublicURL is the externally visible base URL used in download links.
	PublicURL string `yaml:"public_url"`
	// APIClients are the named API clients: each request records the client
	// that submitted it, and a client reads only its own requests (another
	// client's answers 404). With neither api_clients nor api_tokens, every
	// API call gets 401.
	APIClients []Client `yaml:"api_clients"`
	// APITokens are SHA-256 hex digests of unnamed API clients' bearer tokens
	// (`printf %s "$TOKEN" | sha256sum`), each a client named after the
	// first 16 hex characters of its digest. Prefer api_clients; moving a
	// digest there keeps that client's earlier requests its own.
	APITokens []string `yaml:"api_tokens" secret:"true"`
	// AdminTokens are SHA-256 hex digests of tokens for /v1/admin endpoints.
	AdminTokens []string `yaml:"admin_tokens" secret:"true"`
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// DownloadKey signs report download tokens (HMAC-SHA256): the active key,
	// the one new links are signed with.
	DownloadKey string `yaml:"download_key" secret:"true"`
	// PreviousDownloadKeys are former download keys: links they signed are
	// still accepted until the key is removed from this list (after
	// download_ttl, every such link has expired anyway).
	PreviousDownloadKeys []string `yaml:"previous_download_keys" secret:"true"`
	// DownloadTTL is how long a download link stays valid.
	DownloadTTL time.Duration `yaml:"download_ttl"`
	// AcceptedTTL is how long serve remembers an accepted id it has not seen stored yet.
	AcceptedTTL time.Duration `yaml:"accepted_ttl"`
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	IdempotencyTTL time.Duration `yaml:"idempotency_ttl"`
	// RetryAfter is the Retry-After hint of a 503 answer.
	RetryAfter time.Duration `yaml:"retry_after"`
	// ReadHeaderTimeout bounds reading a request's headers, on the public API and on every role's admin server.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, body included (public API and admin servers).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing an answer; a report download extends it while the client keeps reading (public API and admin servers).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout bounds how long a kept-alive connection may wait for its next request (public API and admin servers).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConns caps the connections each server (the public API, and each role's admin server) serves at once; more wait in the listen backlog.
	MaxConns int `yaml:"max_conns"`
	// Identifiers declares the named subject identifiers API callers may send in subject.identifiers (lower-case words, e.g. loyalty_card); sources and participants use them as {identifier.<name>}.
	Identifiers []string `yaml:"identifiers"`
	// RateLimits bound how often one client or one address may call the
	// API, counted in Redis across every serve replica; beyond a limit the
	// answer is 429 with Retry-After. A limit with rate 0 is off.
	RateLimits RateLimits `yaml:"rate_limits"`
	// TrustedProxies are the addresses or CIDR ranges of the reverse proxies
	// in front of serve: only their X-Forwarded-For is believed when a limit
	// counts by client address; any other peer's is ignored. With none, the
	// connection's peer address counts.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// RateLimits are the API's rate limits (serve.rate_limits). Each is rate
// events per period with a burst at once (GCRA, modules/ratelimit).
type RateLimits struct {
	// IntakePerClient bounds submissions (POST /v1/requests) per API client.
	IntakePerClient ratelimit.Rule `yaml:"intake_per_client"`
	// AuthFailuresPerAddress bounds wrong or missing bearer tokens per client
	// address (API and admin API); once over it, that address gets 429 for
	// every authenticated call, right token or not, until the budget refills.
	AuthFailuresPerAddress ratelimit.Rule `yaml:"auth_failures_per_address"`
	// DownloadsPerAddress bounds report downloads, good links or bad, per
	// client address.
	DownloadsPerAddress ratelimit.Rule `yaml:"downloads_per_address"`
}

// Proxies parses TrustedProxies (Validate has checked them), plus the
// deprecated privacy.trusted_proxies given as deprecated, which the
// self-service page had before the limits shared one setting.
func (c Config) Proxies(deprecated ...string) (ratelimit.Proxies, error) {
	return ratelimit.ParseProxies("serve.trusted_proxies", append(slices.Clone(c.TrustedProxies), deprecated...))
}

// DefaultConfig listens on loopback and signs links with the public
// development key, which config.CheckSecretKeys refuses off loopback.
func DefaultConfig() Config {
	limits := health.DefaultLimits()
	return Config{
		Addr:         "127.0.0.1:8080",
		AdminAddr:    "127.0.0.1:9090",
		PublicURL:    "http://127.0.0.1:8080",
		MaxBodyBytes: 64 << 10,
		// Public: CheckSecretKeys refuses it unless public_url is a loopback address.
		DownloadKey:    DevDownloadKey,
		DownloadTTL:    7 * 24 * time.Hour,
		AcceptedTTL:    24 * time.Hour,
		IdempotencyTTL: 24 * time.Hour,
		RetryAfter:     5 * time.Second,

		ReadHeaderTimeout: limits.ReadHeaderTimeout,
		ReadTimeout:       limits.ReadTimeout,
		WriteTimeout:      limits.WriteTimeout,
		IdleTimeout:       limits.IdleTimeout,
		MaxConns:          limits.MaxConns,
		RateLimits: RateLimits{
			// A company's app submits requests by the dozen, not thousands a
			// second; a burst covers a backlog being replayed.
			IntakePerClient: ratelimit.Rule{Rate: 20, Period: time.Second, Burst: 200},
			// Enough for a misconfigured client to see its 401s, far too few to guess.
			AuthFailuresPerAddress: ratelimit.Rule{Rate: 10, Period: time.Minute, Burst: 20},
			// A person downloads a report a few times.
			DownloadsPerAddress: ratelimit.Rule{Rate: 30, Period: time.Minute, Burst: 30},
		},
	}
}

// Client is one named API client (serve.api_clients).
type Client struct {
	// Name is recorded on every request the client submits (requests.client,
	// the audit log) and names it in console.client_regulations: letters,
	// digits, '.', '_' and '-', at most 64, not 16 hex characters (the form
	// of an unnamed token's name), not "privacy-page".
	Name string `yaml:"name"`
	// TokenSHA256 is the hex SHA-256 digest of the client's bearer token
	// (`printf %s "$TOKEN" | sha256sum`).
	TokenSHA256 string `yaml:"token_sha256" secret:"true"`
}

// ClientTokens returns api_clients and api_tokens as intake's tokens.
func (c Config) ClientTokens() (intake.Tokens, error) {
	named := make([]intake.NamedToken, len(c.APIClients))
	for i, cl := range c.APIClients {
		named[i] = intake.NamedToken{Name: cl.Name, TokenSHA256: cl.TokenSHA256}
	}
	t, err := intake.ParseClients(named, c.APITokens)
	if err != nil {
		return intake.Tokens{}, fmt.Errorf("serve.api_clients/serve.api_tokens: %w", err)
	}
	return t, nil
}

// clientName is the grammar of an API client's name.
var clientName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// legacyLike is the form of an unnamed token's client name.
var legacyLike = regexp.MustCompile(`^[0-9a-f]{16}$`)

func (c Config) validateClients() error {
	names := map[string]bool{}
	digests := map[string]string{}
	for i, cl := range c.APIClients {
		p := "serve.api_clients[" + strconv.Itoa(i) + "]"
		switch {
		case !clientName.MatchString(cl.Name):
			return fmt.Errorf("%s.name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", p, cl.Name)
		case legacyLike.MatchString(cl.Name):
			return fmt.Errorf("%s.name must not be 16 hex characters (the name of an unnamed serve.api_tokens client), got %q", p, cl.Name)
		case cl.Name == selfservice.Caller:
			return fmt.Errorf("%s.name %q is the self-service page's name", p, cl.Name)
		case names[cl.Name]:
			return fmt.Errorf("%s.name must be unique, %q is used twice", p, cl.Name)
		}
		names[cl.Name] = true
		if raw, err := hex.DecodeString(cl.TokenSHA256); err != nil || len(raw) != 32 {
			return fmt.Errorf("%s.token_sha256 must be a SHA-256 hex digest (64 hex characters)", p)
		}
		d := strings.ToLower(cl.TokenSHA256)
		if other, dup := digests[d]; dup {
			return fmt.Errorf("%s.token_sha256 must be unique: %s has the same token", p, other)
		}
		digests[d] = p
	}
	for i, h := range c.APITokens {
		p := "serve.api_tokens[" + strconv.Itoa(i) + "]"
		d := strings.ToLower(h)
		if other, dup := digests[d]; dup {
			return fmt.Errorf("%s must be unique: %s has the same token", p, other)
		}
		digests[d] = p
	}
	return nil
}

// Limits are the connection limits of the public API and the admin servers.
func (c Config) Limits() health.Limits {
	return health.Limits{
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxConns:          c.MaxConns,
	}
}

// PreviousKeys returns the previous download keys as bytes.
func (c Config) PreviousKeys() [][]byte {
	keys := make([][]byte, len(c.PreviousDownloadKeys))
	for i, k := range c.PreviousDownloadKeys {
		keys[i] = []byte(k)
	}
	return keys
}

// Validate names the first bad setting in full (serve.…).
func (c Config) Validate() error {
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("serve.public_url must be an absolute http(s) URL, got %q", c.PublicURL)
	}
	for i, k := range c.PreviousDownloadKeys {
		if len(k) < MinDownloadKeyLen {
			return fmt.Errorf("serve.previous_download_keys[%d] must be at least %d characters", i, MinDownloadKeyLen)
		}
	}
	if err := validDigests("serve.api_tokens", c.APITokens); err != nil {
		return err
	}
	if err := c.validateClients(); err != nil {
		return err
	}
	for _, r := range []struct {
		setting string
		rule    ratelimit.Rule
	}{
		{"serve.rate_limits.intake_per_client", c.RateLimits.IntakePerClient},
		{"serve.rate_limits.auth_failures_per_address", c.RateLimits.AuthFailuresPerAddress},
		{"serve.rate_limits.downloads_per_address", c.RateLimits.DownloadsPerAddress},
	} {
		if err := r.rule.Validate(r.setting); err != nil {
			return err
		}
	}
	if _, err := c.Proxies(); err != nil {
		return err
	}
	if err := validDigests("serve.admin_tokens", c.AdminTokens); err != nil {
		return err
	}
	for i, n := range c.Identifiers {
		if !intake.IdentifierNamePattern.MatchString(n) || slices.Contains(c.Identifiers[:i], n) {
			return fmt.Errorf("serve.identifiers[%d] must be a distinct lower-case word (%s), got %q", i, intake.IdentifierNamePattern, n)
		}
	}
	switch {
	case c.Addr == "":
		return errors.New("serve.addr must be set")
	case c.AdminAddr == "":
		return errors.New("serve.admin_addr must be set")
	case c.MaxBodyBytes < 1024:
		return fmt.Errorf("serve.max_body_bytes must be >= 1024, got %d", c.MaxBodyBytes)
	case len(c.DownloadKey) < MinDownloadKeyLen:
		return fmt.Errorf("serve.download_key must be at least %d characters", MinDownloadKeyLen)
	case c.DownloadTTL <= 0:
		return fmt.Errorf("serve.download_ttl must be > 0, got %s", c.DownloadTTL)
	case c.AcceptedTTL < time.Minute:
		return fmt.Errorf("serve.accepted_ttl must be >= 1m, got %s", c.AcceptedTTL)
	case c.IdempotencyTTL < time.Minute:
		return fmt.Errorf("serve.idempotency_ttl must be >= 1m, got %s", c.IdempotencyTTL)
	case c.RetryAfter < time.Second:
		return fmt.Errorf("serve.retry_after must be >= 1s, got %s", c.RetryAfter)
	case c.ReadHeaderTimeout <= 0:
		return fmt.Errorf("serve.read_header_timeout must be > 0, got %s", c.ReadHeaderTimeout)
	case c.ReadTimeout < c.ReadHeaderTimeout:
		return fmt.Errorf("serve.read_timeout must be >= serve.read_header_timeout (%s), got %s", c.ReadHeaderTimeout, c.ReadTimeout)
	case c.WriteTimeout < time.Second:
		return fmt.Errorf("serve.write_timeout must be >= 1s, got %s", c.WriteTimeout)
	case c.IdleTimeout <= 0:
		return fmt.Errorf("serve.idle_timeout must be > 0, got %s", c.IdleTimeout)
	case c.MaxConns < 16:
		return fmt.Errorf("serve.max_conns must be >= 16, got %d", c.MaxConns)
	}
	return nil
}

// validDigests checks that every entry is a hex SHA-256 digest, so that a
// raw token pasted by mistake is refused rather than silently never matching.
func validDigests(setting string, digests []string) error {
	for i, d := range digests {
		if raw, err := hex.DecodeString(d); err != nil || len(raw) != 32 {
			return fmt.Errorf("%s[%s] must be a SHA-256 hex digest (64 hex characters)", setting, strconv.Itoa(i))
		}
	}
	return nil
}
