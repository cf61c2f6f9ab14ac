package source

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/expand"
)

// Config is one place personal data is read from for an access report: an
// entry of report.sources. A new kind adds its fields and its checks here and
// its reader beside New, and touches no other package.
type Config struct {
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

// ValidName reports whether name may name a source's files in a report: it
// cannot escape the archive's directory or collide with the manifest.
func ValidName(name string) bool {
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

// FieldIdentifiers is the named identifiers one templated field of a source
// uses: Field is its setting ("query", "url", "body"), Names the <name> of
// each {identifier.<name>} (or, in a SQL query, @identifier.<name>).
type FieldIdentifiers struct {
	Field string
	Names []string
}

// Identifiers returns the named identifiers each templated field of c uses,
// in its kind's syntax, so that config can check each is declared in
// serve.identifiers without knowing the kinds: a new kind says here how its
// fields name identifiers.
func (c Config) Identifiers() []FieldIdentifiers {
	query := templateIdentifiers(c.Query)
	if c.Kind == "postgres" || c.Kind == "mysql" {
		query = IdentifierParams(c.Query)
	}
	return []FieldIdentifiers{
		{Field: "query", Names: query},
		{Field: "url", Names: templateIdentifiers(c.URL)},
		{Field: "body", Names: templateIdentifiers(c.Body)},
	}
}

// templateIdentifiers is the <name> of each {identifier.<name>} in tmpl.
func templateIdentifiers(tmpl string) []string {
	var out []string
	for _, p := range expand.IdentifierPlaceholders(tmpl) {
		out = append(out, strings.TrimPrefix(p, identifierPrefix))
	}
	return out
}

// Validate names the first bad field, each under path (such as
// "report.sources[2]"). Names being unique across sources is the caller's
// check: one source cannot see the others.
func (c Config) Validate(path string) error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%s.name must be set", path)
	case !ValidName(c.Name):
		return fmt.Errorf("%s.name must be letters, digits, '_', '-' or '.' (not starting with '.', not \"manifest\"), got %q", path, c.Name)
	case c.Timeout < 0:
		return fmt.Errorf("%s.timeout must be >= 0, got %s", path, c.Timeout)
	}
	switch c.Kind {
	case "postgres", "mysql":
		switch {
		case c.DSN == "":
			return fmt.Errorf("%s.dsn must be set for kind %s", path, c.Kind)
		case c.Query == "":
			return fmt.Errorf("%s.query must be set for kind %s", path, c.Kind)
		case !strings.Contains(c.Query, "@subject_id") && !strings.Contains(c.Query, "@email") &&
			!strings.Contains(c.Query, "@phone") && !strings.Contains(c.Query, "@identifier."):
			// Without an identifier the query would return everybody's rows.
			return fmt.Errorf("%s.query must use @subject_id, @email, @phone or @identifier.<name>", path)
		case c.MaxConns < 0:
			return fmt.Errorf("%s.max_conns must be >= 0, got %d", path, c.MaxConns)
		}
	case "http":
		return c.validateHTTP(path)
	case "elasticsearch":
		return c.validateElasticsearch(path)
	default:
		return fmt.Errorf("%s.kind must be postgres, mysql, http or elasticsearch, got %q", path, c.Kind)
	}
	return nil
}

func (c Config) validateHTTP(path string) error {
	if c.URL == "" {
		return fmt.Errorf("%s.url must be set", path)
	}
	u, err := expand.ParseURL(c.URL, placeholders(c.URL)...)
	if err != nil {
		return fmt.Errorf("%s.url %w", path, err)
	}
	uses := len(u.Names()) > 0
	if c.Body != "" {
		b, err := expand.ParseJSON(c.Body, placeholders(c.Body)...)
		if err != nil {
			return fmt.Errorf("%s.body %w", path, err)
		}
		uses = uses || len(b.Names()) > 0
	}
	if !uses {
		return fmt.Errorf("%s.url must use {subject_id}, {email}, {phone} or {identifier.<name>} (in the url or the body)", path)
	}
	switch strings.ToUpper(c.Method) {
	case "", "GET", "POST":
	default:
		return fmt.Errorf("%s.method must be GET or POST, got %q", path, c.Method)
	}
	return nil
}

func (c Config) validateElasticsearch(path string) error {
	if err := validBaseURL(path+".url", c.URL); err != nil {
		return err
	}
	switch {
	case c.Index == "":
		return fmt.Errorf("%s.index must be set for kind elasticsearch", path)
	case c.Query == "":
		return fmt.Errorf("%s.query must be set for kind elasticsearch", path)
	case c.PageSize < 0:
		return fmt.Errorf("%s.page_size must be >= 0, got %d", path, c.PageSize)
	}
	q, err := expand.ParseJSON(c.Query, placeholders(c.Query)...)
	if err != nil {
		return fmt.Errorf("%s.query %w", path, err)
	}
	if len(q.Names()) == 0 {
		return fmt.Errorf("%s.query must use {subject_id}, {email}, {phone} or {identifier.<name>}", path)
	}
	return nil
}

// validBaseURL checks an Elasticsearch base URL (no placeholders).
func validBaseURL(setting, raw string) error {
	if raw == "" {
		return errors.New(setting + " must be set")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New(setting + " must be an http(s) URL with a host")
	}
	return nil
}
