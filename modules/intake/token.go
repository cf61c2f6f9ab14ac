package intake

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// Tokens is a set of bearer tokens, held only as SHA-256 digests so that the
// configuration never contains a usable token. Each token belongs to a
// client (Client): a named one (serve.api_clients) or, for a flat digest
// (serve.api_tokens), one named after its digest.
type Tokens struct {
	digests [][sha256.Size]byte
	clients []Client
}

// Client is an authenticated API client: the name recorded on every request
// it submits (requests.client), which scopes what it may read.
type Client struct {
	// Name is the configured name (serve.api_clients[].name) or, for a flat
	// serve.api_tokens entry, LegacyName of its digest.
	Name string
	// Legacy is the name the same token had as a flat serve.api_tokens
	// entry: requests submitted before the token was given a name stay its.
	Legacy string
}

// Owns reports whether a request recorded with client recorded is this
// client's. A request stored before requests recorded their client
// (recorded == "", migration 052) is any client's, as every request was.
func (c Client) Owns(recorded string) bool {
	return recorded == "" || recorded == c.Name || (c.Legacy != "" && recorded == c.Legacy)
}

// NamedToken is one named client's token digest (serve.api_clients).
type NamedToken struct {
	Name        string
	TokenSHA256 string
}

// LegacyName is the client name of a flat token digest: the first 16 hex
// characters of the digest (safe to log; the name requests submitted with
// a flat serve.api_tokens entry are recorded under).
func LegacyName(hexDigest string) string {
	d := strings.ToLower(strings.TrimSpace(hexDigest))
	if len(d) > 16 {
		d = d[:16]
	}
	return d
}

// ParseTokens reads hex SHA-256 digests (as `printf %s "$TOKEN" | sha256sum` prints them).
func ParseTokens(hexDigests []string) (Tokens, error) {
	return ParseClients(nil, hexDigests)
}

// ParseClients reads named clients and flat digests. A digest may appear
// only once across both: one token is one client.
func ParseClients(named []NamedToken, flat []string) (Tokens, error) {
	var t Tokens
	seen := map[[sha256.Size]byte]bool{}
	add := func(where, h string, c Client) error {
		raw, err := hex.DecodeString(strings.TrimSpace(h))
		if err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("%s: must be 64 hex characters (a SHA-256 digest)", where)
		}
		d := [sha256.Size]byte(raw)
		if seen[d] {
			return fmt.Errorf("%s: the same token digest is configured twice", where)
		}
		seen[d] = true
		t.digests = append(t.digests, d)
		t.clients = append(t.clients, c)
		return nil
	}
	for i, n := range named {
		if n.Name == "" {
			return Tokens{}, fmt.Errorf("client %d: a name is required", i)
		}
		if err := add(fmt.Sprintf("client %q", n.Name), n.TokenSHA256, Client{Name: n.Name, Legacy: LegacyName(n.TokenSHA256)}); err != nil {
			return Tokens{}, err
		}
	}
	for i, h := range flat {
		if err := add(fmt.Sprintf("token digest %d", i), h, Client{Name: LegacyName(h)}); err != nil {
			return Tokens{}, err
		}
	}
	return t, nil
}

// Match reports whether token is in the set and, if so, the name of its
// client (safe to log and to scope keys by). Every digest is compared in
// constant time, so timing reveals neither which digest matched nor how
// much of one.
func (t Tokens) Match(token string) (caller string, ok bool) {
	c, ok := t.Client(token)
	return c.Name, ok
}

// Client returns the client whose token this is.
func (t Tokens) Client(token string) (Client, bool) {
	if token == "" {
		return Client{}, false
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range t.digests {
		if subtle.ConstantTimeCompare(sum[:], t.digests[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Client{}, false
	}
	return t.clients[match], true
}

// Len is the number of configured tokens.
func (t Tokens) Len() int { return len(t.digests) }
