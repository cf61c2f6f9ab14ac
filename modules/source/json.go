package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 break JavaScript string literals.
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

var errNotObject = errors.New("not a JSON object")

// Fields calls fn for each top-level member of the compact JSON object obj,
// in order, with the decoded key and the raw value. obj must be valid JSON
// (as every Row a source emits is).
func Fields(obj []byte, fn func(key string, raw []byte) error) error {
	return RawFields(obj, func(rawKey, raw []byte) error {
		key, err := decodeString(rawKey)
		if err != nil {
			return err
		}
		return fn(key, raw)
	})
}

// RawFields is Fields without decoding the keys: fn gets each key as its
// raw JSON string (quotes and escapes included), so a caller that matches
// keys against known ones allocates nothing per member.
func RawFields(obj []byte, fn func(rawKey, raw []byte) error) error {
	i := skipSpace(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return errNotObject
	}
	i = skipSpace(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for i < len(obj) {
		end, err := valueEnd(obj, i)
		if err != nil {
			return err
		}
		if obj[i] != '"' || end-i < 2 {
			return fmt.Errorf("malformed string")
		}
		rawKey := obj[i:end]
		i = skipSpace(obj, end)
		if i >= len(obj) || obj[i] != ':' {
			return fmt.Errorf("malformed object: expected ':'")
		}
		i = skipSpace(obj, i+1)
		vend, err := valueEnd(obj, i)
		if err != nil {
			return err
		}
		if err := fn(rawKey, obj[i:vend]); err != nil {
			return err
		}
		i = skipSpace(obj, vend)
		if i >= len(obj) {
			break
		}
		switch obj[i] {
		case ',':
			i = skipSpace(obj, i+1)
		case '}':
			return nil
		default:
			return fmt.Errorf("malformed object: expected ',' or '}'")
		}
	}
	return fmt.Errorf("malformed object: unexpected end")
}

// DecodeString returns the value of a raw JSON string, or the raw text of any
// other JSON value (numbers, true, false, objects, arrays); null is "".
func DecodeString(raw []byte) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	switch raw[0] {
	case '"':
		return decodeString(raw)
	case 'n':
		return "", nil
	}
	return string(raw), nil
}

func decodeString(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", fmt.Errorf("malformed string")
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, fmt.Errorf("malformed value: unexpected end")
	}
	switch b[i] {
	case '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return j + 1, nil
			}
		}
		return 0, fmt.Errorf("malformed string: unterminated")
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, err := valueEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("malformed value: unterminated")
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\t' && b[j] != '\r' {
			j++
		}
		return j, nil
	}
}

// objectBuilder assembles a JSON object member by member into one reusable buffer.
type objectBuilder struct {
	buf []byte
	n   int
}

func (o *objectBuilder) reset() {
	o.buf = append(o.buf[:0], '{')
	o.n = 0
}

// rawKey appends a pre-encoded `"key":`.
func (o *objectBuilder) rawKey(k []byte) {
	if o.n > 0 {
		o.buf = append(o.buf, ',')
	}
	o.n++
	o.buf = append(o.buf, k...)
}

func (o *objectBuilder) key(k string) {
	if o.n > 0 {
		o.buf = append(o.buf, ',')
	}
	o.n++
	o.buf = AppendString(o.buf, k)
	o.buf = append(o.buf, ':')
}

// compactValue appends raw JSON without insignificant whitespace.
func (o *objectBuilder) compactValue(raw []byte) error {
	var b bytes.Buffer
	if bytes.ContainsAny(raw, " \n\t\r") {
		if err := json.Compact(&b, raw); err != nil {
			return err
		}
		raw = b.Bytes()
	}
	o.buf = append(o.buf, raw...)
	return nil
}

func (o *objectBuilder) finish() []byte {
	return append(o.buf, '}')
}

// record turns one raw JSON value from an API into a compact object: objects
// pass through, anything else becomes {"value": ...}.
func (o *objectBuilder) record(raw json.RawMessage) ([]byte, error) {
	i := skipSpace(raw, 0)
	o.reset()
	if i < len(raw) && raw[i] == '{' {
		o.buf = o.buf[:0]
		if err := o.compactValue(raw); err != nil {
			return nil, err
		}
		return o.buf, nil
	}
	o.key("value")
	if err := o.compactValue(raw); err != nil {
		return nil, err
	}
	return o.finish(), nil
}

func appendFloat(dst []byte, f float64) []byte {
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}
