package download_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/download"
)

// fuzzKey signs the valid tokens of testdata/fuzz/FuzzVerify; the corpus
// also holds tokens signed with the public development key
// ("dev-download-key-change-me"), which must never verify with it.
var fuzzKey = []byte("fuzz-download-key-0123456789abcdef")

// FuzzVerify checks download-token verification on any token, request id
// and time: only a token Sign made with the key for that request id
// verifies, and only before its expiry; everything else fails with one of
// the three errors and never panics. Run with go test -fuzz FuzzVerify; the
// seeds in testdata/fuzz/FuzzVerify run as a normal test.
func FuzzVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, requestID, token string, now int64) {
		// Keep times where Unix seconds and time.Time agree (years 1425 to 2514).
		at := time.Unix(now%(1<<34), 0)
		err := download.Verify(fuzzKey, requestID, token, at)
		if err != nil {
			require.True(t, errors.Is(err, download.ErrMalformed) || errors.Is(err, download.ErrBadSignature) || errors.Is(err, download.ErrExpired), "%v", err)
		} else {
			exp, _, _ := strings.Cut(token, ".")
			unix, perr := strconv.ParseInt(exp, 10, 64)
			require.NoError(t, perr)
			require.Equal(t, download.Sign(fuzzKey, requestID, time.Unix(unix, 0)), token, "only the token Sign makes verifies")
			require.True(t, at.Before(time.Unix(unix, 0)), "an accepted token has not expired")
			require.ErrorIs(t, download.Verify([]byte(devKey), requestID, token, at), download.ErrBadSignature, "another key")
		}
		// With a previous key besides (one the corpus never signs with), the
		// answer is the same.
		require.Equal(t, err, download.VerifyAny([][]byte{[]byte("previous-key-not-in-the-corpus-0123"), fuzzKey}, requestID, token, at))

		// A fresh token for this request verifies, for no other request, and
		// not once expired; the fuzzed token appended to it breaks it.
		fresh := download.Sign(fuzzKey, requestID, at.Add(time.Hour))
		require.NoError(t, download.Verify(fuzzKey, requestID, fresh, at))
		require.ErrorIs(t, download.Verify(fuzzKey, requestID, fresh, at.Add(time.Hour)), download.ErrExpired)
		require.ErrorIs(t, download.Verify(fuzzKey, requestID+"x", fresh, at), download.ErrBadSignature)
		if token != "" {
			require.Error(t, download.Verify(fuzzKey, requestID, fresh+token, at))
		}
	})
}

const devKey = "dev-download-key-change-me"
