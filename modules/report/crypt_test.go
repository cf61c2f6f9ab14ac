package report

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func seal(t *testing.T, key []byte, id string, chunk int, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	s, err := newSealer(&buf, newMasterKey(key), id, chunk)
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

// open decrypts ct with the first of keys that it names (or opens, for a
// version 1 file).
func open(keys [][]byte, id string, ct []byte) ([]byte, error) {
	ring := make([]masterKey, len(keys))
	for i, k := range keys {
		ring[i] = newMasterKey(k)
	}
	o, err := newOpener(bytes.NewReader(ct), ring, id)
	if err != nil {
		return nil, err
	}
	out, err := io.ReadAll(o)
	if err == nil && o.plainSize(int64(len(ct))) != int64(len(out)) {
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
		got, err := open([][]byte{key}, "r1", ct)
		require.NoError(t, err, "size %d", size)
		require.Equal(t, plain, got, "size %d", size)
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
		{"flipped salt", flip(len(cryptMagic) + 4 + cryptKeyIDLen), key, "r1"},
		{"flipped chunk size", flip(len(cryptMagic) + 3), key, "r1"},
		{"flipped key id", flip(len(cryptMagic) + 4), key, "r1"},
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
			_, err := open([][]byte{tc.key}, tc.id, tc.ct)
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// TestCryptKeyRotation seals files with an old and a new key and opens both
// with the rotated key list (new key active, old key previous); without the
// old key its files fail to open, naming the missing key.
func TestCryptKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := make([]byte, 32), make([]byte, 32)
	_, _ = rand.Read(oldKey)
	_, _ = rand.Read(newKey)
	plain := bytes.Repeat([]byte("rotation "), 40)
	before := seal(t, oldKey, "r1", 64, plain)
	after := seal(t, newKey, "r1", 64, plain)
	require.NotEqual(t, before[len(cryptMagic)+4:len(cryptMagic)+4+cryptKeyIDLen], after[len(cryptMagic)+4:len(cryptMagic)+4+cryptKeyIDLen],
		"the header names the key")

	for name, ct := range map[string][]byte{"before": before, "after": after} {
		got, err := open([][]byte{newKey, oldKey}, "r1", ct)
		require.NoError(t, err, name)
		require.Equal(t, plain, got, name)
	}
	_, err := open([][]byte{newKey}, "r1", before)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, KeyID(oldKey))
}

// TestCryptOpensVersion1Files opens a file sealed by the format before key
// ids (testdata, written by that code with a fixed key): with its key alone,
// as a previous key after a rotation, and not with another key.
func TestCryptOpensVersion1Files(t *testing.T) {
	t.Parallel()
	const id = "0193a5c2-7e0b-7c4d-8f00-0000000000a1"
	ct, err := os.ReadFile("testdata/v1-" + id + ".enc")
	require.NoError(t, err)
	require.Equal(t, cryptMagicV1, string(ct[:len(cryptMagicV1)]))
	legacy, err := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	require.NoError(t, err)
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	want := bytes.Repeat([]byte("report encrypted with the version 1 header.\n"), 5)

	for name, keys := range map[string][][]byte{
		"its key alone":         {legacy},
		"its key as a previous": {other, legacy},
	} {
		got, err := open(keys, id, ct)
		require.NoError(t, err, name)
		require.Equal(t, want, got, name)
	}
	_, err = open([][]byte{other}, id, ct)
	require.ErrorIs(t, err, ErrCorrupt, "another key")
	_, err = open([][]byte{legacy}, "0193a5c2-7e0b-7c4d-8f00-0000000000a2", ct)
	require.ErrorIs(t, err, ErrCorrupt, "another report id")
	flipped := bytes.Clone(ct)
	flipped[len(ct)-1] ^= 1
	_, err = open([][]byte{other, legacy}, id, flipped)
	require.ErrorIs(t, err, ErrCorrupt, "tampered")
}
