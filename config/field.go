package config

import (
	"fmt"
	"maps"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable the configuration reads.
const EnvPrefix = "GDPR_"

// Set assigns value to the setting at a dotted path such as
// "worker.concurrency", parsing it for the field's type.
func (c *Config) Set(path, value string) error {
	v := reflect.ValueOf(c).Elem()
	for _, part := range strings.Split(path, ".") {
		if v.Kind() != reflect.Struct {
			return fmt.Errorf("%w: unknown setting %s", ErrInvalid, path)
		}
		f, ok := fieldByTag(v, part)
		if !ok {
			return fmt.Errorf("%w: unknown setting %s", ErrInvalid, path)
		}
		v = f
	}
	if err := setScalar(v, value); err != nil {
		return fmt.Errorf("%w: %s %w", ErrInvalid, path, err)
	}
	return nil
}

func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := range t.NumField() {
		if inline(t.Field(i)) {
			if f, ok := fieldByTag(v.Field(i), name); ok {
				return f, true
			}
			continue
		}
		if tagName(t.Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// inline reports whether f is a module's settings spliced into its parent
// section (`yaml:",inline"`), such as each telemetry module's part of telemetry.
func inline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return opts == "inline"
}

func tagName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" {
		return strings.ToLower(f.Name)
	}
	return tag
}

func setScalar(v reflect.Value, s string) error {
	if v.Type() == reflect.TypeFor[time.Duration]() {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("must be a duration like 30s, got %q", s)
		}
		v.SetInt(int64(d))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("must be an integer, got %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("must be a number, got %q", s)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("must be true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			// Lists of structs (sources, participants) come from YAML or a
			// YAML/JSON value in the variable.
			return yaml.Unmarshal([]byte(s), v.Addr().Interface())
		}
		var parts []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return yaml.Unmarshal([]byte(s), v.Addr().Interface())
	}
	return nil
}

// ApplyEnv applies every GDPR_SECTION_SETTING variable in environ, e.g.
// GDPR_WORKER_CONCURRENCY=4 or GDPR_POSTGRES_DSN=postgres://...
func (c *Config) ApplyEnv(environ []string) error {
	paths := map[string]string{}
	walk(reflect.TypeOf(*c), "", func(path string) {
		paths[EnvPrefix+strings.ToUpper(strings.NewReplacer(".", "_").Replace(path))] = path
	})
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		path, known := paths[k]
		if !known {
			continue
		}
		if err := c.Set(path, val); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

// walk calls fn with the dotted path of every leaf setting.
func walk(t reflect.Type, prefix string, fn func(path string)) {
	for i := range t.NumField() {
		f := t.Field(i)
		if inline(f) {
			walk(f.Type, prefix, fn)
			continue
		}
		path := tagName(f)
		if prefix != "" {
			path = prefix + "." + path
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
			walk(f.Type, path, fn)
			continue
		}
		fn(path)
	}
}

// Paths lists every leaf setting's dotted path, for documentation and tests.
func Paths() []string {
	var out []string
	walk(reflect.TypeOf(Config{}), "", func(p string) { out = append(out, p) })
	return out
}

// Masked returns a copy of c as YAML-ready data with secrets hidden: fields
// tagged secret are replaced, and passwords inside URLs are masked. Whatever
// is not masked is printed as written (templates keep their {placeholders}).
func (c Config) Masked() map[string]any {
	return maskValue(reflect.ValueOf(c)).(map[string]any)
}

func maskValue(v reflect.Value) any {
	switch {
	case v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Duration]():
		out := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			val := maskValue(v.Field(i))
			if inline(f) {
				maps.Copy(out, val.(map[string]any))
				continue
			}
			if f.Tag.Get("secret") == "true" {
				val = maskSecret(v.Field(i))
			}
			out[tagName(f)] = val
		}
		return out
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		out := make([]any, v.Len())
		for i := range v.Len() {
			out[i] = maskValue(v.Index(i))
		}
		return out
	case v.Type() == reflect.TypeFor[time.Duration]():
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		// Not tagged secret, but a URL may still carry a password or a key.
		if isURL(v.String()) {
			return maskURL(v.String(), false)
		}
		return v.String()
	default:
		return v.Interface()
	}
}

// maskSecret hides a secret setting. A URL keeps what helps an operator
// (scheme, user, host, path, query parameter names) and loses its password,
// every query value and its fragment; anything else is hidden whole.
func maskSecret(v reflect.Value) any {
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String {
		// Keep the count (how many tokens are configured), not the values.
		out := make([]string, v.Len())
		for i := range out {
			out[i] = "****"
		}
		return out
	}
	if v.Kind() != reflect.String {
		return "****"
	}
	s := v.String()
	if s == "" {
		return ""
	}
	if isURL(s) {
		return maskURL(s, true)
	}
	return "****"
}

// isURL reports whether s is an absolute URL with a host. Placeholders are
// not valid URL syntax everywhere, so the shape is checked without braces.
func isURL(s string) bool {
	u, err := url.Parse(strings.NewReplacer("{", "", "}", "").Replace(s))
	return err == nil && u.Scheme != "" && u.Host != ""
}

// isPlaceholder reports whether s is one template placeholder such as {subject_id}.
func isPlaceholder(s string) bool {
	if len(s) < 3 || s[0] != '{' || s[len(s)-1] != '}' {
		return false
	}
	return strings.Trim(s[1:len(s)-1], "abcdefghijklmnopqrstuvwxyz_") == ""
}

// maskURL returns raw with its password masked and the values of its query
// parameters: all of them (every, for a secret setting, whose query may hold
// a signature such as sig= of a SAS link) or those whose name looks like a
// credential (?password=, ?api_key=, ?sig=). A value that is only a
// placeholder is kept. The rest stays byte for byte as written, unescaped,
// so that the output can be pasted back. It splits raw the way url.Parse
// does: the fragment at the first '#', the query at the first '?', the
// userinfo at the last '@' of the authority.
func maskURL(raw string, every bool) string {
	rest, fragment, hasFragment := strings.Cut(raw, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	if i := strings.Index(rest, "://"); i >= 0 {
		authority := rest[i+3:]
		if end := strings.IndexByte(authority, '/'); end >= 0 {
			authority = authority[:end]
		}
		if at := strings.LastIndexByte(authority, '@'); at >= 0 {
			if user, _, hasPassword := strings.Cut(authority[:at], ":"); hasPassword {
				rest = rest[:i+3] + user + ":****" + rest[i+3+at:]
			}
		}
	}
	out := rest
	if hasQuery {
		params := strings.Split(query, "&")
		for j, p := range params {
			name, value, ok := strings.Cut(p, "=")
			if !ok || value == "" || isPlaceholder(value) {
				continue
			}
			unescaped, err := url.QueryUnescape(name)
			if err != nil {
				unescaped = name
			}
			if every || sensitiveParam(unescaped) {
				params[j] = name + "=****"
			}
		}
		out += "?" + strings.Join(params, "&")
	}
	if hasFragment {
		if every && fragment != "" {
			fragment = "****"
		}
		out += "#" + fragment
	}
	return out
}

func sensitiveParam(name string) bool {
	name = strings.ToLower(name)
	if name == "sig" {
		// A SAS link's signature; "sig" within other names (design, signal) is not.
		return true
	}
	for _, word := range []string{"pass", "secret", "token", "key", "auth", "credential", "signature"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	return false
}
