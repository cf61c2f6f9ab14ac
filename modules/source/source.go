// Package source reads a data subject's records from the places personal data
// lives: SQL databases (PostgreSQL, MySQL/MariaDB), third-party HTTP APIs and
// Elasticsearch. Every source streams its records one at a time as JSON
// objects to a Sink, so memory stays bounded however many rows a subject has.
package source

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"time"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
)

// Sink receives a source's records.
type Sink interface {
	// Columns announces the column names when they are known before any row
	// (SQL result sets), so even an empty result has a CSV header.
	Columns(cols []string) error
	// Row receives one record as a compact JSON object. obj is only valid
	// during the call.
	Row(obj []byte) error
}

// Source is one configured place personal data is read from.
type Source interface {
	// Name is the configured name; it names the report's files.
	Name() string
	// Kind is postgres, mysql, http or elasticsearch.
	Kind() string
	// Applies reports whether the subject has the identifiers this source
	// needs. A source that does not apply is skipped rather than queried with
	// an empty identifier, which could match other people's records.
	Applies(subject event.Subject) bool
	// Read streams the subject's records to sink.
	Read(ctx context.Context, subject event.Subject, sink Sink) error
	// Close releases connections.
	Close() error
}

// Error classes: short, stable strings free of personal data, for metrics
// labels, request history and logs.
const (
	ClassTimeout     = "source_timeout"
	ClassUnavailable = "source_unavailable"
	ClassQuery       = "source_query"
	ClassHTTP4xx     = "source_http_4xx"
	ClassHTTP5xx     = "source_http_5xx"
	ClassBadResponse = "source_bad_response"
	ClassPartial     = "source_partial"
	ClassSink        = "source_sink"
	// ClassRefused: an identifier could not be put into the source's
	// template (empty, "." or ".."), or the expansion would change where the
	// call goes; nothing was sent.
	ClassRefused = "source_refused"
	// ClassRedirect: the source redirected to another origin or changed the
	// method; the redirect was not followed.
	ClassRedirect = "source_redirect"
)

// Sentinels matched by errors.Is on an *Error of the same class.
var (
	ErrTimeout     = errors.New(ClassTimeout)
	ErrUnavailable = errors.New(ClassUnavailable)
	ErrQuery       = errors.New(ClassQuery)
	ErrHTTP4xx     = errors.New(ClassHTTP4xx)
	ErrHTTP5xx     = errors.New(ClassHTTP5xx)
	ErrBadResponse = errors.New(ClassBadResponse)
	ErrPartial     = errors.New(ClassPartial)
	ErrRefused     = errors.New(ClassRefused)
	ErrRedirect    = errors.New(ClassRedirect)
)

func sentinels() map[string]error {
	return map[string]error{
		ClassTimeout:     ErrTimeout,
		ClassUnavailable: ErrUnavailable,
		ClassQuery:       ErrQuery,
		ClassHTTP4xx:     ErrHTTP4xx,
		ClassHTTP5xx:     ErrHTTP5xx,
		ClassBadResponse: ErrBadResponse,
		ClassPartial:     ErrPartial,
		ClassRefused:     ErrRefused,
		ClassRedirect:    ErrRedirect,
		ClassTooLarge:    ErrTooLarge,
	}
}

// Error is a failed read of one source. Its text names the source and the
// class and carries a detail chosen not to contain personal data (no URLs
// with identifiers, no SQL error messages that may quote values).
type Error struct {
	Source string
	Class  string
	Detail string
	// Err is the underlying error. It may contain personal data (a URL with an
	// email, a database message quoting a value): do not log it.
	Err error
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("source %s: %s", e.Source, e.Class)
	}
	return fmt.Sprintf("source %s: %s: %s", e.Source, e.Class, e.Detail)
}

// Unwrap exposes the class sentinel and, for the sink class, the sink's own
// error (a disk error while spooling, a cancelled context).
func (e *Error) Unwrap() []error {
	errs := []error{}
	if s, ok := sentinels()[e.Class]; ok {
		errs = append(errs, s)
	}
	if e.Class == ClassSink || errors.Is(e.Err, context.Canceled) {
		errs = append(errs, e.Err)
	}
	return errs
}

// Class returns the error class of err if it is (or wraps) an *Error, else "".
func Class(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ""
}

// fail builds an *Error, turning context errors into the timeout class (the
// per-source deadline) and keeping a parent's cancellation recognisable.
func fail(name, class, detail string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		class, detail = ClassTimeout, "deadline exceeded"
	}
	return &Error{Source: name, Class: class, Detail: detail, Err: err}
}

// transportFailure classifies a failure to talk to a source at all.
func transportFailure(name string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fail(name, ClassTimeout, "deadline exceeded", err)
	case errors.Is(err, context.Canceled):
		return &Error{Source: name, Class: ClassUnavailable, Detail: "cancelled", Err: err}
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return fail(name, ClassUnavailable, op.Op+": "+safeNetErr(op), err)
	}
	return fail(name, ClassUnavailable, "connection failed", err)
}

func safeNetErr(op *net.OpError) string {
	if op.Err == nil {
		return "failed"
	}
	return op.Err.Error()
}

// sinkFailure wraps an error the sink returned (disk full, cancelled build).
func sinkFailure(name string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Source: name, Class: ClassSink, Detail: "writing records", Err: err}
}

// Options are shared by the sources built from one configuration.
type Options struct {
	// HTTPClient is used by http and elasticsearch sources (default: a
	// dedicated client with pooled connections and no overall timeout; the
	// per-source timeout bounds each read through its context).
	HTTPClient *http.Client
	// Limits bound each http and elasticsearch response; zero fields are
	// the defaults.
	Limits Limits
}

// New builds the source described by cfg.
func New(cfg Config, opts Options) (Source, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		}}
	}
	// A copy, so a caller's client keeps its own policy: the source's
	// credentials must not follow a redirect to another origin.
	hc := *opts.HTTPClient
	hc.CheckRedirect = expand.CheckRedirect
	opts.HTTPClient = &hc
	switch cfg.Kind {
	case "postgres", "mysql":
		return newSQL(cfg)
	case "http":
		return newHTTP(cfg, opts.HTTPClient, opts.Limits)
	case "elasticsearch":
		return newElasticsearch(cfg, opts.HTTPClient, opts.Limits)
	}
	return nil, fmt.Errorf("source %s: unknown kind %q", cfg.Name, cfg.Kind)
}

// Placeholders of http and elasticsearch source templates: {subject_id},
// {email}, {phone} and {identifier.<name>} for each named identifier the
// template uses.
const (
	phSubjectID      = "subject_id"
	phEmail          = "email"
	phPhone          = "phone"
	identifierPrefix = "identifier."
)

// placeholders are the placeholder names of templates (the fixed ones and
// the {identifier.<name>} they use).
func placeholders(templates ...string) []string {
	out := []string{phSubjectID, phEmail, phPhone}
	for _, t := range templates {
		out = append(out, expand.IdentifierPlaceholders(t)...)
	}
	return out
}

func values(s event.Subject) expand.Values {
	v := expand.Values{phSubjectID: s.ID, phEmail: s.Email}
	maps.Copy(v, s.PlaceholderValues())
	return v
}

// appliesTemplate: every identifier a template references must be present
// and acceptable to the expander, because an empty one in a URL or query
// could match everybody. A source that does not apply is skipped (and the
// report's manifest says so) instead of being called.
func appliesTemplate(s event.Subject, names ...[]string) bool {
	v := values(s)
	for _, ns := range names {
		for _, n := range ns {
			if val := v[n]; val == "" || val == "." || val == ".." {
				return false
			}
		}
	}
	return true
}

// refused is the error of an expansion the expander would not do: no
// request is sent.
func refused(name string, err error) error {
	return fail(name, ClassRefused, "identifier refused by the template", err)
}
