package intake

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// Tokens is a set of bearer tokens, held only as SHA-256 digests so that the
// configuration never contains a usable token.
type Tokens struct {
	digests [][sha256.Size]byte
}

// ParseTokens reads hex SHA-256 digests (as `printf %s "$TOKEN" | sha256sum` prints them).
func ParseTokens(hexDigests []string) (Tokens, error) {
	var t Tokens
	for i, h := range hexDigests {
		raw, err := hex.DecodeString(strings.TrimSpace(h))
		if err != nil || len(raw) != sha256.Size {
			return Tokens{}, fmt.Errorf("token digest %d: must be 64 hex characters (a SHA-256 digest)", i)
		}
		t.digests = append(t.digests, [sha256.Size]byte(raw))
	}
	return t, nil
}

// Match reports whether token is in the set and, if so, a stable name of the
// caller (a prefix of its digest, safe to log and to scope keys by). Every
// digest is compared in constant time, so timing reveals neither which
// digest matched nor how much of one.
func (t Tokens) Match(token string) (caller string, ok bool) {
	if token == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range t.digests {
		if subtle.ConstantTimeCompare(sum[:], t.digests[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return hex.EncodeToString(t.digests[match][:8]), true
}

// Len is the number of configured tokens.
func (t Tokens) Len() int { return len(t.digests) }
