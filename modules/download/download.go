// Package download signs and verifies the expiring links a data subject uses
// to fetch an access report. A link carries no session: the token itself,
// an HMAC-SHA256 over the request id and the expiry, is the authorisation.
package download

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Errors Verify returns; the HTTP layer answers 403 for all of them without
// telling the caller which one it was.
var (
	// ErrMalformed means the token is missing or not in the signed format.
	ErrMalformed = errors.New("download: malformed token")
	// ErrBadSignature means the token was not signed with this key for this request.
	ErrBadSignature = errors.New("download: bad token signature")
	// ErrExpired means the token's expiry has passed.
	ErrExpired = errors.New("download: token expired")
)

// domain separates these MACs from anything else the same key might sign.
const domain = "gdpr-report-download-v1"

// Sign returns a token for requestID valid until expires.
func Sign(key []byte, requestID string, expires time.Time) string {
	return SignFor(key, domain, requestID, expires)
}

// SignFor is Sign for another purpose than a report download: scope (e.g.
// "gdpr-request-status-v1") is part of the MAC, so a token made for one
// purpose is refused for every other, although the same key signs them.
func SignFor(key []byte, scope, subject string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(mac(key, scope, subject, exp))
}

// Expiry returns the expiry a token states, unverified: only for showing a
// verified token's end to the person holding it.
func Expiry(token string) (time.Time, bool) {
	exp, _, ok := strings.Cut(token, ".")
	unix, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil {
		return time.Time{}, false
	}
	return time.Unix(unix, 0), true
}

// Verify checks that token was made by Sign with key for requestID and has
// not expired at now.
func Verify(key []byte, requestID, token string, now time.Time) error {
	return VerifyAny([][]byte{key}, requestID, token, now)
}

// VerifyAny is Verify accepting a token signed with any of keys: the active
// download key and the previous ones kept through a rotation, so that links
// emailed before the rotation work until their key is removed.
func VerifyAny(keys [][]byte, requestID, token string, now time.Time) error {
	return VerifyAnyFor(keys, domain, requestID, token, now)
}

// VerifyAnyFor is VerifyAny for a token made by SignFor with scope.
func VerifyAnyFor(keys [][]byte, scope, requestID, token string, now time.Time) error {
	exp, sig, ok := strings.Cut(token, ".")
	if !ok || exp == "" || sig == "" {
		return ErrMalformed
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrMalformed
	}
	// Strict: non-zero padding bits would let two spellings of one signature
	// pass; so would CR and LF, which the decoder skips even when strict.
	if strings.ContainsAny(sig, "\r\n") {
		return ErrMalformed
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil {
		return ErrMalformed
	}
	// The signature is checked before the expiry so that a forged token learns
	// nothing about whether its expiry would have been accepted.
	// Every key is tried, so the time taken tells nothing of which one matched.
	signed := false
	for _, key := range keys {
		if hmac.Equal(got, mac(key, scope, requestID, exp)) {
			signed = true
		}
	}
	if !signed {
		return ErrBadSignature
	}
	if !now.Before(time.Unix(unix, 0)) {
		return ErrExpired
	}
	return nil
}

func mac(key []byte, scope, requestID, exp string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(scope + "\n" + requestID + "\n" + exp))
	return h.Sum(nil)
}

// Path is the API path of a request's report download.
func Path(requestID string) string {
	return "/v1/requests/" + url.PathEscape(requestID) + "/report"
}

// URL returns the link emailed to a data subject: publicURL (the service's
// externally visible base URL) plus the report path and a token valid for
// ttl from now.
func URL(publicURL string, key []byte, requestID string, ttl time.Duration, now time.Time) string {
	q := url.Values{"token": {Sign(key, requestID, now.Add(ttl))}}
	return strings.TrimRight(publicURL, "/") + Path(requestID) + "?" + q.Encode()
}

// ParseURL extracts the request id and token from a link made by URL, for
// tests and tools that follow a link.
func ParseURL(link string) (requestID, token string, err error) {
	u, err := url.Parse(link)
	if err != nil {
		return "", "", fmt.Errorf("parsing download link: %w", err)
	}
	// publicURL may carry a base path, so look for the API path at the end.
	i := strings.LastIndex(u.Path, "/v1/requests/")
	if i < 0 {
		return "", "", fmt.Errorf("parsing download link: unexpected path %q", u.Path)
	}
	id, ok := strings.CutSuffix(u.Path[i+len("/v1/requests/"):], "/report")
	if !ok || id == "" {
		return "", "", fmt.Errorf("parsing download link: unexpected path %q", u.Path)
	}
	return id, u.Query().Get("token"), nil
}
