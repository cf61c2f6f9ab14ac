// Package selfservice is the data subject's own door: the /privacy page's
// domain logic. A person with nothing but an email address asks for a copy
// or the erasure of their data, proves the address is theirs with an
// emailed 6-digit code or signed link, and only then does the request go
// through the same intake path as the API's (accepted once the broker
// confirmed it). It renders the pages (html/template, embedded, no external
// resources) and knows nothing of HTTP frameworks: modules/api serves them.
package selfservice

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	texttemplate "text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/gdpr-oss/gdpr/modules/deadline"
	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/requests/record"
	"github.com/gdpr-oss/gdpr/modules/source"
)

// Caller is the intake caller name of the page's submissions; it scopes
// their idempotency keys (the verification's id).
const Caller = "privacy-page"

//go:embed templates static
var embedded embed.FS

// Intake is what the page needs from modules/intake.
type Intake interface {
	Submit(ctx context.Context, caller, idemKey string, sub intake.Submission) (intake.Accepted, error)
	Status(ctx context.Context, id string) (intake.Status, error)
	DownloadToken(requestID, token string) error
	ReportDeleted(ctx context.Context, requestID string) (*intake.GoneError, error)
	Report(ctx context.Context, requestID string) ([]record.ReportSource, *intake.GoneError, error)
}

// Email is one verification email to one recipient.
type Email struct {
	To, Subject, Body, MessageID string
	Headers                      map[string]string
}

// Sender delivers one email (notify's SMTP sender, adapted by the role).
type Sender interface {
	Send(ctx context.Context, e Email) error
}

// Options configure a Service. Redis, Intake, Sender, Key, PublicURL and
// Logger are required.
type Options struct {
	Config Config
	Redis  redis.UniversalClient
	// KeyPrefix starts every Redis key the service writes.
	KeyPrefix string
	// Key signs codes, links and status tokens (serve.download_key), each
	// with its own MAC domain; PreviousKeys are still accepted.
	Key          []byte
	PreviousKeys [][]byte
	// PublicURL is the externally visible base URL links start with.
	PublicURL string
	// DownloadTTL is how long a download link minted for a status page works.
	DownloadTTL time.Duration
	Intake      Intake
	// Accounts finds the account id of a verified address
	// (privacy.account_lookup); without it a page request names only the
	// address.
	Accounts Accounts
	Sender   Sender
	Logger   *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Regulation is the clock of the page's requests, the one the intake
	// gives Caller (console.client_regulations); GDPR when empty. The
	// receipt shows its deadline.
	Regulation string
	// MessageIDDomain is the right-hand side of the emails' Message-IDs.
	MessageIDDomain string
	// MaxSending bounds verification emails in flight; beyond it a send is
	// dropped (the person asks again), so a flood cannot pile up goroutines.
	MaxSending int
	// Registerer takes the page's metrics; none are registered when nil.
	Registerer prometheus.Registerer
}

// Outcomes of a verification email (the outcome label of
// gdpr_selfservice_verification_emails_total).
const (
	EmailSent      = "sent"
	EmailLimited   = "send_limit"
	EmailDropped   = "dropped"
	EmailFailed    = "failed"
	resultVerified = "verified"
)

// metrics are the page's counters. Their labels are fixed words (an
// outcome, a method, a request type): never an address, a flow or a code.
type metrics struct {
	emails        *prometheus.CounterVec
	verifications *prometheus.CounterVec
	submissions   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		emails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_selfservice_verification_emails_total",
			Help: "Verification emails of the privacy page, by outcome: sent, send_limit (privacy.sends_per_address or sends_per_email reached), dropped (too many in flight), failed (SMTP).",
		}, []string{"outcome"}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_selfservice_verifications_total",
			Help: "Verification attempts on the privacy page, by method (code, link) and result: verified, wrong, void (tries spent), expired, gone (used, unknown or forged), unavailable, failed (the submission after it failed).",
		}, []string{"method", "result"}),
		submissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gdpr_selfservice_submissions_total",
			Help: "Requests the privacy page submitted after a verification (broker confirmed), by type.",
		}, []string{"type"}),
	}
	for _, o := range []string{EmailSent, EmailLimited, EmailDropped, EmailFailed} {
		m.emails.WithLabelValues(o)
	}
	for _, method := range []string{"code", "link"} {
		for _, r := range []string{resultVerified, "wrong", "void", "expired", "gone", "unavailable", "failed"} {
			m.verifications.WithLabelValues(method, r)
		}
	}
	for _, k := range []string{event.KindAccess, event.KindErasure} {
		m.submissions.WithLabelValues(k)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.emails, m.verifications, m.submissions} {
		if err := reg.Register(c); err != nil {
			return metrics{}, fmt.Errorf("registering privacy page metrics: %w", err)
		}
	}
	return m, nil
}

// verificationResult names err's outcome for the verifications counter.
func verificationResult(err error) string {
	switch {
	case err == nil:
		return resultVerified
	case errors.Is(err, ErrWrongCode):
		return "wrong"
	case errors.Is(err, ErrLocked):
		return "locked"
	case errors.Is(err, ErrVoid):
		return "void"
	case errors.Is(err, ErrExpired):
		return "expired"
	case errors.Is(err, ErrGone):
		return "gone"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	}
	return "failed"
}

// Service is the page's logic; it is an app Component (Stop waits for the
// verification emails in flight).
type Service struct {
	opts    Options
	flows   flows
	pages   map[string]*template.Template
	emails  map[string]*texttemplate.Template
	now     func() time.Time
	keys    [][]byte
	metrics metrics

	sending chan struct{}
	wg      sync.WaitGroup
}

// New builds a Service, parsing its templates (and the operator's overrides).
func New(opts Options) (*Service, error) {
	if opts.Redis == nil || opts.Intake == nil || opts.Sender == nil || len(opts.Key) == 0 || opts.PublicURL == "" || opts.Logger == nil {
		return nil, errors.New("selfservice: Redis, Intake, Sender, Key, PublicURL and Logger are required")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	if _, err := deadline.Parse(opts.Regulation); err != nil {
		return nil, fmt.Errorf("selfservice: the page's regulation: %w", err)
	}
	if opts.MaxSending <= 0 {
		opts.MaxSending = 16
	}
	if opts.MessageIDDomain == "" {
		opts.MessageIDDomain = "gdpr.invalid"
	}
	if opts.DownloadTTL <= 0 {
		opts.DownloadTTL = 7 * 24 * time.Hour
	}
	var err error
	s := &Service{
		opts: opts,
		flows: flows{rdb: opts.Redis, prefix: opts.KeyPrefix, key: opts.Key,
			check: redis.NewScript(checkScript), rate: redis.NewScript(rateScript)},
		now:     opts.Now,
		keys:    append([][]byte{opts.Key}, opts.PreviousKeys...),
		sending: make(chan struct{}, opts.MaxSending),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.metrics, err = newMetrics(opts.Registerer); err != nil {
		return nil, err
	}
	if s.pages, err = parsePages(opts.Config.TemplateDir, opts.Config.CodeTTL); err != nil {
		return nil, err
	}
	if s.emails, err = ParseEmailTemplates(embedded, "templates/email", opts.Config.TemplateDir, "verify"); err != nil {
		return nil, err
	}
	s.opts.Logger = opts.Logger.With("component", "privacy page")
	return s, nil
}

// Name identifies the component in logs.
func (s *Service) Name() string { return "privacy page" }

// Start does nothing: the page is served by the API server.
func (s *Service) Start(context.Context) error { return nil }

// Stop waits for the verification emails in flight, until ctx ends.
func (s *Service) Stop(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for verification emails: %w", ctx.Err())
	}
}

// Locale returns the shipped locale for a requested one, else the default.
func (s *Service) Locale(requested string) string {
	if l := Supported(requested); l != "" {
		return l
	}
	return s.opts.Config.DefaultLocale
}

// SecureCookies is whether the page's cookies need HTTPS (public_url is https).
func (s *Service) SecureCookies() bool { return strings.HasPrefix(s.opts.PublicURL, "https:") }

// DefaultLocale is privacy.default_locale.
func (s *Service) DefaultLocale() string { return s.opts.Config.DefaultLocale }

// BeginInput is the start of a verification, as the form gives it. There
// is no account id: the page can verify only the address (see Accounts).
type BeginInput struct {
	Type, Email, Locale string
	// ClientAddr is the client's address as serve.trusted_proxies says
	// (modules/api finds it).
	ClientAddr string
}

// Begin starts a verification and returns its id. Whatever the address,
// known to any system or not, within the send limits or not, the answer is
// the same: an id for the code page; the email goes out in the background,
// so not even the time taken tells anything. Only invalid input (a
// *intake.FieldError) and an unreachable Redis are errors.
func (s *Service) Begin(ctx context.Context, in BeginInput) (string, error) {
	sub, err := intake.NewSubmission(in.Type, "", strings.TrimSpace(in.Email))
	if err != nil {
		return "", err
	}
	id, err := newFlowID()
	if err != nil {
		return "", err
	}
	code, err := newCode()
	if err != nil {
		return "", err
	}
	now := s.now()
	cfg := s.opts.Config
	locale := s.Locale(in.Locale)
	expires := now.Add(cfg.CodeTTL)
	// Both limits are counted on every start, so one busy address cannot
	// spend another's allowance by being refused first. They are counted
	// before anything is stored: a start held back leaves no verification
	// (a code that was never sent cannot be guessed, and a flood of starts
	// does not fill Redis with addresses), and its id, as random as any,
	// finds nothing.
	byAddr, err := s.flows.allow(ctx, "addr", s.flows.digest(scopeAddr, in.ClientAddr), cfg.SendsPerAddress, cfg.SendWindow, now)
	if err != nil {
		return "", err
	}
	byEmail, err := s.flows.allow(ctx, "email", s.flows.digest(scopeEmail, strings.ToLower(sub.Subject.Email)), cfg.SendsPerEmail, cfg.SendWindow, now)
	if err != nil {
		return "", err
	}
	if !byAddr || !byEmail {
		limit := "sends_per_email"
		if !byAddr {
			limit = "sends_per_address"
		}
		s.opts.Logger.WarnContext(ctx, "verification email not sent: send limit reached", "limit", limit)
		s.metrics.emails.WithLabelValues(EmailLimited).Inc()
		return id, nil
	}
	d := flowData{Type: sub.Type, Email: sub.Subject.Email, Locale: locale}
	if err := s.flows.store(ctx, id, code, d, expires, cfg.CodeTTL); err != nil {
		return "", err
	}
	link := s.url("/privacy/confirm", url.Values{"flow": {id}, "token": {download.SignFor(s.opts.Key, scopeLink, id, expires)}, "lang": {locale}})
	e, err := s.renderEmail("verify", locale, map[string]any{
		"Code": code, "Link": link, "Type": sub.Type, "Minutes": int(cfg.CodeTTL.Minutes()),
	})
	if err != nil {
		return "", err
	}
	e.To = sub.Subject.Email
	e.MessageID = "verify." + id + "@" + s.opts.MessageIDDomain
	e.Headers = map[string]string{"X-GDPR-Template": "verify"}
	select {
	case s.sending <- struct{}{}:
	default:
		s.opts.Logger.WarnContext(ctx, "verification email dropped: too many in flight")
		s.metrics.emails.WithLabelValues(EmailDropped).Inc()
		return id, nil
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { <-s.sending }()
		ctx := context.WithoutCancel(ctx)
		if err := s.opts.Sender.Send(ctx, e); err != nil {
			s.opts.Logger.WarnContext(ctx, "verification email failed", "error", err)
			s.metrics.emails.WithLabelValues(EmailFailed).Inc()
			return
		}
		s.metrics.emails.WithLabelValues(EmailSent).Inc()
		s.opts.Logger.InfoContext(ctx, "verification email sent")
	}()
	return id, nil
}

// Receipt is what the page shows once a verified request was accepted.
type Receipt struct {
	Request intake.Status
	// StatusLink opens the request's status page.
	StatusLink string
}

// VerifyCode checks a code for verification flow and, when it is right,
// submits the request. Errors: ErrWrongCode (a *WrongCodeError), ErrVoid,
// ErrExpired, ErrGone, ErrUnavailable, intake's errors.
func (s *Service) VerifyCode(ctx context.Context, flow, code string) (Receipt, error) {
	code = strings.TrimSpace(code)
	if flow == "" || len(code) != 6 || strings.Trim(code, "0123456789") != "" {
		// A malformed code is a wrong one: it costs a try like any other.
		code = "malformed"
	}
	r, err := s.verify(ctx, flow, code)
	s.metrics.verifications.WithLabelValues("code", verificationResult(err)).Inc()
	return r, err
}

// CheckLink checks a signed link's signature and expiry, and that it was
// not used yet, without using it.
func (s *Service) CheckLink(ctx context.Context, flow, token string) error {
	if flow == "" || download.VerifyAnyFor(s.keys, scopeLink, flow, token, s.now()) != nil {
		return ErrGone
	}
	n, err := s.opts.Redis.Exists(ctx, s.flows.flowKey(flow)).Result()
	if err != nil {
		return fmt.Errorf("%w: checking a verification: %w", ErrUnavailable, err)
	}
	if n == 0 {
		return ErrGone
	}
	return nil
}

// VerifyLink uses a signed link: once the request is accepted the link is
// spent, and a replay finds nothing (ErrGone).
func (s *Service) VerifyLink(ctx context.Context, flow, token string) (Receipt, error) {
	if flow == "" || download.VerifyAnyFor(s.keys, scopeLink, flow, token, s.now()) != nil {
		s.metrics.verifications.WithLabelValues("link", "gone").Inc()
		return Receipt{}, ErrGone
	}
	r, err := s.verify(ctx, flow, "")
	s.metrics.verifications.WithLabelValues("link", verificationResult(err)).Inc()
	return r, err
}

func (s *Service) verify(ctx context.Context, flow, code string) (Receipt, error) {
	now := s.now()
	d, err := s.flows.verify(ctx, flow, code, now, s.opts.Config.CodeTries,
		guessLimit{limit: s.opts.Config.CodeFailuresPerEmail, window: s.opts.Config.CodeFailureWindow})
	if err != nil {
		return Receipt{}, err
	}
	// The account id is looked up only now that the address is proven, in
	// the operator's records; a failed lookup leaves the verification in
	// place, so the person can confirm again.
	account := ""
	if s.opts.Accounts != nil {
		if account, err = s.opts.Accounts.AccountOf(ctx, d.Email); err != nil {
			s.opts.Logger.WarnContext(ctx, "account lookup failed; the verification waits to be confirmed again", "class", source.Class(err))
			return Receipt{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	sub, err := intake.NewSubmission(d.Type, account, d.Email)
	if err != nil {
		return Receipt{}, fmt.Errorf("a stored verification is invalid: %w", err)
	}
	sub.Verification = &event.Verification{Method: event.VerificationEmail, VerifiedAt: now.UTC()}
	sub.Locale = d.Locale
	sub.Receipt = true
	// The verification's id is the idempotency key: confirming twice (a
	// double click, a retry after a timeout) is one request.
	acc, err := s.opts.Intake.Submit(ctx, Caller, flow, sub)
	if err != nil {
		return Receipt{}, err
	}
	acc.Settle()
	s.metrics.submissions.WithLabelValues(sub.Type).Inc()
	if err := s.flows.done(ctx, flow); err != nil {
		s.opts.Logger.WarnContext(ctx, "forgetting a used verification failed; it expires with its code", "request_id", acc.ID, "error", err)
	}
	s.opts.Logger.InfoContext(ctx, "privacy page request verified", "request_id", acc.ID, "type", sub.Type)
	return Receipt{
		Request:    intake.Status{ID: acc.ID, Type: sub.Type, State: intake.StateSubmitted, SubmittedAt: now.UTC(), DueAt: s.regulation().DueAt(now)},
		StatusLink: StatusURL(s.opts.PublicURL, s.opts.Key, acc.ID, s.opts.Config.StatusLinkTTL, now),
	}, nil
}

// regulation is the page's requests' clock (Options.Regulation, checked
// by New).
func (s *Service) regulation() deadline.Regulation {
	r, _ := deadline.Parse(s.opts.Regulation)
	return r
}

// StatusURL is the status page link of a request, valid for ttl from now;
// the receipt email carries it.
func StatusURL(publicURL string, key []byte, requestID string, ttl time.Duration, now time.Time) string {
	q := url.Values{"request": {requestID}, "token": {download.SignFor(key, scopeStatus, requestID, now.Add(ttl))}}
	return strings.TrimRight(publicURL, "/") + "/privacy/status?" + q.Encode()
}

// DownloadPageURL is the download page link of a request's report; its
// token is the report download token, so the page's button works as long
// as the page does.
func DownloadPageURL(publicURL string, key []byte, requestID string, ttl time.Duration, now time.Time) string {
	q := url.Values{"request": {requestID}, "token": {download.Sign(key, requestID, now.Add(ttl))}}
	return strings.TrimRight(publicURL, "/") + "/privacy/download?" + q.Encode()
}

// StatusPage is what the status page shows.
type StatusPage struct {
	Request intake.Status
	// DownloadLink is set once an access report is ready, until it is deleted.
	DownloadLink string
	// Deleted says why the report is gone (an erasure of the subject, or
	// retention); no download link is made for it.
	Deleted *intake.GoneError
}

// Status returns a request's status for a status link; a forged or expired
// link is ErrGone, as is a request that no longer exists; a request an
// operator cancelled is ErrWithdrawn.
func (s *Service) Status(ctx context.Context, requestID, token string) (StatusPage, error) {
	id, err := intake.ParseID(requestID)
	if err != nil {
		return StatusPage{}, ErrGone
	}
	now := s.now()
	if download.VerifyAnyFor(s.keys, scopeStatus, id, token, now) != nil {
		return StatusPage{}, ErrGone
	}
	st, err := s.opts.Intake.Status(ctx, id)
	if errors.Is(err, intake.ErrNotFound) {
		return StatusPage{}, ErrGone
	}
	if err != nil {
		return StatusPage{}, err
	}
	if st.State == string(record.StateCancelled) {
		return StatusPage{}, ErrWithdrawn
	}
	// Participant names are the company's systems: not for the subject's eyes.
	st.Participants = nil
	p := StatusPage{Request: st}
	if st.Type == event.KindAccess && st.State == "completed" {
		gone, err := s.opts.Intake.ReportDeleted(ctx, id)
		if err != nil {
			return StatusPage{}, err
		}
		if p.Deleted = gone; gone == nil {
			p.DownloadLink = DownloadPageURL(s.opts.PublicURL, s.opts.Key, id, s.opts.DownloadTTL, now)
		}
	}
	return p, nil
}

// DownloadPage is what the download page shows.
type DownloadPage struct {
	RequestID string
	// Link is the report download (the API's report endpoint).
	Link  string
	Until time.Time
	// Contents is what the report holds, per source.
	Contents []record.ReportSource
}

// Download checks a download page's token; a forged or expired one is
// ErrGone. A report that was deleted is a *intake.GoneError, for any link
// gdpr signed (expired or not), as the report endpoint answers it.
func (s *Service) Download(ctx context.Context, requestID, token string) (DownloadPage, error) {
	id, err := intake.ParseID(requestID)
	if err != nil {
		return DownloadPage{}, ErrGone
	}
	tokenErr := s.opts.Intake.DownloadToken(id, token)
	if tokenErr != nil && !errors.Is(tokenErr, download.ErrExpired) {
		return DownloadPage{}, ErrGone
	}
	contents, gone, err := s.opts.Intake.Report(ctx, id)
	if err != nil {
		return DownloadPage{}, err
	}
	if gone != nil {
		return DownloadPage{}, gone
	}
	if tokenErr != nil {
		return DownloadPage{}, ErrGone
	}
	until, _ := download.Expiry(token)
	return DownloadPage{
		RequestID: id,
		Link:      download.Path(id) + "?" + url.Values{"token": {token}}.Encode(),
		Until:     until.UTC(),
		Contents:  contents,
	}, nil
}

func (s *Service) url(path string, q url.Values) string {
	return strings.TrimRight(s.opts.PublicURL, "/") + path + "?" + q.Encode()
}

// Language is one entry of the page's language switch.
type Language struct {
	Code, Name, Href string
	Current          bool
}

// Page is the data of every page template.
type Page struct {
	Locale    string
	Languages []Language
	CSRF      string
	Flow      string
	Token     string
	TriesLeft int
	Error     string
	Problem   string
	Link      string
	RequestID string
	Until     time.Time
	// Contents is the download page's list of what the report holds.
	Contents []record.ReportSource
	Request  intake.Status
	// Deleted is set when the request's report was deleted: at the
	// subject's own request (intake.GoneSubjectErasure) or by retention.
	Deleted *intake.GoneError
	// Withdrawn is set on the gone page of a cancelled request's link.
	Withdrawn bool
}

// Render writes page name in locale; self is the page's own URL, which the
// language switch links to with another lang.
func (s *Service) Render(w io.Writer, name, locale string, self *url.URL, p Page) error {
	t, ok := s.pages[locale]
	if !ok {
		t = s.pages[s.opts.Config.DefaultLocale]
		locale = s.opts.Config.DefaultLocale
	}
	p.Locale = locale
	cat := catalog()
	p.Languages = nil
	for _, l := range Locales() {
		u := *self
		q := u.Query()
		q.Set("lang", l)
		u.RawQuery = q.Encode()
		p.Languages = append(p.Languages, Language{Code: l, Name: cat[l]["lang.name"], Href: u.RequestURI(), Current: l == locale})
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, name, p); err != nil {
		return fmt.Errorf("rendering page %s: %w", name, err)
	}
	_, err := buf.WriteTo(w)
	return err
}

// Static is the page's stylesheet (and any other asset), served from the binary.
func Static() fs.FS {
	sub, _ := fs.Sub(embedded, "static")
	return sub
}

// parsePages parses the pages of every locale. A text's {minutes} is
// privacy.code_ttl in whole minutes, so the page states the code's real
// lifetime (it once said 10 whatever code_ttl was).
func parsePages(dir string, codeTTL time.Duration) (map[string]*template.Template, error) {
	cat := catalog()
	out := map[string]*template.Template{}
	minutes := strconv.Itoa(int(codeTTL.Minutes()))
	for _, l := range Locales() {
		texts := cat[l]
		funcs := template.FuncMap{
			"t": func(key string) string {
				v, ok := texts[key]
				if !ok {
					v = cat[LocaleEnglish][key]
				}
				return strings.ReplaceAll(v, "{minutes}", minutes)
			},
			"date": func(v any) string {
				var t time.Time
				switch x := v.(type) {
				case time.Time:
					t = x
				case *time.Time:
					if x == nil {
						return ""
					}
					t = *x
				}
				if l == LocaleGerman {
					return t.UTC().Format("2.1.2006, 15:04 MST")
				}
				return t.UTC().Format("2 January 2006, 15:04 MST")
			},
		}
		t, err := template.New("pages").Funcs(funcs).ParseFS(embedded, "templates/pages/*.html")
		if err != nil {
			return nil, fmt.Errorf("parsing page templates: %w", err)
		}
		if dir != "" {
			matches, _ := filepath.Glob(filepath.Join(dir, "pages", "*.html"))
			// One file at a time, so that an error names the file at fault.
			for _, file := range matches {
				if t, err = t.ParseFiles(file); err != nil {
					return nil, fmt.Errorf("privacy.template_dir: page template %s: %w", file, err)
				}
			}
			// An override can parse and still break a page when it runs (a
			// field the page data lacks, a template nobody defines): every
			// page is rendered once now, so serve refuses to start rather
			// than answer a data subject with an error.
			for _, name := range pageNames() {
				if err := t.ExecuteTemplate(io.Discard, name, Page{Locale: l}); err != nil {
					return nil, fmt.Errorf("privacy.template_dir: page %q (from %s) does not render: %w", name, filepath.Join(dir, "pages"), err)
				}
			}
		}
		out[l] = t
	}
	return out, nil
}

// pageNames are the page templates modules/api renders.
func pageNames() []string {
	return []string{"form", "sent", "link", "receipt", "status", "download", "gone", "problem"}
}

// ParseEmailTemplates parses each named email template of every shipped
// locale from fsys under root/<locale>/<name>.tmpl, each replaced by
// dir/email/<locale>/<name>.tmpl when the operator's template directory has
// it. The map is keyed "<locale>/<name>". notify uses it for its emails too.
func ParseEmailTemplates(fsys fs.FS, root, dir string, names ...string) (map[string]*texttemplate.Template, error) {
	out := map[string]*texttemplate.Template{}
	for _, l := range Locales() {
		for _, name := range names {
			file := name + ".tmpl"
			var t *texttemplate.Template
			var err error
			override := ""
			if dir != "" {
				override = filepath.Join(dir, "email", l, file)
				if _, serr := os.Stat(override); serr != nil {
					override = ""
				}
			}
			if override != "" {
				t, err = texttemplate.ParseFiles(override)
				if err == nil {
					err = definesSubjectAndBody(t)
				}
				if err != nil {
					return nil, fmt.Errorf("privacy.template_dir: email template %s: %w", override, err)
				}
			} else {
				t, err = texttemplate.ParseFS(fsys, root+"/"+l+"/"+file)
			}
			if err != nil {
				return nil, fmt.Errorf("parsing email template %s/%s: %w", l, name, err)
			}
			out[l+"/"+name] = t
		}
	}
	return out, nil
}

// definesSubjectAndBody refuses an email template that would fail at its
// first send, not at startup.
func definesSubjectAndBody(t *texttemplate.Template) error {
	for _, name := range []string{"subject", "body"} {
		if t.Lookup(name) == nil {
			return fmt.Errorf(`defines no {{define %q}}`, name)
		}
	}
	return nil
}

func (s *Service) renderEmail(name, locale string, data any) (Email, error) {
	t := s.emails[locale+"/"+name]
	var subject, body bytes.Buffer
	if err := t.ExecuteTemplate(&subject, "subject", data); err != nil {
		return Email{}, fmt.Errorf("rendering %s subject: %w", name, err)
	}
	if err := t.ExecuteTemplate(&body, "body", data); err != nil {
		return Email{}, fmt.Errorf("rendering %s body: %w", name, err)
	}
	return Email{Subject: subject.String(), Body: strings.TrimLeft(body.String(), "\n")}, nil
}

// TriesLeftOf returns the tries left of a wrong-code error.
func TriesLeftOf(err error) int {
	var w *WrongCodeError
	if errors.As(err, &w) {
		return w.TriesLeft
	}
	return 0
}
