package source

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/gdpr-oss/gdpr/modules/event"
)

// sqlSource runs one query in a read-only transaction and streams its rows.
// PostgreSQL (pgx) and MySQL/MariaDB (go-sql-driver/mysql) share this code:
// only the driver and the placeholder style differ.
type sqlSource struct {
	name, kind string
	db         *sql.DB
	query      string
	// params lists, per placeholder in query, which identifier it binds.
	params []string
}

const (
	paramSubjectID = "subject_id"
	paramEmail     = "email"
	paramPhone     = "phone"
)

// IdentifierParams returns the names of the named identifiers a SQL query
// binds (@identifier.<name>), for the configuration's check that each is
// declared.
func IdentifierParams(query string) []string {
	_, params := bindNamed(query, true)
	var out []string
	for _, p := range params {
		if n, ok := strings.CutPrefix(p, identifierPrefix); ok {
			out = append(out, n)
		}
	}
	return out
}

func newSQL(cfg Config) (*sqlSource, error) {
	driver, dollar := "pgx", true
	if cfg.Kind == "mysql" {
		driver, dollar = "mysql", false
	}
	db, err := sql.Open(driver, cfg.DSN)
	if err != nil {
		// The DSN may hold a password: name the source, not the DSN.
		return nil, fmt.Errorf("source %s: parsing dsn: %w", cfg.Name, errors.New("invalid dsn"))
	}
	conns := cfg.MaxConns
	if conns == 0 {
		conns = 8
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	q, params := bindNamed(cfg.Query, dollar)
	return &sqlSource{name: cfg.Name, kind: cfg.Kind, db: db, query: q, params: params}, nil
}

func (s *sqlSource) Name() string { return s.name }
func (s *sqlSource) Kind() string { return s.kind }
func (s *sqlSource) Close() error { return s.db.Close() }

// Applies: a NULL identifier matches nothing in SQL, so a query runs when at
// least one identifier it uses is present.
func (s *sqlSource) Applies(subject event.Subject) bool {
	if len(s.params) == 0 {
		return true
	}
	for _, p := range s.params {
		if subjectValue(subject, p) != "" {
			return true
		}
	}
	return false
}

// subjectValue is the identifier of s that a query parameter or template
// placeholder name stands for ("" when s has none).
func subjectValue(s event.Subject, name string) string {
	switch name {
	case paramSubjectID:
		return s.ID
	case paramEmail:
		return s.Email
	case paramPhone:
		return s.Phone
	}
	if n, ok := strings.CutPrefix(name, identifierPrefix); ok {
		return s.Identifiers[n]
	}
	return ""
}

func (s *sqlSource) args(subject event.Subject) []any {
	args := make([]any, len(s.params))
	for i, p := range s.params {
		if v := subjectValue(subject, p); v != "" {
			args[i] = v
		}
	}
	return args
}

func (s *sqlSource) Read(ctx context.Context, subject event.Subject, sink Sink) (err error) {
	// Read-only: a report must never change the data it reports on, even if
	// the configured SQL is wrong.
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.classify(err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, s.query, s.args(subject)...)
	if err != nil {
		return s.classify(err)
	}
	defer rows.Close()
	types, err := rows.ColumnTypes()
	if err != nil {
		return s.classify(err)
	}
	cols := make([]string, len(types))
	keys := make([][]byte, len(types))
	isJSON := make([]bool, len(types))
	for i, t := range types {
		cols[i] = t.Name()
		keys[i] = append(AppendString(nil, t.Name()), ':')
		switch strings.ToUpper(t.DatabaseTypeName()) {
		case "JSON", "JSONB":
			isJSON[i] = true
		}
	}
	if err := sink.Columns(cols); err != nil {
		return sinkFailure(s.name, err)
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var ob objectBuilder
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return s.classify(err)
		}
		ob.reset()
		for i, v := range vals {
			ob.rawKey(keys[i])
			ob.buf = appendValue(ob.buf, v, isJSON[i])
		}
		if err := sink.Row(ob.finish()); err != nil {
			return sinkFailure(s.name, err)
		}
	}
	if err := rows.Err(); err != nil {
		return s.classify(err)
	}
	return nil
}

// appendValue renders a database/sql value as JSON. JSON columns are embedded
// as JSON, bytes that are not text as base64, times as RFC 3339.
func appendValue(dst []byte, v any, isJSON bool) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case int32:
		return strconv.AppendInt(dst, int64(v), 10)
	case uint64:
		return strconv.AppendUint(dst, v, 10)
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return AppendString(dst, strconv.FormatFloat(v, 'g', -1, 64))
		}
		return appendFloat(dst, v)
	case float32:
		return appendValue(dst, float64(v), false)
	case bool:
		return strconv.AppendBool(dst, v)
	case string:
		if isJSON && json.Valid([]byte(v)) {
			return appendCompact(dst, []byte(v))
		}
		return AppendString(dst, v)
	case []byte:
		if isJSON && json.Valid(v) {
			return appendCompact(dst, v)
		}
		if utf8.Valid(v) {
			return AppendString(dst, string(v))
		}
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, v)
		return append(dst, '"')
	case time.Time:
		dst = append(dst, '"')
		dst = v.UTC().AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"')
	}
	b, err := json.Marshal(v)
	if err != nil {
		return AppendString(dst, fmt.Sprint(v))
	}
	return append(dst, b...)
}

func appendCompact(dst, raw []byte) []byte {
	var ob objectBuilder
	ob.buf = dst
	if err := ob.compactValue(raw); err != nil {
		return AppendString(dst, string(raw))
	}
	return ob.buf
}

// classify maps a database error to a class. The detail keeps the SQLSTATE or
// error number, not the server's message, which may quote a value.
func (s *sqlSource) classify(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fail(s.name, ClassTimeout, "deadline exceeded", err)
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Source: s.name, Class: ClassUnavailable, Detail: "cancelled", Err: err}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if pgErr.Code == "57014" { // query_canceled: statement_timeout or our deadline
			return fail(s.name, ClassTimeout, "sqlstate "+pgErr.Code, err)
		}
		return fail(s.name, ClassQuery, "sqlstate "+pgErr.Code, err)
	}
	var myErr *mysql.MySQLError
	if errors.As(err, &myErr) {
		return fail(s.name, ClassQuery, "mysql error "+strconv.Itoa(int(myErr.Number)), err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fail(s.name, ClassUnavailable, "connect failed", err)
	}
	return transportFailure(s.name, err)
}

// bindNamed rewrites @subject_id, @email, @phone and @identifier.<name> into the driver's placeholders
// ($n for PostgreSQL, ? for MySQL), skipping string literals, quoted
// identifiers and comments, and returns which identifier each binds.
func bindNamed(q string, dollar bool) (string, []string) {
	var out strings.Builder
	var params []string
	pos := map[string]int{}
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for j < len(q) {
				if q[j] == c {
					if j+1 < len(q) && q[j+1] == c { // doubled quote escapes
						j += 2
						continue
					}
					break
				}
				if q[j] == '\\' && c != '"' && !dollar {
					j++ // MySQL backslash escapes
				}
				j++
			}
			end := min(j+1, len(q))
			out.WriteString(q[i:end])
			i = end
		case c == '-' && strings.HasPrefix(q[i:], "--"):
			j := strings.IndexByte(q[i:], '\n')
			if j < 0 {
				j = len(q) - i
			}
			out.WriteString(q[i : i+j])
			i += j
		case c == '/' && strings.HasPrefix(q[i:], "/*"):
			j := strings.Index(q[i+2:], "*/")
			end := len(q)
			if j >= 0 {
				end = i + 2 + j + 2
			}
			out.WriteString(q[i:end])
			i = end
		case c == '@':
			name := ""
			for _, p := range []string{paramSubjectID, paramEmail, paramPhone} {
				if strings.HasPrefix(q[i+1:], p) && !identChar(q, i+1+len(p)) {
					name = p
				}
			}
			if rest, ok := strings.CutPrefix(q[i+1:], identifierPrefix); ok {
				// @identifier.<name>: a named identifier (serve.identifiers).
				j := 0
				for j < len(rest) && identChar(rest, j) {
					j++
				}
				if j > 0 {
					name = identifierPrefix + rest[:j]
				}
			}
			if name == "" {
				out.WriteByte(c)
				i++
				continue
			}
			if dollar {
				n, ok := pos[name]
				if !ok {
					params = append(params, name)
					n = len(params)
					pos[name] = n
				}
				out.WriteString("$" + strconv.Itoa(n))
			} else {
				params = append(params, name)
				out.WriteByte('?')
			}
			i += 1 + len(name)
		default:
			out.WriteByte(c)
			i++
		}
	}
	return out.String(), params
}

func identChar(q string, i int) bool {
	if i >= len(q) {
		return false
	}
	c := q[i]
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
