package officer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/gdpr-oss/gdpr/modules/console"
)

// ErrNoSession means the cookie names no live session (signed out, expired, forged).
var ErrNoSession = errors.New("officer: no such session")

// Session is a signed-in web console session.
type Session struct {
	Principal console.Principal
	// CSRF is the token every form of the session must carry back.
	CSRF      string
	ExpiresAt time.Time
}

// CheckCSRF reports whether token is the session's, in constant time.
func (s Session) CheckCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading randomness: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// SignIn opens a session for p lasting console.session_ttl; id is the
// cookie value (only its SHA-256 is stored). Expired sessions are removed
// on the way.
func (s *Service) SignIn(ctx context.Context, p console.Principal) (id string, sess Session, err error) {
	if id, err = randomToken(); err != nil {
		return "", Session{}, err
	}
	csrf, err := randomToken()
	if err != nil {
		return "", Session{}, err
	}
	db := s.opts.DB.WithContext(ctx)
	if err := db.Exec(`DELETE FROM console_sessions WHERE expires_at < now()`).Error; err != nil {
		return "", Session{}, fmt.Errorf("removing expired sessions: %w", err)
	}
	var expires time.Time
	if err := db.Raw(`INSERT INTO console_sessions (id_sha256, csrf_token, operator, role, expires_at)
		VALUES (?, ?, ?, ?, now() + make_interval(secs => ?)) RETURNING expires_at`,
		sessionKey(id), csrf, p.Name, p.Role, s.opts.Config.SessionTTL.Seconds()).Scan(&expires).Error; err != nil {
		return "", Session{}, fmt.Errorf("storing session: %w", err)
	}
	return id, Session{Principal: p, CSRF: csrf, ExpiresAt: expires}, nil
}

// Session returns the live session of cookie value id. An operator removed
// from console.operators since sign-in is signed out: ops is the current
// configuration.
func (s *Service) Session(ctx context.Context, id string, ops *console.Operators) (Session, error) {
	if id == "" {
		return Session{}, ErrNoSession
	}
	var row struct {
		CSRFToken string
		Operator  string
		Role      string
		ExpiresAt time.Time
	}
	res := s.opts.DB.WithContext(ctx).Raw(`SELECT csrf_token, operator, role, expires_at FROM console_sessions
		WHERE id_sha256 = ? AND expires_at > now()`, sessionKey(id)).Scan(&row)
	if res.Error != nil {
		return Session{}, fmt.Errorf("loading session: %w", res.Error)
	}
	if res.RowsAffected == 0 {
		return Session{}, ErrNoSession
	}
	p := console.Principal{Name: row.Operator, Role: row.Role}
	if ops != nil && !ops.Has(p) {
		return Session{}, ErrNoSession
	}
	return Session{Principal: p, CSRF: row.CSRFToken, ExpiresAt: row.ExpiresAt}, nil
}

// SignOut ends the session of cookie value id.
func (s *Service) SignOut(ctx context.Context, id string) error {
	if err := s.opts.DB.WithContext(ctx).Exec(`DELETE FROM console_sessions WHERE id_sha256 = ?`, sessionKey(id)).Error; err != nil {
		return fmt.Errorf("removing session: %w", err)
	}
	return nil
}
