package report

import (
	"bytes"
	"encoding/csv"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// csvReference is how reports wrote CSV lines before csvEncoder: the
// fields source.DecodeString gives, through encoding/csv.
func csvReference(t *testing.T, cols []string, colIdx map[string]int, objs [][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	require.NoError(t, cw.Write(cols))
	rec := make([]string, len(cols))
	for _, obj := range objs {
		clear(rec)
		require.NoError(t, source.Fields(obj, func(key string, raw []byte) error {
			i, ok := colIdx[key]
			if !ok {
				return nil
			}
			v, err := source.DecodeString(raw)
			rec[i] = v
			return err
		}))
		require.NoError(t, cw.Write(rec))
	}
	cw.Flush()
	require.NoError(t, cw.Error())
	return buf.Bytes()
}

func csvEncoded(t *testing.T, cols []string, colIdx map[string]int, objs [][]byte) []byte {
	t.Helper()
	e := newCSVEncoder(cols, colIdx)
	out := e.appendHeader(nil)
	for _, obj := range objs {
		var err error
		out, err = e.appendRecord(out, obj)
		require.NoError(t, err, "%s", obj)
	}
	return out
}

func TestCSVEncoderWritesWhatEncodingCSVWrites(t *testing.T) {
	t.Parallel()
	cols := []string{"id", "name", "a,b", `q"uote`, " lead", "é", "nested", "x"}
	colIdx := map[string]int{}
	for i, c := range cols {
		colIdx[c] = i
	}
	cases := []string{
		`{}`,
		`{"id":1,"name":"Ada","a,b":true,"q\"uote":null,"x":"\\."}`,
		`{"name":"line\nbreak","id":"say \"hi\"","nested":{"k":[1,"a,b"]}}`,
		`{"name":"carriage\rreturn","x":"tab\there","id":" space","é":"\u00a0nbsp"}`,
		`{"\u00e9":"escaped key","unknown":"ignored","id":""}`,
		`{"id":"first","id":"second","name":"a\"b","name":"plain","x":"plain","x":"esc\\aped"}`,
		`{"id":"esc\\aped","id":null,"name":"\u2028","nested":[],"x":"\ud83d\ude00"}`,
		`{"x":1.5e10,"nested":"{\"not\":\"parsed\"}","id":-0}`,
		"{\"name\":\"\u3000ideographic space\",\"id\":\"\\\\.\"}",
	}
	var objs [][]byte
	for _, c := range cases {
		objs = append(objs, []byte(c))
	}
	require.Equal(t, string(csvReference(t, cols, colIdx, objs)), string(csvEncoded(t, cols, colIdx, objs)))

	// Random records over the same columns, with repeats, unknown keys and
	// values that need quoting or unescaping.
	rng := rand.New(rand.NewPCG(1, 2))
	values := []string{`null`, `true`, `12`, `"plain"`, `""`, `"a,b"`, `"x\"y"`, `"new\nline"`, `"\r"`,
		`" lead"`, `"\t"`, `"\\."`, `"back\\slash"`, `"\u00e9t\u00e9"`, `{"a":[1,2]}`, `[null]`, `"\u0085"`}
	// Values appendInOrder takes without falling back (no escapes, nothing nested).
	fastValues := []string{`null`, `false`, `-1.5e3`, `"plain"`, `""`, `"a,b"`, `" lead"`, "\"\u00a0nbsp\"", "\"é\"", `"\u00e9"`}
	keys := append([]string{`"unknown"`, `"\u0069d"`}, func() []string {
		var k []string
		for _, c := range cols {
			k = append(k, string(source.AppendString(nil, c)))
		}
		return k
	}()...)
	objs = objs[:0]
	for r := range 4000 {
		var b strings.Builder
		b.WriteByte('{')
		if r%2 == 0 {
			// Every column in order, as a SQL row has them (appendInOrder).
			for j, k := range keys[2:] {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(k)
				b.WriteByte(':')
				v := fastValues[rng.IntN(len(fastValues))]
				if rng.IntN(40) == 0 {
					v = values[rng.IntN(len(values))]
				}
				b.WriteString(v)
			}
		} else {
			for j := range rng.IntN(12) {
				if j > 0 {
					b.WriteByte(',')
				}
				b.WriteString(keys[rng.IntN(len(keys))])
				b.WriteByte(':')
				b.WriteString(values[rng.IntN(len(values))])
			}
		}
		b.WriteByte('}')
		objs = append(objs, []byte(b.String()))
	}
	require.Equal(t, string(csvReference(t, cols, colIdx, objs)), string(csvEncoded(t, cols, colIdx, objs)))
}

// BenchmarkCSVEncoder encodes the 1,000,000-row benchmark's record, through
// appendRecord (which takes it in order) and member by member.
func BenchmarkCSVEncoder(b *testing.B) {
	cols := []string{"id", "kind", "payload", "at"}
	colIdx := map[string]int{"id": 0, "kind": 1, "payload": 2, "at": 3}
	obj := []byte(`{"id":123456,"kind":"page_view","payload":"c4ca4238a0b923820dcc509a6f75849b","at":"2024-01-02T10:17:36Z"}`)
	for _, path := range []string{"appendRecord", "appendMembers"} {
		b.Run(path, func(b *testing.B) {
			e := newCSVEncoder(cols, colIdx)
			var out []byte
			var err error
			for b.Loop() {
				if path == "appendRecord" {
					out, err = e.appendRecord(out[:0], obj)
				} else {
					out, err = e.appendMembers(out[:0], obj)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
