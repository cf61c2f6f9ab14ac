package config

import (
	"fmt"
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
		if tagName(t.Field(i)) == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

func tagName(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if tag == "" {
		return strings.ToLower(f.Name)
	}
	return tag
}

var durationType = reflect.TypeOf(time.Duration(0))

func setScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
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
		path := tagName(f)
		if prefix != "" {
			path = prefix + "." + path
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
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
// tagged secret are replaced, and passwords inside URLs are masked.
func (c Config) Masked() map[string]any {
	return maskValue(reflect.ValueOf(c)).(map[string]any)
}

func maskValue(v reflect.Value) any {
	switch {
	case v.Kind() == reflect.Struct && v.Type() != durationType:
		out := map[string]any{}
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			val := maskValue(v.Field(i))
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
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		// Not tagged secret, but a URL may still carry a password.
		if u, ok := parseURL(v.String()); ok {
			return maskURL(u)
		}
		return v.String()
	default:
		return v.Interface()
	}
}

// maskSecret hides a secret setting. A URL keeps what helps an operator
// (scheme, user, host, path) and loses its password and sensitive query
// parameters; anything else is hidden whole.
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
	if u, ok := parseURL(s); ok {
		return maskURL(u)
	}
	return "****"
}

func parseURL(s string) (*url.URL, bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, false
	}
	return u, true
}

// maskURL returns u without its password and the values of query
// parameters that look like credentials (postgres://h/db?password=...).
func maskURL(u *url.URL) string {
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "****")
	}
	q := u.Query()
	masked := false
	for k := range q {
		if sensitiveParam(k) {
			q.Set(k, "****")
			masked = true
		}
	}
	if masked {
		u.RawQuery = q.Encode()
	}
	// Encoding escapes the stars; show them as typed.
	return strings.ReplaceAll(u.String(), "%2A%2A%2A%2A", "****")
}

func sensitiveParam(name string) bool {
	name = strings.ToLower(name)
	for _, word := range []string{"pass", "secret", "token", "key", "auth", "credential", "signature"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	return false
}
