// Package expand fills the placeholders ({subject_id}, {email}, ...) of the
// URL and JSON body templates that HTTP sources, Elasticsearch sources and
// HTTP erasure participants are configured with. It is the one place that
// does so, because an identifier is input from a data subject: it must not
// be able to change which host, which path or which JSON structure a call
// with the source's credentials goes to.
//
// URL templates: a placeholder may stand in the path (inside one segment)
// or in a query value (after "name="), never in the scheme, host, port,
// a query name or the fragment. Its value is percent-encoded: every byte but
// the unreserved ones (A-Z a-z 0-9 - . _ ~) becomes %XX, so no slash, dot
// segment, ';', '&', '=', '#' or '?' can form. After expansion the scheme,
// host, port, the path before the first placeholder, the number of path
// segments and the query's names must equal the template's, and no segment
// may be "." or "..", or the expansion is refused.
//
// JSON templates: a placeholder may only stand inside a JSON string value
// (not a key, not a bare token); its value is JSON-escaped, and the expanded
// body must still be valid JSON.
//
// A value that is empty, "." or ".." is refused in every template, whatever
// intake accepted.
package expand

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Errors callers test with errors.Is. Their texts name placeholders and
// positions, never values (values are personal data).
var (
	// ErrTemplate: the template itself is not acceptable (a configuration error).
	ErrTemplate = errors.New("invalid template")
	// ErrValue: a value is missing, empty, "." or "..".
	ErrValue = errors.New("identifier refused")
	// ErrTarget: the expansion would change where the call goes or what
	// structure its body has; no request may be sent.
	ErrTarget = errors.New("expansion changes the call's target")
	// ErrRedirect: a response redirected to another origin, or would change
	// the method; the redirect was not followed.
	ErrRedirect = errors.New("redirect not followed")
)

// Values maps placeholder names (without braces) to values.
type Values map[string]string

// piece is literal text, or a placeholder when name is set.
type piece struct {
	lit  string
	name string
}

// scan splits tmpl into literal text and {name} placeholders for the given
// names. Other text in braces stays literal.
func scan(tmpl string, names []string) []piece {
	var out []piece
	start := 0
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '{' {
			continue
		}
		for _, n := range names {
			if strings.HasPrefix(tmpl[i+1:], n+"}") {
				if i > start {
					out = append(out, piece{lit: tmpl[start:i]})
				}
				out = append(out, piece{name: n})
				i += len(n) + 1
				start = i + 1
				break
			}
		}
	}
	if start < len(tmpl) {
		out = append(out, piece{lit: tmpl[start:]})
	}
	return out
}

func namesOf(pieces []piece) []string {
	var out []string
	for _, p := range pieces {
		if p.name != "" && !slices.Contains(out, p.name) {
			out = append(out, p.name)
		}
	}
	return out
}

// checkValue refuses the values no template may receive.
func checkValue(v Values, name string) (string, error) {
	val, ok := v[name]
	switch {
	case !ok, val == "":
		return "", fmt.Errorf("%w: {%s} is missing or empty", ErrValue, name)
	case val == "." || val == "..":
		return "", fmt.Errorf("%w: {%s} is a dot segment", ErrValue, name)
	}
	return val, nil
}

// sample fills every placeholder for trial expansions at parse time.
func sample(pieces []piece) Values {
	v := Values{}
	for _, n := range namesOf(pieces) {
		v[n] = "x"
	}
	return v
}

// URL is a parsed URL template.
type URL struct {
	pieces []piece
	// What every expansion must keep.
	scheme, host, user, fragment string
	pathPrefix                   string
	segments                     int
	queryNames                   []string
}

// ParseURL parses an http(s) URL template whose placeholders are the given
// names. Every error wraps ErrTemplate.
func ParseURL(tmpl string, names ...string) (*URL, error) {
	pieces := scan(tmpl, names)
	lower := strings.ToLower(tmpl)
	var authStart int
	switch {
	case strings.HasPrefix(lower, "http://"):
		authStart = len("http://")
	case strings.HasPrefix(lower, "https://"):
		authStart = len("https://")
	default:
		return nil, fmt.Errorf("%w: must be an http:// or https:// URL", ErrTemplate)
	}
	authEnd := len(tmpl)
	if i := strings.IndexAny(tmpl[authStart:], "/?#"); i >= 0 {
		authEnd = authStart + i
	}
	fragStart := len(tmpl)
	if i := strings.IndexByte(tmpl[authEnd:], '#'); i >= 0 {
		fragStart = authEnd + i
	}
	queryStart := fragStart
	if i := strings.IndexByte(tmpl[authEnd:fragStart], '?'); i >= 0 {
		queryStart = authEnd + i
	}
	t := &URL{pieces: pieces}
	off := 0
	firstPath := -1
	for _, p := range pieces {
		if p.name == "" {
			if strings.ContainsAny(p.lit, "{}") {
				return nil, fmt.Errorf("%w: '{' or '}' outside a known placeholder (%s)", ErrTemplate, strings.Join(braced(names), ", "))
			}
			if !encodedLiteral(p.lit) {
				// A client would re-encode it, so what is sent would not be
				// what the template says, and the checks after expansion
				// could not compare the two.
				return nil, fmt.Errorf("%w: must be written percent-encoded (no spaces, quotes, backslashes, non-ASCII or bad %% escapes)", ErrTemplate)
			}
			off += len(p.lit)
			continue
		}
		switch {
		case off < authEnd:
			return nil, fmt.Errorf("%w: {%s} is in the scheme, host or port", ErrTemplate, p.name)
		case off >= fragStart:
			return nil, fmt.Errorf("%w: {%s} is in the fragment", ErrTemplate, p.name)
		case off < queryStart:
			if firstPath < 0 {
				firstPath = off
			}
		default:
			pair := tmpl[queryStart+1 : off]
			if j := strings.LastIndexByte(pair, '&'); j >= 0 {
				pair = pair[j+1:]
			}
			if !strings.Contains(pair, "=") {
				return nil, fmt.Errorf("%w: {%s} in the query must be a value (name={%s})", ErrTemplate, p.name, p.name)
			}
		}
		off += len(p.name) + 2
	}
	filled := fill(pieces, "x")
	u, err := url.Parse(filled)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: must be an http(s) URL with a host", ErrTemplate)
	}
	t.scheme, t.host, t.user, t.fragment = u.Scheme, u.Host, u.User.String(), u.Fragment
	t.segments = strings.Count(u.EscapedPath(), "/")
	// Raw, not as parsed: a path the client would re-encode differently
	// fails the trial expansion below.
	t.pathPrefix = tmpl[authEnd:queryStart]
	if firstPath >= 0 {
		t.pathPrefix = tmpl[authEnd:firstPath]
	}
	t.queryNames = queryNames(u.RawQuery)
	// A template that a harmless value cannot expand is refused now, not
	// on a subject's request (a literal "..", a path that does not survive
	// parsing unchanged).
	if _, err := t.Expand(sample(pieces)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return t, nil
}

// encodedLiteral reports whether s uses only characters a URL may carry
// unencoded (RFC 3986's unreserved, reserved and '%' with two hex digits).
func encodedLiteral(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~!$&'()*+,;=:@/?#[]", c) >= 0:
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func braced(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "{" + n + "}"
	}
	return out
}

func fill(pieces []piece, with string) string {
	var b strings.Builder
	for _, p := range pieces {
		if p.name != "" {
			b.WriteString(with)
		} else {
			b.WriteString(p.lit)
		}
	}
	return b.String()
}

func queryNames(raw string) []string {
	var out []string
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		name, _, _ := strings.Cut(pair, "=")
		out = append(out, name)
	}
	return out
}

// Names returns the placeholders the template uses, in order of first use.
func (t *URL) Names() []string { return namesOf(t.pieces) }

// Expand fills the template. It refuses (ErrValue) a missing, empty, "."
// or ".." value, and (ErrTarget) any result whose origin, path prefix,
// segment count or query names differ from the template's.
func (t *URL) Expand(v Values) (string, error) {
	out, err := expandPieces(t.pieces, v, escape)
	if err != nil {
		return "", err
	}
	if err := t.verify(out); err != nil {
		return "", err
	}
	return out, nil
}

// verify re-parses an expansion as an HTTP client would and checks that it
// goes where the template goes.
func (t *URL) verify(expanded string) error {
	u, err := url.Parse(expanded)
	if err != nil {
		return fmt.Errorf("%w: does not parse", ErrTarget)
	}
	path := u.EscapedPath()
	switch {
	case u.Scheme != t.scheme || u.Host != t.host || u.User.String() != t.user:
		return fmt.Errorf("%w: scheme, host or port changed", ErrTarget)
	case !strings.HasPrefix(path, t.pathPrefix):
		return fmt.Errorf("%w: path prefix changed", ErrTarget)
	case strings.Count(path, "/") != t.segments:
		return fmt.Errorf("%w: number of path segments changed", ErrTarget)
	case u.Fragment != t.fragment:
		return fmt.Errorf("%w: fragment changed", ErrTarget)
	case !slices.Equal(queryNames(u.RawQuery), t.queryNames):
		return fmt.Errorf("%w: query names changed", ErrTarget)
	}
	for seg := range strings.SplitSeq(path, "/") {
		d, err := url.PathUnescape(seg)
		if err != nil {
			return fmt.Errorf("%w: bad escape in the path", ErrTarget)
		}
		if d == "." || d == ".." {
			return fmt.Errorf("%w: dot segment in the path", ErrTarget)
		}
	}
	return nil
}

const upperHex = "0123456789ABCDEF"

// escape percent-encodes every byte but RFC 3986's unreserved characters,
// which is safe in a path segment and in a query value alike.
func escape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(upperHex[c>>4])
		b.WriteByte(upperHex[c&0xf])
	}
	return b.String()
}

// JSON is a parsed JSON body template.
type JSON struct {
	pieces []piece
}

// ParseJSON parses a JSON body template whose placeholders are the given
// names: the template must be valid JSON once filled, and every placeholder
// must sit inside a string value. Every error wraps ErrTemplate.
func ParseJSON(tmpl string, names ...string) (*JSON, error) {
	pieces := scan(tmpl, names)
	// Which string literals (by ordinal) hold a placeholder: lexed by hand,
	// because a placeholder outside a string is not JSON at all.
	inString, escaped := false, false
	ordinal := -1
	var holders []int
	for _, p := range pieces {
		if p.name != "" {
			if !inString || escaped {
				return nil, fmt.Errorf("%w: {%s} must be inside a JSON string literal (\"{%s}\")", ErrTemplate, p.name, p.name)
			}
			if len(holders) == 0 || holders[len(holders)-1] != ordinal {
				holders = append(holders, ordinal)
			}
			continue
		}
		for i := 0; i < len(p.lit); i++ {
			c := p.lit[i]
			switch {
			case escaped:
				escaped = false
			case inString && c == '\\':
				escaped = true
			case c == '"':
				inString = !inString
				if inString {
					ordinal++
				}
			}
		}
	}
	filled := fill(pieces, "x")
	keys, err := keyOrdinals(filled)
	if err != nil {
		return nil, fmt.Errorf("%w: not valid JSON once filled in", ErrTemplate)
	}
	for _, h := range holders {
		if keys[h] {
			return nil, fmt.Errorf("%w: a placeholder must be in a string value, not an object key", ErrTemplate)
		}
	}
	t := &JSON{pieces: pieces}
	if _, err := t.Expand(sample(pieces)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return t, nil
}

// keyOrdinals decodes doc and reports, per string token in order, whether
// it is an object key.
func keyOrdinals(doc string) (map[int]bool, error) {
	if !json.Valid([]byte(doc)) {
		return nil, errors.New("invalid JSON")
	}
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	keys := map[int]bool{}
	// Per open container: whether it is an object and, if so, whether its
	// next token is a key.
	type frame struct{ object, wantKey bool }
	var stack []frame
	ordinal := -1
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return keys, nil
		}
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].wantKey = true
			}
			continue
		}
		top := len(stack) - 1
		if top >= 0 && stack[top].object && stack[top].wantKey {
			ordinal++
			keys[ordinal] = true
			stack[top].wantKey = false
			continue
		}
		switch tv := tok.(type) {
		case json.Delim:
			// The parent wants its next key once this container closes.
			stack = append(stack, frame{object: tv == '{', wantKey: tv == '{'})
			continue
		case string:
			ordinal++
			keys[ordinal] = false
		}
		if top >= 0 && stack[top].object {
			stack[top].wantKey = true
		}
	}
}

// Names returns the placeholders the template uses, in order of first use.
func (t *JSON) Names() []string { return namesOf(t.pieces) }

// Expand fills the template with JSON-escaped values. It refuses (ErrValue)
// a missing, empty, "." or ".." value, and (ErrTarget) a result that is not
// valid JSON.
func (t *JSON) Expand(v Values) (string, error) {
	out, err := expandPieces(t.pieces, v, escapeJSON)
	if err != nil {
		return "", err
	}
	if !json.Valid([]byte(out)) {
		return "", fmt.Errorf("%w: body is not valid JSON", ErrTarget)
	}
	return out, nil
}

// escapeJSON returns s as the inside of a JSON string literal (invalid
// UTF-8 becomes U+FFFD).
func escapeJSON(s string) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	out := buf.Bytes()
	return string(out[1 : len(out)-2]) // the quotes and Encode's newline
}

// CheckRedirect is the redirect policy of every templated call (an
// http.Client's CheckRedirect): a redirect is followed only to the same
// origin (scheme, host and port) with the same method, at most five times,
// and without a Referer, which would carry the previous URL and with it
// the subject's identifiers. A redirect to another origin could carry the
// configured credentials there; one that changes the method (a DELETE
// answered by 302 becomes a GET) would turn an erasure into a read.
func CheckRedirect(req *http.Request, via []*http.Request) error {
	first := via[0]
	switch {
	case len(via) >= 5:
		return fmt.Errorf("%w: more than 5 redirects", ErrRedirect)
	case !sameOrigin(req.URL, first.URL):
		return fmt.Errorf("%w: to another origin", ErrRedirect)
	case req.Method != first.Method:
		return fmt.Errorf("%w: it changes the method", ErrRedirect)
	}
	req.Header.Del("Referer")
	return nil
}

func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && port(a) == port(b)
}

func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if strings.EqualFold(u.Scheme, "https") {
		return "443"
	}
	return "80"
}

// expandPieces writes the literal pieces as they are and each placeholder's checked
// value through esc, the one step URL and JSON templates differ in.
func expandPieces(pieces []piece, v Values, esc func(string) string) (string, error) {
	var b strings.Builder
	for _, p := range pieces {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		val, err := checkValue(v, p.name)
		if err != nil {
			return "", err
		}
		b.WriteString(esc(val))
	}
	return b.String(), nil
}

// IdentifierPlaceholders returns the {identifier.<name>} placeholders (as
// "identifier.<name>") that tmpl uses, <name> being a lower-case word (the
// grammar of serve.identifiers). A caller passes them to ParseURL or
// ParseJSON with its fixed names; whether the name is declared is the
// configuration's check, and a subject without that identifier leaves the
// template unexpanded (ErrValue), like any missing identifier.
func IdentifierPlaceholders(tmpl string) []string {
	var out []string
	for rest := tmpl; ; {
		i := strings.Index(rest, "{identifier.")
		if i < 0 {
			return out
		}
		rest = rest[i+len("{identifier."):]
		j := 0
		for j < len(rest) && (rest[j] >= 'a' && rest[j] <= 'z' || j > 0 && (rest[j] >= '0' && rest[j] <= '9' || rest[j] == '_')) {
			j++
		}
		if j > 0 && j <= 32 && j < len(rest) && rest[j] == '}' {
			if n := "identifier." + rest[:j]; !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
}
