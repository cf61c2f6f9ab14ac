package api

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// The self-service page's HTTP glue: cookies, CSRF, language choice and
// status codes. What the page does is modules/selfservice.

const (
	csrfCookie = "gdpr_csrf"
	langCookie = "gdpr_lang"
)

func (s *Server) routePrivacy(e *echo.Echo, p *selfservice.Service) {
	pg := &privacyPages{s: s, p: p}
	s.route(e, http.MethodGet, "/privacy", pg.form)
	s.route(e, http.MethodPost, "/privacy/start", pg.start)
	s.route(e, http.MethodPost, "/privacy/verify", pg.verifyCode)
	s.route(e, http.MethodGet, "/privacy/confirm", pg.confirmPage)
	s.route(e, http.MethodPost, "/privacy/confirm", pg.confirm)
	s.route(e, http.MethodGet, "/privacy/status", pg.status)
	s.route(e, http.MethodGet, "/privacy/download", pg.download)
	static := echo.WrapHandler(http.StripPrefix("/privacy/static/", http.FileServerFS(selfservice.Static())))
	s.route(e, http.MethodGet, "/privacy/static/*", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=3600")
		return static(c)
	})
}

type privacyPages struct {
	s *Server
	p *selfservice.Service
}

// locale is the lang parameter (remembered in a cookie), else that cookie,
// else the browser's Accept-Language, else privacy.default_locale.
func (pg *privacyPages) locale(c echo.Context) string {
	if l := selfservice.Supported(c.QueryParam("lang")); l != "" {
		pg.setCookie(c, langCookie, l, 365*24*time.Hour)
		return l
	}
	if l := selfservice.Supported(c.FormValue("lang")); l != "" {
		return l
	}
	if ck, err := c.Cookie(langCookie); err == nil {
		if l := selfservice.Supported(ck.Value); l != "" {
			return l
		}
	}
	return selfservice.Negotiate(c.Request().Header.Get("Accept-Language"), pg.p.DefaultLocale())
}

func (pg *privacyPages) setCookie(c echo.Context, name, value string, maxAge time.Duration) {
	c.SetCookie(&http.Cookie{ //nolint:gosec // G124: Secure follows serve.public_url's scheme; a plain-http (loopback) install has no TLS to require

		Name: name, Value: value, Path: "/privacy", MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: pg.p.SecureCookies(), SameSite: http.SameSiteLaxMode,
	})
}

// csrf returns the form token: the browser's CSRF cookie, set first if it
// has none. A form post must carry the same value (double submit): another
// site can make the browser send the cookie but cannot read it.
func (pg *privacyPages) csrf(c echo.Context) string {
	if ck, err := c.Cookie(csrfCookie); err == nil && len(ck.Value) == 43 {
		return ck.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	pg.setCookie(c, csrfCookie, v, 24*time.Hour)
	return v
}

func (pg *privacyPages) csrfOK(c echo.Context) bool {
	ck, err := c.Cookie(csrfCookie)
	form := c.FormValue("csrf")
	return err == nil && ck.Value != "" && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(form)) == 1
}

// render writes a page with the headers every page carries: nothing is
// cached, no Referer leaves (links carry tokens), nothing loads from elsewhere.
func (pg *privacyPages) render(c echo.Context, status int, name, locale string, p selfservice.Page) error {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	h.Set(echo.HeaderXFrameOptions, "DENY")
	h.Set(echo.HeaderContentSecurityPolicy, "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if p.CSRF == "" {
		p.CSRF = pg.csrf(c)
	}
	c.Response().WriteHeader(status)
	if err := pg.p.Render(c.Response(), name, locale, c.Request().URL, p); err != nil {
		pg.s.opts.Logger.ErrorContext(c.Request().Context(), "rendering a privacy page failed", "page", name, "error", err)
	}
	return nil
}

func (pg *privacyPages) problem(c echo.Context, status int, locale, key string) error {
	return pg.render(c, status, "problem", locale, selfservice.Page{Problem: key})
}

// limitForm bounds the form body before echo parses it.
func (pg *privacyPages) limitForm(c echo.Context) {
	req := c.Request()
	req.Body = http.MaxBytesReader(c.Response(), req.Body, pg.s.opts.MaxBodyBytes)
}

func (pg *privacyPages) form(c echo.Context) error {
	return pg.render(c, http.StatusOK, "form", pg.locale(c), selfservice.Page{})
}

func (pg *privacyPages) start(c echo.Context) error {
	pg.limitForm(c)
	locale := pg.locale(c)
	if !pg.csrfOK(c) {
		return pg.problem(c, http.StatusForbidden, locale, "problem.csrf")
	}
	req := c.Request()
	flow, err := pg.p.Begin(req.Context(), selfservice.BeginInput{
		Type: c.FormValue("type"), Email: c.FormValue("email"), Locale: locale,
		ClientAddr: pg.s.clientAddr(c),
	})
	var fe *intake.FieldError
	switch {
	case errors.As(err, &fe):
		return pg.render(c, http.StatusBadRequest, "form", locale, selfservice.Page{Error: fe.Field + " " + fe.Message})
	case err != nil:
		return pg.failed(c, locale, err)
	}
	return pg.render(c, http.StatusOK, "sent", locale, selfservice.Page{Flow: flow})
}

func (pg *privacyPages) verifyCode(c echo.Context) error {
	pg.limitForm(c)
	locale := pg.locale(c)
	if !pg.csrfOK(c) {
		return pg.problem(c, http.StatusForbidden, locale, "problem.csrf")
	}
	flow := c.FormValue("flow")
	rc, err := pg.p.VerifyCode(c.Request().Context(), flow, c.FormValue("code"))
	if errors.Is(err, selfservice.ErrWrongCode) {
		return pg.render(c, http.StatusBadRequest, "sent", locale, selfservice.Page{Flow: flow, TriesLeft: selfservice.TriesLeftOf(err)})
	}
	return pg.verified(c, locale, rc, err)
}

func (pg *privacyPages) confirmPage(c echo.Context) error {
	locale := pg.locale(c)
	flow, token := c.QueryParam("flow"), c.QueryParam("token")
	// Only a check: mail scanners fetch links, so using one takes a POST.
	if err := pg.p.CheckLink(c.Request().Context(), flow, token); errors.Is(err, selfservice.ErrGone) {
		return pg.render(c, http.StatusGone, "gone", locale, selfservice.Page{})
	} else if err != nil {
		return pg.failed(c, locale, err)
	}
	return pg.render(c, http.StatusOK, "link", locale, selfservice.Page{Flow: flow, Token: token})
}

func (pg *privacyPages) confirm(c echo.Context) error {
	pg.limitForm(c)
	locale := pg.locale(c)
	if !pg.csrfOK(c) {
		return pg.problem(c, http.StatusForbidden, locale, "problem.csrf")
	}
	rc, err := pg.p.VerifyLink(c.Request().Context(), c.FormValue("flow"), c.FormValue("token"))
	return pg.verified(c, locale, rc, err)
}

func (pg *privacyPages) verified(c echo.Context, locale string, rc selfservice.Receipt, err error) error {
	switch {
	case err == nil:
		return pg.render(c, http.StatusOK, "receipt", locale, selfservice.Page{Request: rc.Request, Link: rc.StatusLink})
	case errors.Is(err, selfservice.ErrVoid):
		return pg.problem(c, http.StatusBadRequest, locale, "problem.void")
	case errors.Is(err, selfservice.ErrExpired):
		return pg.problem(c, http.StatusGone, locale, "problem.expired")
	case errors.Is(err, selfservice.ErrGone):
		return pg.render(c, http.StatusGone, "gone", locale, selfservice.Page{})
	}
	return pg.failed(c, locale, err)
}

func (pg *privacyPages) failed(c echo.Context, locale string, err error) error {
	if errors.Is(err, selfservice.ErrUnavailable) || errors.Is(err, intake.ErrUnavailable) {
		c.Response().Header().Set("Retry-After", "60")
		return pg.problem(c, http.StatusServiceUnavailable, locale, "problem.unavailable")
	}
	pg.s.opts.Logger.ErrorContext(c.Request().Context(), "privacy page request failed", "error", err)
	return pg.problem(c, http.StatusInternalServerError, locale, "problem.unavailable")
}

func (pg *privacyPages) status(c echo.Context) error {
	locale := pg.locale(c)
	st, err := pg.p.Status(c.Request().Context(), c.QueryParam("request"), c.QueryParam("token"))
	if errors.Is(err, selfservice.ErrGone) {
		return pg.render(c, http.StatusGone, "gone", locale, selfservice.Page{Withdrawn: errors.Is(err, selfservice.ErrWithdrawn)})
	}
	if err != nil {
		return pg.failed(c, locale, err)
	}
	return pg.render(c, http.StatusOK, "status", locale, selfservice.Page{Request: st.Request, Link: st.DownloadLink, Deleted: st.Deleted})
}

func (pg *privacyPages) download(c echo.Context) error {
	locale := pg.locale(c)
	d, err := pg.p.Download(c.Request().Context(), c.QueryParam("request"), c.QueryParam("token"))
	var deleted *intake.GoneError
	switch {
	case errors.As(err, &deleted):
		return pg.render(c, http.StatusGone, "gone", locale, selfservice.Page{Deleted: deleted})
	case errors.Is(err, selfservice.ErrGone):
		return pg.render(c, http.StatusGone, "gone", locale, selfservice.Page{})
	case err != nil:
		return pg.failed(c, locale, err)
	}
	return pg.render(c, http.StatusOK, "download", locale, selfservice.Page{RequestID: d.RequestID, Link: d.Link, Until: d.Until, Contents: d.Contents})
}
