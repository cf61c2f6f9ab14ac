package config

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/expand"
)

// DevEncryptionKey is the report encryption key used when none is configured.
// It is public (it is in the source code), so reports encrypted with it are
// NOT protected at rest: it exists only so `make run` works out of the box.
// Operators must set report.encryption_key (GDPR_REPORT_ENCRYPTION_KEY); the
// report builder logs a warning while this key is in use.
const DevEncryptionKey = "646576656c6f706d656e742d6f6e6c792d6b65792d6e6f742d7365637265742e" // "development-only-key-not-secret."

// Report configures access report building and storage.
type Report struct {
	// StorageDir is where finished (encrypted) reports are kept.
	StorageDir string `yaml:"storage_dir"`
	// SpoolDir holds the short-lived encrypted spool files a build writes
	// while it reads the sources (default: the system temp directory). The
	// files are unlinked as soon as they are created, so a crash leaves none.
	SpoolDir string `yaml:"spool_dir"`
	// EncryptionKey encrypts reports at rest (32 bytes, hex or base64); it is
	// the active key, the one new reports are encrypted with.
	EncryptionKey string `yaml:"encryption_key" secret:"true"`
	// PreviousEncryptionKeys are former encryption keys (same format): reports
	// encrypted with them still open, so a key can be rotated without
	// rebuilding reports. Remove a key once no stored report needs it.
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys" secret:"true"`
	// Retention is how long a report is kept after it was built: the
	// download link's lifetime (serve.download_ttl) plus a grace period.
	// Then the retention sweeper deletes it and its link answers 410 Gone.
	Retention time.Duration `yaml:"retention"`
	// SourceTimeout bounds reading one source when it sets no timeout of its own.
	SourceTimeout time.Duration `yaml:"source_timeout"`
	// SourceConcurrency is how many sources of one report are read at once.
	SourceConcurrency int `yaml:"source_concurrency"`
	// MaxResponseBytes bounds one http source response or one Elasticsearch page; past it the read fails with source_too_large.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// MaxValueBytes bounds one JSON value in a source response (a record, or a member skipped on the way to records_path); past it the read fails with source_too_large.
	MaxValueBytes int64 `yaml:"max_value_bytes"`
	// Sources are read for every access report.
	Sources []Source `yaml:"sources"`
}

// Source is one place personal data is read from for an access report.
type Source struct {
	// Name names the source's files in the report (<name>.json, <name>.csv).
	Name string `yaml:"name"`
	// Kind is postgres, mysql, http or elasticsearch.
	Kind string `yaml:"kind"`
	// Timeout bounds reading this source (default report.source_timeout).
	Timeout time.Duration `yaml:"timeout"`
	// DSN is used by the postgres and mysql kinds (a postgres:// URL or
	// key=value string; a go-sql-driver/mysql DSN such as
	// user:pass@tcp(host:3306)/db).
	DSN string `yaml:"dsn" secret:"true"`
	// MaxConns bounds the connections kept open to a postgres or mysql source.
	MaxConns int `yaml:"max_conns"`
	// Query is SQL with named parameters @subject_id, @email, @phone and
	// @identifier.<name>, or an Elasticsearch query body template with
	// {subject_id}, {email}, {phone} and {identifier.<name>}.
	Query string `yaml:"query"`
	// URL is a template with {subject_id}, {email}, {phone} and
	// {identifier.<name>} (serve.identifiers) for http sources, and
	// the Elasticsearch base URL for elasticsearch sources.
	URL string `yaml:"url"`
	// Method is GET (default) or POST for http sources.
	Method string `yaml:"method"`
	// Body is an optional request body template for http sources.
	Body string `yaml:"body"`
	// AuthHeader is sent as Authorization on http and elasticsearch sources.
	AuthHeader string `yaml:"auth_header" secret:"true"`
	// RecordsPath is the dotted path to the array of records in an http
	// source's JSON response (e.g. "data.items"); empty means the response
	// itself (an array is many records, an object is one).
	RecordsPath string `yaml:"records_path"`
	// Index is the Elasticsearch index pattern.
	Index string `yaml:"index"`
	// PageSize is the number of hits fetched per Elasticsearch scroll page.
	PageSize int `yaml:"page_size"`
}

func defaultReport() Report {
	return Report{
		StorageDir:    "./var/reports",
		EncryptionKey: DevEncryptionKey,
		// serve.download_ttl (7 days) plus 7 days' grace.
		Retention:         14 * 24 * time.Hour,
		SourceTimeout:     2 * time.Minute,
		SourceConcurrency: 4,
		MaxResponseBytes:  256 << 20,
		MaxValueBytes:     8 << 20,
	}
}

// ParseEncryptionKey decodes a 32-byte key given as hex (64 characters) or
// standard/URL base64.
func ParseEncryptionKey(s string) ([]byte, error) {
	return parseEncryptionKey("report.encryption_key", s)
}

func parseEncryptionKey(setting, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, invalid(setting, "must be 32 bytes as 64 hex characters or base64")
}

// Keys decodes the encryption keys, the active key (encryption_key) first
// and then the previous ones in the order given.
func (r Report) Keys() ([][]byte, error) {
	active, err := ParseEncryptionKey(r.EncryptionKey)
	if err != nil {
		return nil, err
	}
	keys := [][]byte{active}
	for i, s := range r.PreviousEncryptionKeys {
		k, err := parseEncryptionKey("report.previous_encryption_keys["+strconv.Itoa(i)+"]", s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (r Report) validate() error {
	if r.StorageDir == "" {
		return invalid("report.storage_dir", "must be set")
	}
	if _, err := r.Keys(); err != nil {
		return err
	}
	if r.SourceTimeout <= 0 {
		return invalid("report.source_timeout", "must be > 0, got %s", r.SourceTimeout)
	}
	if r.SourceConcurrency < 1 {
		return invalid("report.source_concurrency", "must be >= 1, got %d", r.SourceConcurrency)
	}
	if r.MaxValueBytes < 1024 {
		return invalid("report.max_value_bytes", "must be >= 1024, got %d", r.MaxValueBytes)
	}
	if r.MaxResponseBytes < r.MaxValueBytes {
		return invalid("report.max_response_bytes", "must be >= report.max_value_bytes (%d), got %d", r.MaxValueBytes, r.MaxResponseBytes)
	}
	seen := map[string]bool{}
	for i, s := range r.Sources {
		if err := s.validate("report.sources["+strconv.Itoa(i)+"]", seen); err != nil {
			return err
		}
	}
	return nil
}

func validSourceName(name string) bool {
	if name == "" || name == "manifest" || strings.HasPrefix(name, ".") {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

func (s Source) validate(path string, seen map[string]bool) error {
	switch {
	case s.Name == "":
		return invalid(path+".name", "must be set")
	case !validSourceName(s.Name):
		return invalid(path+".name", "must be letters, digits, '_', '-' or '.' (not starting with '.', not \"manifest\"), got %q", s.Name)
	case seen[s.Name]:
		return invalid(path+".name", "must be unique, %q repeats", s.Name)
	case s.Timeout < 0:
		return invalid(path+".timeout", "must be >= 0, got %s", s.Timeout)
	}
	seen[s.Name] = true
	switch s.Kind {
	case "postgres", "mysql":
		switch {
		case s.DSN == "":
			return invalid(path+".dsn", "must be set for kind %s", s.Kind)
		case s.Query == "":
			return invalid(path+".query", "must be set for kind %s", s.Kind)
		case !strings.Contains(s.Query, "@subject_id") && !strings.Contains(s.Query, "@email") &&
			!strings.Contains(s.Query, "@phone") && !strings.Contains(s.Query, "@identifier."):
			// Without an identifier the query would return everybody's rows.
			return invalid(path+".query", "must use @subject_id, @email, @phone or @identifier.<name>")
		case s.MaxConns < 0:
			return invalid(path+".max_conns", "must be >= 0, got %d", s.MaxConns)
		}
	case "http":
		if s.URL == "" {
			return invalid(path+".url", "must be set")
		}
		u, err := expand.ParseURL(s.URL, sourcePlaceholders(s.URL)...)
		if err != nil {
			return invalid(path+".url", "%s", err)
		}
		uses := len(u.Names()) > 0
		if s.Body != "" {
			b, err := expand.ParseJSON(s.Body, sourcePlaceholders(s.Body)...)
			if err != nil {
				return invalid(path+".body", "%s", err)
			}
			uses = uses || len(b.Names()) > 0
		}
		if !uses {
			return invalid(path+".url", "must use {subject_id}, {email}, {phone} or {identifier.<name>} (in the url or the body)")
		}
		switch strings.ToUpper(s.Method) {
		case "", "GET", "POST":
		default:
			return invalid(path+".method", "must be GET or POST, got %q", s.Method)
		}
	case "elasticsearch":
		if err := validURL(path+".url", s.URL); err != nil {
			return err
		}
		switch {
		case s.Index == "":
			return invalid(path+".index", "must be set for kind elasticsearch")
		case s.Query == "":
			return invalid(path+".query", "must be set for kind elasticsearch")
		case s.PageSize < 0:
			return invalid(path+".page_size", "must be >= 0, got %d", s.PageSize)
		}
		q, err := expand.ParseJSON(s.Query, sourcePlaceholders(s.Query)...)
		if err != nil {
			return invalid(path+".query", "%s", err)
		}
		if len(q.Names()) == 0 {
			return invalid(path+".query", "must use {subject_id}, {email}, {phone} or {identifier.<name>}")
		}
	default:
		return invalid(path+".kind", "must be postgres, mysql, http or elasticsearch, got %q", s.Kind)
	}
	return nil
}

// sourcePlaceholders are the identifiers an http or elasticsearch source
// template may use: the fixed ones and the {identifier.<name>} it names.
func sourcePlaceholders(tmpl string) []string {
	return append([]string{"subject_id", "email", "phone"}, expand.IdentifierPlaceholders(tmpl)...)
}

// sqlIdentifier finds @identifier.<name> parameters of a SQL query.
var sqlIdentifier = regexp.MustCompile(`@identifier\.([a-z][a-z0-9_]*)`)

// undeclaredIdentifier names the first {identifier.<name>} or
// @identifier.<name> of the sources and participants that serve.identifiers
// does not declare: no request could ever fill it.
func (c Config) undeclaredIdentifier() error {
	check := func(setting, tmpl string) error {
		names := expand.IdentifierPlaceholders(tmpl)
		for _, m := range sqlIdentifier.FindAllStringSubmatch(tmpl, -1) {
			names = append(names, "identifier."+m[1])
		}
		for _, n := range names {
			if !slices.Contains(c.Serve.Identifiers, strings.TrimPrefix(n, "identifier.")) {
				return invalid(setting, "uses %s, which serve.identifiers does not declare", n)
			}
		}
		return nil
	}
	for i, s := range c.Report.Sources {
		for _, f := range []struct{ name, tmpl string }{{"query", s.Query}, {"url", s.URL}, {"body", s.Body}} {
			if err := check(fmt.Sprintf("report.sources[%d].%s", i, f.name), f.tmpl); err != nil {
				return err
			}
		}
	}
	for i, p := range c.Canceller.Participants {
		if err := check(fmt.Sprintf("canceller.participants[%d].url", i), p.URL); err != nil {
			return err
		}
	}
	return nil
}

// validURL checks an Elasticsearch base URL (no placeholders).
func validURL(setting, raw string) error {
	if raw == "" {
		return invalid(setting, "must be set")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalid(setting, "must be an http(s) URL with a host")
	}
	return nil
}
