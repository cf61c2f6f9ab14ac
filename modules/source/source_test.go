package source

import (
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// collect is a Sink that keeps everything, for small test results.
type collect struct {
	cols []string
	rows []string
}

func (c *collect) Columns(cols []string) error { c.cols = cols; return nil }
func (c *collect) Row(obj []byte) error        { c.rows = append(c.rows, string(obj)); return nil }

func TestBindNamed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		dollar   bool
		want     string
		params   []string
	}{
		{"postgres reuses positions", "SELECT * FROM t WHERE email = @email OR alt = @email OR id = @subject_id", true,
			"SELECT * FROM t WHERE email = $1 OR alt = $1 OR id = $2", []string{"email", "subject_id"}},
		{"mysql repeats arguments", "SELECT * FROM t WHERE email = @email OR id = @subject_id OR alt = @email", false,
			"SELECT * FROM t WHERE email = ? OR id = ? OR alt = ?", []string{"email", "subject_id", "email"}},
		{"literals, comments and operators untouched", "SELECT '@email', \"@email\" -- @email\n/* @subject_id */ FROM t WHERE tags @> x AND @subject_idx = 1 AND id = @subject_id", true,
			"SELECT '@email', \"@email\" -- @email\n/* @subject_id */ FROM t WHERE tags @> x AND @subject_idx = 1 AND id = $1", []string{"subject_id"}},
		{"doubled quotes", "SELECT 'it''s @email' WHERE e = @email", true, "SELECT 'it''s @email' WHERE e = $1", []string{"email"}},
		{"mysql backslash escape", `SELECT 'a\'@email' WHERE e = @email`, false, `SELECT 'a\'@email' WHERE e = ?`, []string{"email"}},
		{"phone and named identifiers", "SELECT * FROM t WHERE phone = @phone OR card = @identifier.loyalty_card OR x = @identifier. OR p = @phones", true,
			"SELECT * FROM t WHERE phone = $1 OR card = $2 OR x = @identifier. OR p = @phones", []string{"phone", "identifier.loyalty_card"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, params := bindNamed(tc.in, tc.dollar)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.params, params)
		})
	}
}

func TestAppliesOnlyWithEveryIdentifierTheTemplatesUse(t *testing.T) {
	t.Parallel()
	src, err := New(Config{Name: "api", Kind: "http", URL: "https://api.example/users/{subject_id}", Body: `{"e":"{email}"}`}, Options{})
	require.NoError(t, err)
	require.True(t, src.Applies(event.Subject{ID: "u1", Email: "a@b.c"}))
	for _, s := range []event.Subject{{ID: "u1"}, {Email: "a@b.c"}, {ID: "..", Email: "a@b.c"}, {ID: ".", Email: "a@b.c"}} {
		require.False(t, src.Applies(s), "%+v", s)
	}
}

// TestPhoneAndNamedIdentifiersFillTemplatesAndQueries: {phone} and
// {identifier.<name>} are placeholders of http templates like {subject_id}
// (a source needing one the subject lacks does not apply), and @phone and
// @identifier.<name> bind SQL parameters.
func TestPhoneAndNamedIdentifiersFillTemplatesAndQueries(t *testing.T) {
	t.Parallel()
	src, err := New(Config{Name: "api", Kind: "http", URL: "https://api.example/by-phone/{phone}?card={identifier.loyalty_card}"}, Options{})
	require.NoError(t, err)
	h := src.(*httpSource)
	full := event.Subject{Phone: "+4915112345678", Identifiers: map[string]string{"loyalty_card": "LC 991/2"}}
	require.True(t, src.Applies(full))
	u, err := h.url.Expand(values(full))
	require.NoError(t, err)
	require.Equal(t, "https://api.example/by-phone/%2B4915112345678?card=LC%20991%2F2", u)
	for _, s := range []event.Subject{{Phone: "+4915112345678"}, {Identifiers: map[string]string{"loyalty_card": "x"}}, {ID: "u", Email: "a@b.c"}} {
		require.False(t, src.Applies(s), "%+v", s)
	}

	dsn := testkit.PostgresDSN(t)
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(t.Context(), `CREATE TABLE phones (phone text, card text, note text);
		INSERT INTO phones VALUES ('+4915112345678', NULL, 'by phone'), (NULL, 'LC 991/2', 'by card'), ('+49000', 'other', 'other')`)
	require.NoError(t, err)
	pg, err := New(Config{Name: "pg", Kind: "postgres", DSN: dsn, Query: "SELECT note FROM phones WHERE phone = @phone OR card = @identifier.loyalty_card ORDER BY note"}, Options{})
	require.NoError(t, err)
	defer pg.Close()
	var c collect
	require.NoError(t, pg.Read(t.Context(), full, &c))
	require.Equal(t, []string{`{"note":"by card"}`, `{"note":"by phone"}`}, c.rows)
	require.True(t, pg.Applies(event.Subject{Phone: "+4915112345678"}))
	require.False(t, pg.Applies(event.Subject{ID: "u-1"}), "a query on phone and card needs one of them")
}

func TestFieldsAndAppendString(t *testing.T) {
	t.Parallel()
	obj := []byte(`{"a":"x\"y","b":{"c":[1,"}"]},"c d":null,"e":-1.5e3,"f":true}`)
	var keys, vals []string
	require.NoError(t, Fields(obj, func(k string, raw []byte) error {
		v, err := DecodeString(raw)
		keys, vals = append(keys, k), append(vals, v)
		return err
	}))
	require.Equal(t, []string{"a", "b", "c d", "e", "f"}, keys)
	require.Equal(t, []string{`x"y`, `{"c":[1,"}"]}`, "", "-1.5e3", "true"}, vals)
	require.Error(t, Fields([]byte(`[1]`), func(string, []byte) error { return nil }))

	for _, s := range []string{"plain", "quote\" back\\ nl\n tab\t ctl\x01", "ünïcödé ✓", "bad \xff utf8", "ls\u2028ps\u2029"} {
		var back string
		require.NoError(t, json.Unmarshal(AppendString(nil, s), &back), s)
		if !strings.Contains(s, "\xff") {
			require.Equal(t, s, back)
		}
	}
}

func TestPostgresReadOnlyAndTypes(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresDSN(t)
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.ExecContext(t.Context(), `CREATE TABLE t (id text, n int, j json, ts timestamp, u uuid, arr int[]);
		INSERT INTO t VALUES ('s1', 1, '{"k": [1, 2]}', '2024-01-02 03:04:05', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2}')`)
	require.NoError(t, err)

	src, err := New(Config{Name: "pg", Kind: "postgres", DSN: dsn, Query: "SELECT id, n, j, ts, u, arr, NULL AS nothing FROM t WHERE id = @subject_id"}, Options{})
	require.NoError(t, err)
	defer src.Close()
	var c collect
	require.NoError(t, src.Read(t.Context(), event.Subject{ID: "s1"}, &c))
	require.Equal(t, []string{"id", "n", "j", "ts", "u", "arr", "nothing"}, c.cols)
	require.Equal(t, []string{`{"id":"s1","n":1,"j":{"k":[1,2]},"ts":"2024-01-02T03:04:05Z","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","arr":"{1,2}","nothing":null}`}, c.rows)
	require.False(t, src.Applies(event.Subject{Email: "only@example.com"}), "a query using only @subject_id needs an id")

	w, err := New(Config{Name: "w", Kind: "postgres", DSN: dsn, Query: "INSERT INTO t (id) VALUES (@subject_id) RETURNING id"}, Options{})
	require.NoError(t, err)
	defer w.Close()
	err = w.Read(t.Context(), event.Subject{ID: "s2"}, &collect{})
	require.ErrorIs(t, err, ErrQuery)
	require.Contains(t, err.Error(), "sqlstate 25006", "read_only_sql_transaction")
	var n int
	require.NoError(t, db.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n))
	require.Equal(t, 1, n, "the source wrote nothing")
}

// TestMySQL runs the same SQL path against the MariaDB server on 127.0.0.1:3306
// (root, no password), in a database of its own.
func TestMySQL(t *testing.T) {
	t.Parallel()
	server := os.Getenv("GDPR_TEST_MYSQL_DSN")
	if server == "" {
		server = "root@tcp(127.0.0.1:3306)/"
	}
	admin, err := sql.Open("mysql", server)
	require.NoError(t, err)
	defer admin.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	require.NoError(t, admin.PingContext(ctx), "connecting to MariaDB/MySQL on 127.0.0.1:3306")
	name := "gdpr_test_" + testkit.ID()
	_, err = admin.ExecContext(ctx, "CREATE DATABASE "+name)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name) })
	dsn := server + name + "?parseTime=true"
	db, err := sql.Open("mysql", dsn)
	require.NoError(t, err)
	defer db.Close()
	for _, stmt := range []string{
		"CREATE TABLE profiles (id VARCHAR(32), email VARCHAR(64), name VARCHAR(64), born DATE, points INT, balance DECIMAL(8,2), meta JSON, created DATETIME)",
		`INSERT INTO profiles VALUES ('u-1', 'a+b@example.com', 'Zoë ''quote''', '1990-05-06', 7, 12.30, '{"x": [1, "two"]}', '2024-01-02 03:04:05'),
		                             ('u-2', 'other@example.com', 'Other', NULL, 0, 0, NULL, '2024-01-02 03:04:05')`,
	} {
		_, err = db.ExecContext(ctx, stmt)
		require.NoError(t, err)
	}
	src, err := New(Config{Name: "profiles", Kind: "mysql", DSN: dsn,
		Query: "SELECT id, email, name, born, points, balance, meta, created FROM profiles WHERE id = @subject_id OR email = @email ORDER BY id"}, Options{})
	require.NoError(t, err)
	defer src.Close()
	var c collect
	require.NoError(t, src.Read(ctx, event.Subject{ID: "u-1", Email: "a+b@example.com"}, &c))
	require.Equal(t, []string{"id", "email", "name", "born", "points", "balance", "meta", "created"}, c.cols)
	require.Len(t, c.rows, 1)
	// MySQL reports JSON columns as JSON and they are embedded; MariaDB's JSON
	// is LONGTEXT on the wire, so there the document arrives as a string.
	row := strings.Replace(c.rows[0], `"meta":"{\"x\": [1, \"two\"]}"`, `"meta":{"x":[1,"two"]}`, 1)
	require.Equal(t, `{"id":"u-1","email":"a+b@example.com","name":"Zoë 'quote'","born":"1990-05-06T00:00:00Z","points":7,"balance":"12.30","meta":{"x":[1,"two"]},"created":"2024-01-02T03:04:05Z"}`, row)

	bad, err := New(Config{Name: "bad", Kind: "mysql", DSN: dsn, Query: "SELECT * FROM nope WHERE id = @subject_id"}, Options{})
	require.NoError(t, err)
	defer bad.Close()
	err = bad.Read(ctx, event.Subject{ID: "u-1"}, &collect{})
	require.ErrorIs(t, err, ErrQuery)
	require.Equal(t, ClassQuery, Class(err))

	// The transaction is read-only here too.
	w, err := New(Config{Name: "w", Kind: "mysql", DSN: dsn, Query: "UPDATE profiles SET points = 0 WHERE id = @subject_id"}, Options{})
	require.NoError(t, err)
	defer w.Close()
	require.ErrorIs(t, w.Read(ctx, event.Subject{ID: "u-1"}, &collect{}), ErrQuery)
	var points int
	require.NoError(t, db.QueryRowContext(ctx, "SELECT points FROM profiles WHERE id = 'u-1'").Scan(&points))
	require.Equal(t, 7, points)
}
