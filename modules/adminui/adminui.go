// Package adminui is the privacy officer's web console, served by `gdpr
// serve` under /admin/: server-rendered html/template pages and one
// stylesheet, embedded in the binary, no script and no external resource.
// It signs operators in with their admin token, keeps them signed in with
// an HttpOnly, SameSite=Strict session cookie (Secure when serve.public_url
// is https), checks a
// CSRF token on every action and leaves every decision to modules/officer.
// It speaks net/http only; modules/api mounts it.
package adminui

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/officer"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
	"github.com/gdpr-oss/gdpr/modules/requests"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/*
var staticFS embed.FS

// CookieName is the session cookie.
const CookieName = "gdpr_console"

// Officer is what the console needs from modules/officer.
type Officer interface {
	Config() console.Config
	List(ctx context.Context, f requests.Filter) (requests.Page, error)
	Clients(ctx context.Context) ([]string, error)
	Detail(ctx context.Context, id string) (officer.Detail, error)
	Dashboard(ctx context.Context) (officer.Dashboard, error)
	Retry(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Cancel(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Deny(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Extend(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Resend(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	ConfirmManually(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	NotApplicable(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	DeadLetterList(ctx context.Context, limit int) ([]bus.DeadLetter, error)
	Requeue(ctx context.Context, p console.Principal, queue string, limit int, in officer.Input) (int, error)
	SignIn(ctx context.Context, p console.Principal) (string, officer.Session, error)
	Session(ctx context.Context, id string, ops *console.Operators) (officer.Session, error)
	SignOut(ctx context.Context, id string) error
}

// Console is the web console's http.Handler.
type Console struct {
	off    Officer
	ops    *console.Operators
	logger *slog.Logger
	pages  map[string]*template.Template
	mux    *http.ServeMux
	// httpsOnly: serve.public_url is https, so browsers reach the console
	// over TLS even where TLS ends at a proxy in front of it.
	httpsOnly bool
}

// Options configure the console.
type Options struct {
	// PublicURL is serve.public_url: when it is https the session cookie
	// is Secure on every answer.
	PublicURL string
}

// New returns the console.
func New(off Officer, ops *console.Operators, opts Options, logger *slog.Logger) (*Console, error) {
	c := &Console{off: off, ops: ops, logger: logger.With("component", "console"), pages: map[string]*template.Template{},
		httpsOnly: isHTTPS(opts.PublicURL)}
	funcs := template.FuncMap{
		"ts":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"tsp":   func(t *time.Time) string { return tsp(t) },
		"date":  func(t time.Time) string { return t.UTC().Format("2006-01-02") },
		"join":  strings.Join,
		"codes": officer.ReasonCodes,
		// Any string kind: states are their owners' typed constants
		// (requests.State), codes and kinds plain strings.
		"label":  func(s any) string { return strings.ReplaceAll(fmt.Sprint(s), "_", " ") },
		"lower":  strings.ToLower,
		"detail": detailText,
	}
	for _, name := range []string{"signin", "dashboard", "list", "request", "deadletters", "message"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parsing console template %s: %w", name, err)
		}
		c.pages[name] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	m := http.NewServeMux()
	m.Handle("GET /admin/static/", http.StripPrefix("/admin/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /admin/signin", c.signinPage)
	m.HandleFunc("POST /admin/signin", c.signin)
	m.HandleFunc("POST /admin/signout", c.authed(c.signout))
	m.HandleFunc("GET /admin/{$}", c.authed(c.dashboard))
	m.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/admin/", http.StatusSeeOther) })
	m.HandleFunc("GET /admin/requests", c.authed(c.list))
	m.HandleFunc("GET /admin/requests/{id}", c.authed(c.request))
	m.HandleFunc("POST /admin/requests/{id}/{action}", c.authed(c.act))
	m.HandleFunc("POST /admin/requests/{id}/participants/{participant}/{action}", c.authed(c.act))
	m.HandleFunc("GET /admin/dead-letters", c.authed(c.deadLetters))
	m.HandleFunc("POST /admin/dead-letters/requeue", c.authed(c.requeue))
	c.mux = m
	return c, nil
}

func tsp(t *time.Time) string {
	if t == nil {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// detailText shows an audit event's details as key=value pairs.
func detailText(d map[string]any) string {
	parts := make([]string, 0, len(d))
	for k, v := range d {
		if k == "request_id" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

// ServeHTTP adds the console's security headers to every answer.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer a browser sends
	// "Origin: null" on form posts, and sameOrigin could not tell ours.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

type page struct {
	Title   string
	Nav     string
	Session *officer.Session
	Flash   string
	Error   string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.pages[name].Execute(&buf, p); err != nil {
		c.logger.ErrorContext(r.Context(), "rendering a console page failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func isHTTPS(publicURL string) bool {
	u, err := url.Parse(publicURL)
	return err == nil && strings.EqualFold(u.Scheme, "https")
}

// secure is the session cookie's Secure flag. It follows the operator's
// serve.public_url (and TLS served here), never a header: any client can
// send X-Forwarded-Proto.
func (c *Console) secure(r *http.Request) bool {
	return c.httpsOnly || r.TLS != nil
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "signin", page{Title: "Sign in"})
}

// sameOrigin refuses a form posted from another origin (a second line of
// defence behind SameSite=Strict and the CSRF token).
func sameOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || origin == "null" {
		return origin == ""
	}
	u, err := url.Parse(origin)
	return err == nil && u.Host == r.Host
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-origin sign-in refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	p, ok := c.ops.Match(strings.TrimSpace(r.PostFormValue("token")))
	if !ok {
		c.render(w, r, http.StatusUnauthorized, "signin", page{Title: "Sign in", Error: "That token is not an operator's token."})
		return
	}
	id, sess, err := c.off.SignIn(r.Context(), p)
	if err != nil {
		c.logger.ErrorContext(r.Context(), "console sign-in failed", "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	//nolint:gosec // G124: HttpOnly and SameSite=Strict always; Secure whenever serve.public_url is https or the request came over TLS (plain HTTP is for loopback and tests).
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/admin", Expires: sess.ExpiresAt,
		HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteStrictMode})
	c.logger.InfoContext(r.Context(), "operator signed in to the console", "operator", p.Name, "role", p.Role)
	http.Redirect(w, r, "/admin/", http.StatusSeeOther)
}

type authedHandler func(w http.ResponseWriter, r *http.Request, s officer.Session)

// authed needs a live session; every POST also needs the session's CSRF
// token and the console's own origin.
func (c *Console) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(CookieName)
		var sess officer.Session
		if err == nil {
			sess, err = c.off.Session(r.Context(), ck.Value, c.ops)
		}
		if err != nil {
			if !errors.Is(err, officer.ErrNoSession) && !errors.Is(err, http.ErrNoCookie) {
				c.logger.ErrorContext(r.Context(), "loading a console session failed", "error", err)
			}
			if r.Method != http.MethodGet {
				c.render(w, r, http.StatusUnauthorized, "message", page{Title: "Signed out", Error: "Your session has ended. Sign in again."})
				return
			}
			http.Redirect(w, r, "/admin/signin", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !sameOrigin(r) || !sess.CheckCSRF(r.PostFormValue("csrf")) {
				c.logger.WarnContext(r.Context(), "console action without a valid CSRF token refused", "operator", sess.Principal.Name)
				c.render(w, r, http.StatusForbidden, "message", page{Title: "Refused", Session: &sess,
					Error: "This form is not from your current session (missing or wrong CSRF token). Nothing was changed."})
				return
			}
		}
		h(w, r, sess)
	}
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, _ officer.Session) {
	if ck, err := r.Cookie(CookieName); err == nil {
		if err := c.off.SignOut(r.Context(), ck.Value); err != nil {
			c.logger.ErrorContext(r.Context(), "console sign-out failed", "error", err)
		}
	}
	//nolint:gosec // G124: clears the cookie; same attributes as at sign-in.
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/admin", MaxAge: -1,
		HttpOnly: true, Secure: c.secure(r), SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/admin/signin", http.StatusSeeOther)
}

// stateNames are the request states the list's filter offers, in lifecycle order.
func stateNames() []string {
	var out []string
	for _, st := range requests.States() {
		out = append(out, string(st))
	}
	return out
}

// stateRows are the dashboard's states in lifecycle order.
func stateRows(counts map[string]int) []kv {
	out := []kv{}
	for _, st := range requests.States() {
		out = append(out, kv{string(st), counts[string(st)]})
	}
	return out
}

type kv struct {
	Key string
	N   int
}

// syncRow is one stage of the in-sync table, as `gdpr reconcile` prints it.
type syncRow struct {
	Stage     string
	PerKind   []int
	Total     int
	OutOfSync int
}

type syncTable struct {
	Kinds []string
	Rows  []syncRow
	Res   reconcile.Result
}

func inSync(res reconcile.Result) syncTable {
	t := syncTable{Res: res}
	for k := range res.Counts {
		t.Kinds = append(t.Kinds, k)
	}
	slices.Sort(t.Kinds)
	oos := res.OutOfSync()
	for _, stage := range reconcile.Stages() {
		row := syncRow{Stage: stage, OutOfSync: oos[stage]}
		for _, k := range t.Kinds {
			n := res.Counts[k][stage]
			row.PerKind = append(row.PerKind, n)
			row.Total += n
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

type dashboardData struct {
	D      officer.Dashboard
	States []kv
	Sync   syncTable
	Chart  chart
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, s officer.Session) {
	d, err := c.off.Dashboard(r.Context())
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	c.render(w, r, http.StatusOK, "dashboard", page{Title: "Dashboard", Nav: "dashboard", Session: &s,
		Data: dashboardData{D: d, States: stateRows(d.Counts), Sync: inSync(d.InSync), Chart: newChart(d.Daily)}})
}

// fail shows an officer error with its status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s officer.Session, err error) {
	status := http.StatusInternalServerError
	msg := "Something went wrong; the log has the details."
	switch {
	case errors.Is(err, officer.ErrNotFound):
		status, msg = http.StatusNotFound, "No such request."
	case errors.Is(err, officer.ErrConflict):
		status, msg = http.StatusConflict, "Refused: "+err.Error()
	case errors.Is(err, officer.ErrForbidden):
		status, msg = http.StatusForbidden, "Refused: your role may only view."
	case errors.Is(err, officer.ErrBadInput):
		status, msg = http.StatusBadRequest, "Not done: "+err.Error()
	case errors.Is(err, officer.ErrUnavailable):
		status, msg = http.StatusServiceUnavailable, "The message broker could not be reached; try again."
	default:
		c.logger.ErrorContext(r.Context(), "console request failed", "error", err)
	}
	c.render(w, r, status, "message", page{Title: "Refused", Session: &s, Error: msg})
}

type listData struct {
	Page    requests.Page
	Q       url.Values
	NextURL string
	Regs    []string
	States  []string
	Clients []string
}

// filterFrom reads the list filters of the query string.
func filterFrom(q url.Values) (requests.Filter, error) {
	f := requests.Filter{Type: q.Get("type"), Regulation: q.Get("regulation"), Client: q.Get("client"), Sort: q.Get("sort"), Cursor: q.Get("cursor")}
	if st := q.Get("state"); st != "" {
		f.States = []string{st}
	}
	f.Overdue = q.Get("overdue") == "on" || q.Get("overdue") == "true"
	f.NearDeadline = q.Get("near_deadline") == "on" || q.Get("near_deadline") == "true"
	f.ParticipantOverdue = q.Get("participant_overdue") == "on" || q.Get("participant_overdue") == "true"
	for name, dst := range map[string]*time.Time{"due_before": &f.DueBefore, "submitted_after": &f.SubmittedAfter, "submitted_before": &f.SubmittedBefore} {
		v := q.Get(name)
		if v == "" {
			continue
		}
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			return f, fmt.Errorf("%w: %s must be a date (YYYY-MM-DD)", officer.ErrBadInput, strings.ReplaceAll(name, "_", " "))
		}
		*dst = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return f, fmt.Errorf("%w: limit must be between 1 and 500", officer.ErrBadInput)
		}
		f.Limit = n
	}
	return f, nil
}

func (c *Console) list(w http.ResponseWriter, r *http.Request, s officer.Session) {
	q := r.URL.Query()
	f, err := filterFrom(q)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	p, err := c.off.List(r.Context(), f)
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	clients, err := c.off.Clients(r.Context())
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	d := listData{Page: p, Q: q, Regs: []string{"gdpr", "ccpa", "lgpd"}, Clients: clients,
		States: stateNames()}
	if p.Next != "" {
		nq := url.Values{}
		for k, v := range q {
			nq[k] = v
		}
		nq.Set("cursor", p.Next)
		d.NextURL = "/admin/requests?" + nq.Encode()
	}
	c.render(w, r, http.StatusOK, "list", page{Title: "Requests", Nav: "requests", Session: &s, Data: d})
}

type requestData struct {
	D      officer.Detail
	Denial []string
}

func (c *Console) request(w http.ResponseWriter, r *http.Request, s officer.Session) {
	d, err := c.off.Detail(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	flash := ""
	if done := r.URL.Query().Get("done"); done != "" {
		flash = "Done: " + strings.ReplaceAll(done, "_", " ") + "."
		if r.URL.Query().Get("changed") == "false" {
			flash = "Nothing to do: " + strings.ReplaceAll(done, "_", " ") + " had been done already."
		}
	}
	c.render(w, r, http.StatusOK, "request", page{Title: "Request " + d.Request.ID, Nav: "requests", Session: &s, Flash: flash,
		Data: requestData{D: d, Denial: event.DenialCodes()}})
}

// destructive actions need the confirmation box ticked.
func destructive(action string) bool {
	switch action {
	case officer.ActionCancel, officer.ActionDeny, officer.ActionConfirmManually, officer.ActionNotApplicable:
		return true
	}
	return false
}

func (c *Console) act(w http.ResponseWriter, r *http.Request, s officer.Session) {
	id, participant, action := r.PathValue("id"), r.PathValue("participant"), strings.ReplaceAll(r.PathValue("action"), "-", "_")
	in := officer.Input{ReasonCode: r.PostFormValue("reason_code"), Reason: r.PostFormValue("reason")}
	if v := r.PostFormValue("until"); v != "" {
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			c.fail(w, r, s, fmt.Errorf("%w: the new deadline must be a date", officer.ErrBadInput))
			return
		}
		in.Until = t.Add(23*time.Hour + 59*time.Minute)
	}
	if destructive(action) && r.PostFormValue("confirm") != "yes" {
		c.fail(w, r, s, fmt.Errorf("%w: tick the confirmation box to %s", officer.ErrBadInput, strings.ReplaceAll(action, "_", " ")))
		return
	}
	ctx, p := r.Context(), s.Principal
	var res officer.Result
	var err error
	switch {
	case participant == "" && action == officer.ActionRetry:
		res, err = c.off.Retry(ctx, p, id, in)
	case participant == "" && action == officer.ActionCancel:
		res, err = c.off.Cancel(ctx, p, id, in)
	case participant == "" && action == officer.ActionDeny:
		res, err = c.off.Deny(ctx, p, id, in)
	case participant == "" && action == officer.ActionExtend:
		res, err = c.off.Extend(ctx, p, id, in)
	case participant != "" && action == officer.ActionResend:
		res, err = c.off.Resend(ctx, p, id, participant, in)
	case participant != "" && action == "confirm":
		action = officer.ActionConfirmManually
		if r.PostFormValue("confirm") != "yes" {
			err = fmt.Errorf("%w: tick the confirmation box to confirm manually", officer.ErrBadInput)
			break
		}
		res, err = c.off.ConfirmManually(ctx, p, id, participant, in)
	case participant != "" && action == officer.ActionNotApplicable:
		res, err = c.off.NotApplicable(ctx, p, id, participant, in)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		c.fail(w, r, s, err)
		return
	}
	// A path on this server (the id is the request's, which the officer found).
	if res.Request != nil {
		id = res.Request.ID
	}
	target := "/admin/requests/" + url.PathEscape(id) + "?done=" + url.QueryEscape(action) + "&changed=" + strconv.FormatBool(res.Changed)
	http.Redirect(w, r, target, http.StatusSeeOther)
}

type deadLetterData struct {
	Letters []bus.DeadLetter
	Err     string
	Moved   string
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request, s officer.Session) {
	d := deadLetterData{Moved: r.URL.Query().Get("moved")}
	dls, err := c.off.DeadLetterList(r.Context(), 200)
	if err != nil {
		d.Err = "The message broker could not be asked."
	}
	d.Letters = dls
	c.render(w, r, http.StatusOK, "deadletters", page{Title: "Dead letters", Nav: "dead-letters", Session: &s, Data: d})
}

func (c *Console) requeue(w http.ResponseWriter, r *http.Request, s officer.Session) {
	if r.PostFormValue("confirm") != "yes" {
		c.fail(w, r, s, fmt.Errorf("%w: tick the confirmation box to requeue", officer.ErrBadInput))
		return
	}
	moved, err := c.off.Requeue(r.Context(), s.Principal, r.PostFormValue("queue"), 1000, officer.Input{ReasonCode: r.PostFormValue("reason_code")})
	if err != nil && moved == 0 {
		c.fail(w, r, s, err)
		return
	}
	http.Redirect(w, r, "/admin/dead-letters?moved="+strconv.Itoa(moved), http.StatusSeeOther)
}
