package console

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
)

// Principal is who makes an admin call: an operator's name and role.
type Principal struct {
	Name string
	Role string
}

// CanAct reports whether p may change anything.
func (p Principal) CanAct() bool { return p.Role == RoleOperator }

// Operators authenticates admin tokens against the configured digests.
type Operators struct {
	digests [][sha256.Size]byte
	who     []Principal
}

// NewOperators reads the configured operators; legacy are the digests of
// serve.admin_tokens, which act as operators named "admin-" and the first
// 16 hex characters of their digest.
func NewOperators(ops []Operator, legacy []string) (*Operators, error) {
	o := &Operators{}
	for i, op := range ops {
		raw, err := hex.DecodeString(op.TokenSHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("console.operators[%d].token_sha256: must be 64 hex characters", i)
		}
		o.digests = append(o.digests, [sha256.Size]byte(raw))
		o.who = append(o.who, Principal{Name: op.Name, Role: op.Role})
	}
	for i, d := range legacy {
		raw, err := hex.DecodeString(d)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("serve.admin_tokens[%d]: must be 64 hex characters", i)
		}
		o.digests = append(o.digests, [sha256.Size]byte(raw))
		o.who = append(o.who, Principal{Name: "admin-" + d[:16], Role: RoleOperator})
	}
	return o, nil
}

// Match returns the principal whose token this is. Every digest is
// compared in constant time.
func (o *Operators) Match(token string) (Principal, bool) {
	if token == "" || o == nil {
		return Principal{}, false
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range o.digests {
		if subtle.ConstantTimeCompare(sum[:], o.digests[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, false
	}
	return o.who[match], true
}

// Len is how many tokens are configured.
func (o *Operators) Len() int { return len(o.digests) }

// Has reports whether p (name and role) is still configured.
func (o *Operators) Has(p Principal) bool {
	if o == nil {
		return false
	}
	for _, w := range o.who {
		if w == p {
			return true
		}
	}
	return false
}
