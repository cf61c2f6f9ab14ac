package report

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// csvEncoder turns compact JSON records into CSV lines exactly as
// encoding/csv's Writer (comma, LF line ends) would write the fields
// source.DecodeString gives, without a string per field: a 1,000,000-row
// report spent a quarter of its CPU there (docs/bench-report.md).
type csvEncoder struct {
	cols   []string
	colIdx map[string]int
	// keys are the columns as JSON strings, to match a record's members
	// in column order without decoding them.
	keys  [][]byte
	cells [][]byte
	set   []bool
	// esc holds the fields of the current record that needed unescaping;
	// escFrom/escTo locate a column's field in it (escFrom -1: not escaped).
	// Offsets, since esc may move as it grows.
	esc     []byte
	escFrom []int
	escTo   []int
}

func newCSVEncoder(cols []string, colIdx map[string]int) *csvEncoder {
	e := &csvEncoder{cols: cols, colIdx: colIdx, keys: make([][]byte, len(cols)),
		cells: make([][]byte, len(cols)), set: make([]bool, len(cols)),
		escFrom: make([]int, len(cols)), escTo: make([]int, len(cols))}
	for i, c := range cols {
		e.keys[i] = source.AppendString(nil, c)
	}
	return e
}

// appendHeader appends the header line.
func (e *csvEncoder) appendHeader(dst []byte) []byte {
	for i, c := range e.cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendCSVField(dst, []byte(c))
	}
	return append(dst, '\n')
}

// appendRecord appends the CSV line of the JSON object obj: one field per
// column, empty where obj lacks the key or holds null, the last value
// where a key repeats.
func (e *csvEncoder) appendRecord(dst, obj []byte) ([]byte, error) {
	if out, ok := e.appendInOrder(dst, obj); ok {
		return out, nil
	}
	return e.appendMembers(dst, obj)
}

// appendMembers is appendRecord for any record, member by member.
func (e *csvEncoder) appendMembers(dst, obj []byte) ([]byte, error) {
	clear(e.set)
	e.esc = e.esc[:0]
	next := 0
	err := source.RawFields(obj, func(rawKey, raw []byte) error {
		i := -1
		if next < len(e.keys) && bytes.Equal(rawKey, e.keys[next]) {
			i = next
		} else if bytes.IndexByte(rawKey, '\\') < 0 {
			if j, ok := e.colIdx[string(rawKey[1:len(rawKey)-1])]; ok {
				i = j
			}
		} else {
			key, err := source.DecodeString(rawKey)
			if err != nil {
				return err
			}
			if j, ok := e.colIdx[key]; ok {
				i = j
			}
		}
		if i < 0 {
			return nil
		}
		next = i + 1
		e.set[i] = true
		e.escFrom[i] = -1
		switch {
		case len(raw) == 0 || raw[0] == 'n':
			e.cells[i] = nil
		case raw[0] != '"':
			e.cells[i] = raw
		case bytes.IndexByte(raw, '\\') < 0:
			e.cells[i] = raw[1 : len(raw)-1]
		default:
			v, err := source.DecodeString(raw)
			if err != nil {
				return err
			}
			e.escFrom[i] = len(e.esc)
			e.esc = append(e.esc, v...)
			e.escTo[i] = len(e.esc)
			e.cells[i] = nil
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	for i := range e.cells {
		if i > 0 {
			dst = append(dst, ',')
		}
		if e.set[i] {
			f := e.cells[i]
			if e.escFrom[i] >= 0 {
				f = e.esc[e.escFrom[i]:e.escTo[i]]
			}
			dst = appendCSVField(dst, f)
		}
		e.cells[i] = nil
	}
	return append(dst, '\n'), nil
}

// appendInOrder is appendRecord for the record every SQL row is: each
// column once, in order, with scalar values and strings without escapes.
// It finds the values with byte searches instead of parsing members one by
// one; any other record makes it return false with dst as it was.
func (e *csvEncoder) appendInOrder(dst, obj []byte) ([]byte, bool) {
	start := len(dst)
	if len(obj) < 2 || obj[0] != '{' {
		return dst, false
	}
	i := 1
	for c, key := range e.keys {
		if c > 0 {
			if i >= len(obj) || obj[i] != ',' {
				return dst[:start], false
			}
			i++
			dst = append(dst, ',')
		}
		if !bytes.HasPrefix(obj[i:], key) || i+len(key) >= len(obj) || obj[i+len(key)] != ':' {
			return dst[:start], false
		}
		i += len(key) + 1
		if i >= len(obj) {
			return dst[:start], false
		}
		switch obj[i] {
		case '"':
			j := bytes.IndexByte(obj[i+1:], '"')
			if j < 0 {
				return dst[:start], false
			}
			v := obj[i+1 : i+1+j]
			if bytes.IndexByte(v, '\\') >= 0 {
				return dst[:start], false
			}
			dst = appendCSVField(dst, v)
			i += j + 2
		case '{', '[':
			return dst[:start], false
		case 'n':
			if !bytes.HasPrefix(obj[i:], []byte("null")) {
				return dst[:start], false
			}
			i += 4
		default:
			j := i
			for j < len(obj) && obj[j] != ',' && obj[j] != '}' && obj[j] != ']' && obj[j] != ' ' && obj[j] != '\n' && obj[j] != '\t' && obj[j] != '\r' {
				j++
			}
			dst = appendCSVField(dst, obj[i:j])
			i = j
		}
	}
	if i != len(obj)-1 || obj[i] != '}' {
		return dst[:start], false
	}
	return append(dst, '\n'), true
}

// appendCSVField appends one field the way encoding/csv quotes it.
func appendCSVField(dst, f []byte) []byte {
	if !csvNeedsQuotes(f) {
		return append(dst, f...)
	}
	dst = append(dst, '"')
	for {
		i := bytes.IndexByte(f, '"')
		if i < 0 {
			dst = append(dst, f...)
			break
		}
		dst = append(dst, f[:i+1]...)
		dst = append(dst, '"')
		f = f[i+1:]
	}
	return append(dst, '"')
}

// csvNeedsQuotes is encoding/csv's fieldNeedsQuotes for a comma.
func csvNeedsQuotes(f []byte) bool {
	if len(f) == 0 {
		return false
	}
	if len(f) == 2 && f[0] == '\\' && f[1] == '.' {
		return true
	}
	for _, c := range f {
		if c == '\n' || c == '\r' || c == '"' || c == ',' {
			return true
		}
	}
	r1, _ := utf8.DecodeRune(f)
	return unicode.IsSpace(r1)
}
