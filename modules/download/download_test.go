package download_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/download"
)

var key = []byte("0123456789abcdef0123456789abcdef")

func TestVerifyAcceptsOnlyTheRequestsUnexpiredToken(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tok := download.Sign(key, "req-a", now.Add(time.Hour))
	require.NoError(t, download.Verify(key, "req-a", tok, now))
	require.NoError(t, download.Verify(key, "req-a", tok, now.Add(time.Hour-time.Second)))

	require.ErrorIs(t, download.Verify(key, "req-a", tok, now.Add(time.Hour)), download.ErrExpired)
	require.ErrorIs(t, download.Verify(key, "req-b", tok, now), download.ErrBadSignature, "another request's token")
	require.ErrorIs(t, download.Verify([]byte("another-key-another-key"), "req-a", tok, now), download.ErrBadSignature)

	exp, sig, _ := strings.Cut(tok, ".")
	longer := download.Sign(key, "req-a", now.Add(365*24*time.Hour))
	longerExp, _, _ := strings.Cut(longer, ".")
	require.ErrorIs(t, download.Verify(key, "req-a", longerExp+"."+sig, now), download.ErrBadSignature, "extended expiry")
	for _, bad := range []string{"", ".", exp, exp + ".", "." + sig, "x." + sig, exp + "." + sig + "!", tok + ".x",
		// The base64 decoder skips CR and LF: another spelling of the same signature.
		tok + "\n", exp + "." + sig[:3] + "\r\n" + sig[3:]} {
		require.Error(t, download.Verify(key, "req-a", bad, now), bad)
	}
	// Flipping any single character of the token invalidates it.
	for i := range len(tok) {
		b := []byte(tok)
		b[i] ^= 0x01
		require.Error(t, download.Verify(key, "req-a", string(b), now), "flipped byte %d", i)
	}
}

func TestURLRoundTrips(t *testing.T) {
	t.Parallel()
	now := time.Now()
	for _, base := range []string{"https://privacy.example.com", "https://privacy.example.com/", "https://example.com/gdpr"} {
		link := download.URL(base, key, "0193a5c2-7e0b-7c4d-8f00-0123456789ab", 7*24*time.Hour, now)
		require.True(t, strings.HasPrefix(link, strings.TrimRight(base, "/")+"/v1/requests/0193a5c2-7e0b-7c4d-8f00-0123456789ab/report?token="), link)
		id, tok, err := download.ParseURL(link)
		require.NoError(t, err)
		require.Equal(t, "0193a5c2-7e0b-7c4d-8f00-0123456789ab", id)
		require.NoError(t, download.Verify(key, id, tok, now.Add(7*24*time.Hour-time.Minute)))
		require.ErrorIs(t, download.Verify(key, id, tok, now.Add(7*24*time.Hour)), download.ErrExpired)
	}
	_, _, err := download.ParseURL("https://example.com/elsewhere")
	require.Error(t, err)
}

func TestVerifyAnyAcceptsEveryConfiguredKey(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	old, current := []byte("old-key-old-key-old-key-old-key!"), key
	before := download.Sign(old, "req-a", now.Add(time.Hour))
	after := download.Sign(current, "req-a", now.Add(time.Hour))
	rotated := [][]byte{current, old}
	require.NoError(t, download.VerifyAny(rotated, "req-a", before, now), "a link signed before the rotation")
	require.NoError(t, download.VerifyAny(rotated, "req-a", after, now), "a link signed after it")
	require.ErrorIs(t, download.VerifyAny(rotated, "req-a", before, now.Add(time.Hour)), download.ErrExpired)
	require.ErrorIs(t, download.VerifyAny(rotated, "req-b", before, now), download.ErrBadSignature)
	require.ErrorIs(t, download.VerifyAny([][]byte{current}, "req-a", before, now), download.ErrBadSignature, "the old key removed")
	require.ErrorIs(t, download.VerifyAny(nil, "req-a", after, now), download.ErrBadSignature, "no keys")
}
