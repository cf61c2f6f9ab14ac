package report

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRawEntriesMatchCreateHeader: entries deflated ahead of the archive and
// copied with CreateRaw give the bytes zip.Writer.CreateHeader gives when it
// compresses the same content in place, so the report's format is what it
// was, including entries large enough to spill to an encrypted file.
func TestRawEntriesMatchCreateHeader(t *testing.T) {
	t.Parallel()
	var big strings.Builder
	for i := range 40_000 {
		fmt.Fprintf(&big, "{\"id\":%d,\"payload\":\"%x\"}\n", i, i*7919)
	}
	random := make([]byte, 200<<10) // incompressible: the deflated entry spills too
	_, err := rand.Read(random)
	require.NoError(t, err)
	contents := map[string]string{"empty.csv": "", "small.json": "[]\n", "big.json": big.String(), "random.bin": hex.EncodeToString(random) + string(random)}
	names := []string{"empty.csv", "small.json", "big.json", "random.bin"}
	modified := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	var p pools
	var want bytes.Buffer
	zw := zip.NewWriter(&want)
	zw.RegisterCompressor(zip.Deflate, p.compressor)
	for _, name := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: modified})
		require.NoError(t, err)
		_, err = io.WriteString(w, contents[name])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())

	key := newMasterKey(bytes.Repeat([]byte{7}, 32))
	dir := t.TempDir()
	var got bytes.Buffer
	a := archive{zw: zip.NewWriter(&got), modified: modified, pools: &p}
	spilled := 0
	for _, name := range names {
		e := newEntry(&p, dir, key)
		// Written in uneven pieces, as records arrive.
		rest := contents[name]
		for len(rest) > 0 {
			n := min(len(rest), 1+len(rest)%977)
			e.buf = append(e.buf, rest[:n]...)
			rest = rest[n:]
			require.NoError(t, e.maybeFlush())
		}
		require.NoError(t, e.finish())
		if e.out.f != nil {
			spilled++
		}
		require.NoError(t, a.raw(name, e))
		require.NoError(t, e.close())
		require.Equal(t, int64(len(contents[name])), a.man.Files[len(a.man.Files)-1].Bytes)
	}
	require.NoError(t, a.zw.Close())
	require.Equal(t, 2, spilled, "the two large entries went through encrypted spool files")
	require.Equal(t, want.Len(), got.Len())
	require.True(t, bytes.Equal(want.Bytes(), got.Bytes()), "the archives differ")

	zr, err := zip.NewReader(bytes.NewReader(got.Bytes()), int64(got.Len()))
	require.NoError(t, err)
	for _, f := range zr.File {
		r, err := f.Open()
		require.NoError(t, err)
		data, err := io.ReadAll(r)
		require.NoError(t, err, f.Name)
		require.Equal(t, contents[f.Name], string(data), f.Name)
	}
}
