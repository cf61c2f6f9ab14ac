package report

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func seal(t *testing.T, key []byte, id string, chunk int, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	s, err := newSealer(&buf, key, id, chunk)
	require.NoError(t, err)
	// Uneven writes exercise chunk boundaries that do not line up with writes.
	for p := plain; len(p) > 0; {
		n := min(len(p), 7)
		_, err := s.Write(p[:n])
		require.NoError(t, err)
		p = p[n:]
	}
	require.NoError(t, s.Close())
	return buf.Bytes()
}

func open(key []byte, id string, ct []byte) ([]byte, error) {
	o, chunk, err := newOpener(bytes.NewReader(ct), key, id)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(o)
	if err == nil && plainSize(int64(len(ct)), chunk) != int64(len(out)) {
		return out, io.ErrShortBuffer
	}
	return out, err
}

func TestCryptRoundTrip(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	const chunk = 64
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 3*chunk + 5} {
		plain := make([]byte, size)
		_, _ = rand.Read(plain)
		ct := seal(t, key, "r1", chunk, plain)
		got, err := open(key, "r1", ct)
		require.NoError(t, err, "size %d", size)
		require.Equal(t, plain, got, "size %d", size)
		require.Equal(t, int64(size), plainSize(int64(len(ct)), chunk), "size %d", size)
	}
}

func TestCryptDetectsTamperingTruncationAndMisuse(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	const chunk = 64
	plain := make([]byte, 4*chunk+10)
	_, _ = rand.Read(plain)
	ct := seal(t, key, "r1", chunk, plain)
	full := chunk + cryptTagLen

	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	otherKey := bytes.Clone(key)
	otherKey[0] ^= 0xff
	// Swapping two whole chunks keeps every tag valid but breaks the index binding.
	swapped := bytes.Clone(ct)
	copy(swapped[cryptHeaderLen:], ct[cryptHeaderLen+full:cryptHeaderLen+2*full])
	copy(swapped[cryptHeaderLen+full:], ct[cryptHeaderLen:cryptHeaderLen+full])

	cases := []struct {
		name string
		ct   []byte
		key  []byte
		id   string
	}{
		{"flipped byte in first chunk", flip(cryptHeaderLen + 3), key, "r1"},
		{"flipped byte in last chunk", flip(len(ct) - 1), key, "r1"},
		{"flipped salt", flip(len(cryptMagic) + 4), key, "r1"},
		{"flipped chunk size", flip(len(cryptMagic) + 3), key, "r1"},
		{"bad magic", flip(0), key, "r1"},
		{"truncated at a chunk boundary", ct[:cryptHeaderLen+2*full], key, "r1"},
		{"truncated mid chunk", ct[:cryptHeaderLen+2*full+20], key, "r1"},
		{"final chunk dropped", ct[:len(ct)-(10+cryptTagLen)], key, "r1"},
		{"header only", ct[:cryptHeaderLen], key, "r1"},
		{"empty file", nil, key, "r1"},
		{"chunks reordered", swapped, key, "r1"},
		{"appended garbage", append(bytes.Clone(ct), 1, 2, 3), key, "r1"},
		{"other report id", ct, key, "r2"},
		{"other key", ct, otherKey, "r1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := open(tc.key, tc.id, tc.ct)
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}
