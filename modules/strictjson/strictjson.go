// Package strictjson refuses what encoding/json lets through silently when it
// decodes input from outside: an object member given twice (the last one
// wins, so {"type":"access","type":"erasure"} decodes as an erasure) and a
// member name that matches a struct field only when case is ignored
// ({"TYPE":…} fills Type), and a string that is not valid UTF-8 or holds an
// unpaired surrogate escape ("\ud800"), which encoding/json rewrites to
// U+FFFD, so that two different identifiers would be stored as one. It checks a document with a tokenizing pass;
// decoding stays with encoding/json.
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrStrict marks the errors of Check.
var ErrStrict = errors.New("strictjson")

// maxDepth matches encoding/json's nesting limit: deeper documents are left
// for the decoder to refuse.
const maxDepth = 10000

// MemberError names the member at fault by its path: member names joined by
// ".", array indexes in brackets ("subject.id", "items[2].name"), an empty
// name as "".
type MemberError struct {
	Path    string
	Message string
}

func (e *MemberError) Error() string { return e.Path + ": " + e.Message }

// Is makes errors.Is(err, ErrStrict) hold.
func (e *MemberError) Is(target error) bool { return target == ErrStrict }

// Check returns a *MemberError for the first object member of data that
// repeats a member name of its object, or whose name matches a field of the
// struct it would decode into (following the type of v) only
// case-insensitively. Malformed JSON is not its business: it returns nil and
// leaves the syntax error to the decoder. Members no field matches are not
// refused here either (json.Decoder.DisallowUnknownFields does that where
// wanted).
func Check(data []byte, v any) error {
	c := checker{data: data, dec: json.NewDecoder(bytes.NewReader(data)), fields: map[reflect.Type]map[string]reflect.Type{}}
	var t reflect.Type
	if v != nil {
		t = reflect.TypeOf(v)
	}
	err := c.value(t, "", 0)
	var me *MemberError
	if errors.As(err, &me) {
		return me
	}
	return nil
}

type checker struct {
	data []byte
	dec  *json.Decoder
	// fields caches each struct type's JSON member names and field types.
	fields map[reflect.Type]map[string]reflect.Type
}

// errStop ends the walk without a finding (malformed or too deep input).
var errStop = errors.New("stop")

func (c *checker) value(t reflect.Type, path string, depth int) error {
	if depth > maxDepth {
		return errStop
	}
	start := c.dec.InputOffset()
	tok, err := c.dec.Token()
	if err != nil {
		return errStop
	}
	if _, ok := tok.(string); ok {
		if msg := c.badText(start); msg != "" {
			return &MemberError{Path: or(path, "body"), Message: msg}
		}
	}
	switch tok {
	case json.Delim('{'):
		return c.object(t, path, depth)
	case json.Delim('['):
		return c.array(t, path, depth)
	}
	return nil
}

func (c *checker) object(t reflect.Type, path string, depth int) error {
	t = deref(t)
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t == nil:
	case t.Kind() == reflect.Struct && !isRaw(t):
		fields = c.structFields(t)
	case t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for c.dec.More() {
		start := c.dec.InputOffset()
		tok, err := c.dec.Token()
		if err != nil {
			return errStop
		}
		name, ok := tok.(string)
		if !ok {
			return errStop
		}
		member := join(path, name)
		if msg := c.badText(start); msg != "" {
			return &MemberError{Path: member, Message: "member name " + msg}
		}
		if seen[name] {
			return &MemberError{Path: member, Message: fmt.Sprintf("duplicate member %q", name)}
		}
		seen[name] = true
		sub := elem
		if fields != nil {
			var exact bool
			sub, exact = fields[name]
			if !exact {
				for field := range fields {
					// encoding/json's own folding rule, so every name it would match is caught.
					if strings.EqualFold(field, name) {
						return &MemberError{Path: member, Message: fmt.Sprintf("member %q must be spelled %q (member names are case-sensitive)", name, field)}
					}
				}
			}
		}
		if err := c.value(sub, member, depth+1); err != nil {
			return err
		}
	}
	if _, err := c.dec.Token(); err != nil {
		return errStop
	}
	return nil
}

func (c *checker) array(t reflect.Type, path string, depth int) error {
	t = deref(t)
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && !isRaw(t) {
		elem = t.Elem()
	}
	for i := 0; c.dec.More(); i++ {
		if err := c.value(elem, path+"["+strconv.Itoa(i)+"]", depth+1); err != nil {
			return err
		}
	}
	if _, err := c.dec.Token(); err != nil {
		return errStop
	}
	return nil
}

// structFields maps the JSON member names of a struct type (as
// encoding/json names them: the tag's name, else the field name; embedded
// structs' fields promoted) to the fields' types.
func (c *checker) structFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := c.fields[t]; ok {
		return f
	}
	out := map[string]reflect.Type{}
	c.fields[t] = out
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			if et := deref(f.Type); et.Kind() == reflect.Struct {
				for n, ft := range c.structFields(et) {
					if _, taken := out[n]; !taken {
						out[n] = ft
					}
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// isRaw reports whether values of t keep their JSON as it is (json.RawMessage
// or a json.Unmarshaler), so their members follow no struct's names.
func isRaw(t reflect.Type) bool {
	return t == reflect.TypeFor[json.RawMessage]() || t.Implements(reflect.TypeFor[json.Unmarshaler]()) ||
		reflect.PointerTo(t).Implements(reflect.TypeFor[json.Unmarshaler]())
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// badText describes what is wrong with the raw bytes of the string token
// that the decoder read from offset start on, or returns "". The span may
// also hold the separators before the token, which are ASCII and no escape.
func (c *checker) badText(start int64) string {
	raw := c.data[start:c.dec.InputOffset()]
	if !utf8.Valid(raw) {
		return "must be valid UTF-8"
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' {
			continue
		}
		r, ok := hex4(raw[i+1:])
		if !ok {
			return "" // malformed: the decoder's business
		}
		i += 4
		switch {
		case utf16.IsSurrogate(r) && r < 0xdc00:
			// A high surrogate must be followed by an escaped low one.
			if i+2 < len(raw) && raw[i+1] == '\\' && raw[i+2] == 'u' {
				if lo, ok := hex4(raw[i+3:]); ok && lo >= 0xdc00 && lo <= 0xdfff {
					i += 6
					continue
				}
			}
			return "must not hold an unpaired surrogate escape"
		case utf16.IsSurrogate(r):
			return "must not hold an unpaired surrogate escape"
		}
	}
	return ""
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 16)
	return rune(n), err == nil
}

func or(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

func join(path, name string) string {
	if name == "" {
		// So that a path always names something.
		name = `""`
	}
	if path == "" {
		return name
	}
	return path + "." + name
}
