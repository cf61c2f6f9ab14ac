package api

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/gdpr-oss/gdpr/modules/ratelimit"
)

// Rate limit scopes: the label values of gdpr_rate_limited_total.
const (
	ScopeIntake      = "intake"
	ScopeAuthFailure = "auth_failure"
	ScopeDownload    = "download"
)

// RateLimitScopes are every scope the API limits.
func RateLimitScopes() []string { return []string{ScopeIntake, ScopeAuthFailure, ScopeDownload} }

// clientAddr is the request's client address as serve.trusted_proxies says.
func (s *Server) clientAddr(c echo.Context) string {
	r := c.Request()
	return s.opts.Proxies.ClientAddr(r.RemoteAddr, r.Header.Values(echo.HeaderXForwardedFor))
}

// tooMany is the 429 of a refused event.
func tooMany(d ratelimit.Decision) *apiError {
	secs := d.RetryAfterSeconds()
	e := problem(http.StatusTooManyRequests, "rate_limited", "", "too many requests; retry in %d s", secs)
	e.header = http.Header{"Retry-After": {strconv.Itoa(secs)}}
	return e
}

// authBlocked answers 429 when the caller's address used up its failed
// authentications, before any token is looked at: a blocked guesser gets
// the same answer for a right token as for a wrong one.
func (s *Server) authBlocked(c echo.Context) error {
	if d := s.opts.RateLimiter.Blocked(c.Request().Context(), ScopeAuthFailure, s.clientAddr(c), s.opts.RateLimits.AuthFailuresPerAddress); !d.Allowed {
		return tooMany(d)
	}
	return nil
}

// authFailed spends one failed authentication of the caller's address and
// returns unauthorized, or a 429 if that was one too many.
func (s *Server) authFailed(c echo.Context, unauthorized *apiError) error {
	if d := s.opts.RateLimiter.Allow(c.Request().Context(), ScopeAuthFailure, s.clientAddr(c), s.opts.RateLimits.AuthFailuresPerAddress); !d.Allowed {
		return tooMany(d)
	}
	return unauthorized
}

// consoleSignInLimit gives the console's sign-in form the API's budget of
// failed authentications per address (a token guessed on a page is a token
// guessed): a blocked address is answered 429 before the console looks at
// the token, and each sign-in the console refuses (401) spends one.
func (s *Server) consoleSignInLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method != http.MethodPost || r.URL.Path != "/admin/signin" {
			return next(c)
		}
		rule := s.opts.RateLimits.AuthFailuresPerAddress
		if d := s.opts.RateLimiter.Blocked(r.Context(), ScopeAuthFailure, s.clientAddr(c), rule); !d.Allowed {
			secs := d.RetryAfterSeconds()
			c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
			return c.String(http.StatusTooManyRequests, "Too many failed sign-ins from this address; try again in "+strconv.Itoa(secs)+" s.\n")
		}
		if err := next(c); err != nil {
			return err
		}
		if c.Response().Status == http.StatusUnauthorized {
			// The refusal is already written; the next try finds the budget spent.
			s.opts.RateLimiter.Allow(r.Context(), ScopeAuthFailure, s.clientAddr(c), rule)
		}
		return nil
	}
}
