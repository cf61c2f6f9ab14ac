package api

import (
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Problem is the JSON body of every error answer.
type Problem struct {
	// Error is a stable machine-readable code.
	Error string `json:"error"`
	// Field names the input at fault: a dotted JSON path, "body", "id",
	// "token" or a header name.
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

// apiError is a problem with its HTTP status, returned by handlers.
type apiError struct {
	status  int
	problem Problem
	header  http.Header
}

func (e *apiError) Error() string { return e.problem.Message }

func problem(status int, code, field, format string, args ...any) *apiError {
	return &apiError{status: status, problem: Problem{Error: code, Field: field, Message: fmt.Sprintf(format, args...)}}
}

func (s *Server) unavailable() *apiError {
	e := problem(http.StatusServiceUnavailable, "unavailable", "", "the service cannot accept this right now; retry later")
	e.header = http.Header{"Retry-After": {strconv.Itoa(int(max(1, s.opts.RetryAfter.Round(time.Second)/time.Second)))}}
	return e
}

// submittedResponse is the 202 body.
type submittedResponse struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func (s *Server) submit(c echo.Context) error {
	req := c.Request()
	mediaType, _, err := mime.ParseMediaType(req.Header.Get(echo.HeaderContentType))
	if err != nil || mediaType != echo.MIMEApplicationJSON {
		return problem(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type", "must be application/json")
	}
	client, _ := c.Get(clientKey).(intake.Client)
	// Counted before the body is read: a refused submission costs nothing.
	if d := s.opts.RateLimiter.Allow(req.Context(), ScopeIntake, client.Name, s.opts.RateLimits.IntakePerClient); !d.Allowed {
		return tooMany(d)
	}
	if req.ContentLength > s.opts.MaxBodyBytes {
		return s.tooLarge()
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, s.opts.MaxBodyBytes+1))
	if err != nil {
		return problem(http.StatusBadRequest, "invalid_request", "body", "could not be read")
	}
	if int64(len(body)) > s.opts.MaxBodyBytes {
		return s.tooLarge()
	}
	sub, err := intake.Parse(body)
	if err != nil {
		return err
	}
	acc, err := s.opts.Intake.Submit(req.Context(), client.Name, req.Header.Get("Idempotency-Key"), sub)
	if err != nil {
		return err
	}
	c.SetRequest(req.WithContext(trace.WithRequestID(req.Context(), acc.ID)))
	c.Response().Header().Set(echo.HeaderLocation, "/v1/requests/"+acc.ID)
	if err := c.JSON(http.StatusAccepted, submittedResponse{ID: acc.ID, State: intake.StateSubmitted}); err != nil {
		return err
	}
	// The caller has its answer; the idempotency bookkeeping follows.
	c.Response().Flush()
	acc.Settle()
	return nil
}

func (s *Server) tooLarge() *apiError {
	return problem(http.StatusRequestEntityTooLarge, "body_too_large", "body", "must be at most %d bytes", s.opts.MaxBodyBytes)
}

// statusResponse is GET /v1/requests/{id}. It carries no personal data.
type statusResponse struct {
	ID             string               `json:"id"`
	Type           string               `json:"type"`
	State          string               `json:"state"`
	SubmittedAt    time.Time            `json:"submitted_at"`
	ReceivedAt     *time.Time           `json:"received_at,omitempty"`
	DueAt          time.Time            `json:"due_at"`
	CompletedAt    *time.Time           `json:"completed_at,omitempty"`
	UpdatedAt      *time.Time           `json:"updated_at,omitempty"`
	Attempts       int                  `json:"attempts"`
	NextAttemptAt  *time.Time           `json:"next_attempt_at,omitempty"`
	LastErrorClass string               `json:"last_error_class,omitempty"`
	Participants   []intake.Participant `json:"participants,omitempty"`
}

func (s *Server) status(c echo.Context) error {
	id, err := s.requestID(c)
	if err != nil {
		return err
	}
	client, _ := c.Get(clientKey).(intake.Client)
	st, err := s.opts.Intake.StatusFor(c.Request().Context(), client, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, statusResponse{
		ID: st.ID, Type: st.Type, State: st.State,
		SubmittedAt: st.SubmittedAt, ReceivedAt: st.ReceivedAt, DueAt: st.DueAt,
		CompletedAt: st.CompletedAt, UpdatedAt: st.UpdatedAt,
		Attempts: st.Attempts, NextAttemptAt: st.NextAttemptAt, LastErrorClass: st.LastErrorClass,
		Participants: st.Participants,
	})
}

func (s *Server) report(c echo.Context) error {
	ctx := c.Request().Context()
	// Every attempt counts, good link or bad: before anything is checked.
	if d := s.opts.RateLimiter.Allow(ctx, ScopeDownload, s.clientAddr(c), s.opts.RateLimits.DownloadsPerAddress); !d.Allowed {
		return tooMany(d)
	}
	id, err := s.requestID(c)
	if err != nil {
		return err
	}
	ctx = c.Request().Context()
	// A download link is the subject's capability and needs no bearer
	// token; an API client that sends its own may fetch only its own
	// requests' reports (another client's is 404, as for its status).
	if c.Request().Header.Get(echo.HeaderAuthorization) != "" {
		client, err := s.authenticate(c, s.opts.APITokens)
		if err != nil {
			return err
		}
		if err := s.opts.Intake.CheckOwner(ctx, client, id); err != nil {
			return err
		}
	}
	rc, size, err := s.opts.Intake.OpenReport(ctx, id, c.QueryParam("token"))
	if err != nil {
		return err
	}
	defer rc.Close()
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/zip")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="gdpr-report-`+id+`.zip"`)
	h.Set("Cache-Control", "no-store")
	// The link's token must not leak to other sites through Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	if size >= 0 {
		h.Set(echo.HeaderContentLength, strconv.FormatInt(size, 10))
	}
	c.Response().WriteHeader(http.StatusOK)
	n, err := io.Copy(deadlineWriter{w: c.Response(), rc: http.NewResponseController(c.Response()), timeout: s.writeTimeout}, rc)
	if err != nil {
		// Headers are gone; all that is left is to cut the connection short.
		s.opts.Logger.WarnContext(ctx, "report download interrupted", "bytes", n, "error", err)
		return nil
	}
	s.opts.Logger.InfoContext(ctx, "report downloaded", "bytes", n)
	return nil
}

// deadlineWriter moves the connection's write deadline on before every
// write: a report takes as long as the client needs to read it, but a
// client that stops reading loses the connection after the write timeout.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	if d.timeout > 0 {
		if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return 0, fmt.Errorf("extending the write deadline: %w", err)
		}
	}
	n, err := d.w.Write(p)
	if err != nil {
		return n, fmt.Errorf("writing the report: %w", err)
	}
	return n, nil
}

// requestID validates the :id path parameter and puts it into the context
// so every later log line of this HTTP request names it.
func (s *Server) requestID(c echo.Context) (string, error) {
	id, err := intake.ParseID(c.Param("id"))
	if err != nil {
		return "", err
	}
	c.SetRequest(c.Request().WithContext(trace.WithRequestID(c.Request().Context(), id)))
	return id, nil
}

// callerKey holds the authenticated caller's name; clientKey the
// authenticated API client (intake.Client).
const (
	callerKey = "gdpr.caller"
	clientKey = "gdpr.client"
)

// requireClient checks "Authorization: Bearer <token>" against the API
// clients' tokens and leaves the client for the handler.
func (s *Server) requireClient(tokens intake.Tokens) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			client, err := s.authenticate(c, tokens)
			if err != nil {
				return err
			}
			c.Set(clientKey, client)
			c.Set(callerKey, client.Name)
			return next(c)
		}
	}
}

// singleAuthorization refuses a request with more than one Authorization
// header: net/http reads the first and a proxy in front may read the last,
// so the two would disagree on who is calling.
func singleAuthorization(c echo.Context) error {
	if len(c.Request().Header.Values(echo.HeaderAuthorization)) > 1 {
		return problem(http.StatusBadRequest, "invalid_request", "Authorization", "must be sent once")
	}
	return nil
}

// authenticate returns the API client of the request's bearer token, or a 401.
func (s *Server) authenticate(c echo.Context, tokens intake.Tokens) (intake.Client, error) {
	if err := singleAuthorization(c); err != nil {
		return intake.Client{}, err
	}
	if err := s.authBlocked(c); err != nil {
		return intake.Client{}, err
	}
	scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
	client, ok := tokens.Client(strings.TrimSpace(token))
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		e := problem(http.StatusUnauthorized, "unauthorized", "Authorization", "a valid bearer token is required")
		e.header = http.Header{echo.HeaderWWWAuthenticate: {`Bearer realm="gdpr"`}}
		return intake.Client{}, s.authFailed(c, e)
	}
	return client, nil
}

// requireToken checks "Authorization: Bearer <token>" against tokens.
func (s *Server) requireToken(tokens intake.Tokens) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := singleAuthorization(c); err != nil {
				return err
			}
			if err := s.authBlocked(c); err != nil {
				return err
			}
			scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
			caller, ok := tokens.Match(strings.TrimSpace(token))
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				e := problem(http.StatusUnauthorized, "unauthorized", "Authorization", "a valid bearer token is required")
				e.header = http.Header{echo.HeaderWWWAuthenticate: {`Bearer realm="gdpr"`}}
				return s.authFailed(c, e)
			}
			c.Set(callerKey, caller)
			return next(c)
		}
	}
}

// handleError maps every error a handler (or echo) returns to a JSON problem.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ctx := c.Request().Context()
	var ae *apiError
	var fe *intake.FieldError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case officerProblem(err) != nil:
		ae = officerProblem(err)
	case errors.As(err, &fe):
		ae = problem(http.StatusBadRequest, "invalid_request", fe.Field, "%s", fe.Message)
	case errors.Is(err, intake.ErrConflict):
		ae = problem(http.StatusConflict, "idempotency_conflict", "Idempotency-Key", "was already used with a different request body")
	case errors.Is(err, intake.ErrGone):
		s.gone(c, err)
		return
	case errors.Is(err, intake.ErrForbidden):
		ae = problem(http.StatusForbidden, "forbidden", "token", "the download link is invalid or expired")
	case errors.Is(err, intake.ErrNotFound):
		ae = problem(http.StatusNotFound, "not_found", "id", "no such request")
		if strings.HasSuffix(c.Path(), "/report") {
			ae.problem.Message = "no report for this request"
		}
	case errors.Is(err, intake.ErrUnavailable):
		ae = s.unavailable()
	case errors.As(err, &he):
		ae = echoProblem(he)
	default:
		s.opts.Logger.ErrorContext(ctx, "request failed", "error", err)
		ae = problem(http.StatusInternalServerError, "internal", "", "internal error")
	}
	for k, v := range ae.header {
		c.Response().Header()[k] = v
	}
	unread := c.Request().ContentLength != 0
	if unread {
		// The body may be unread (401, 413, 415, unknown route): net/http
		// would read up to 256 KiB of it, before sending the answer and
		// again when the handler returns, for as long as the client cares
		// to trickle it. Instead the answer goes out at once and the
		// connection is closed after it (the read deadline set below ends
		// net/http's draining).
		c.Response().Header().Set(echo.HeaderConnection, "close")
		defer func() {
			_ = http.NewResponseController(c.Response()).SetReadDeadline(time.Now())
		}()
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(ae.status)
		return
	}
	if werr := c.JSON(ae.status, ae.problem); werr != nil {
		s.opts.Logger.WarnContext(ctx, "writing error response", "error", werr)
	}
}

func echoProblem(he *echo.HTTPError) *apiError {
	switch he.Code {
	case http.StatusNotFound:
		return problem(he.Code, "not_found", "", "no such endpoint")
	case http.StatusMethodNotAllowed:
		return problem(he.Code, "method_not_allowed", "", "method not allowed on this endpoint")
	}
	return problem(he.Code, strings.ReplaceAll(strings.ToLower(http.StatusText(he.Code)), " ", "_"), "", "%s", http.StatusText(he.Code))
}

// observe gives every HTTP request a trace (continuing an incoming W3C
// traceparent), records its duration by route pattern, and logs one line
// with the request and trace ids.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		begin := time.Now()
		req := c.Request()
		ctx, span := startSpan(req)
		c.SetRequest(req.WithContext(ctx))
		c.Response().Header().Set("traceparent", trace.Traceparent(ctx))
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("handler panicked: %v", r)
				}
			}()
			return next(c)
		}()
		if err != nil {
			c.Error(err)
		}
		route, _ := c.Get(routeKey).(string)
		if route == "" {
			route = "unmatched"
		}
		status := c.Response().Status
		elapsed := time.Since(begin)
		endSpan(c.Request().Context(), span, req.Method, route, status)
		s.duration.WithLabelValues(route, methodLabel(req.Method), strconv.Itoa(status)).Observe(elapsed.Seconds())
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelWarn
		}
		s.opts.Logger.Log(c.Request().Context(), level, "http request",
			"method", req.Method, "route", route, "status", status, "duration", elapsed, "bytes", c.Response().Size)
		return nil
	}
}

// methodLabel keeps the method label to a fixed set.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// goneMessage says why a report is gone, by intake.GoneError.Reason.
func goneMessage(reason string) (code, msg string) {
	if reason == intake.GoneSubjectErasure {
		return "report_erased", "this report was deleted at the data subject's own request (their erasure request); it cannot be downloaded any more"
	}
	return "report_expired", "this report expired and was deleted; submit a new access request for a fresh copy"
}

// gone answers 410 Gone for a deleted report: JSON for API clients, a
// short page for a browser (the link came in an email, so a person is
// likely to open it).
func (s *Server) gone(c echo.Context, err error) {
	reason := intake.GoneRetention
	var ge *intake.GoneError
	if errors.As(err, &ge) {
		reason = ge.Reason
	}
	code, msg := goneMessage(reason)
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(http.StatusGone)
		return
	}
	var werr error
	if prefersHTML(c.Request().Header.Get(echo.HeaderAccept)) && s.opts.Privacy != nil {
		// The same page as the self-service page's expired links: one look
		// for "this link no longer works", with the way to ask again.
		pg := &privacyPages{s: s, p: s.opts.Privacy}
		_ = pg.render(c, http.StatusGone, "gone", pg.locale(c), selfservice.Page{})
		return
	}
	if prefersHTML(c.Request().Header.Get(echo.HeaderAccept)) {
		title := "Report deleted"
		if code == "report_expired" {
			title = "Report expired"
		}
		werr = c.HTML(http.StatusGone, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>"+title+
			"</title></head>\n<body><h1>"+title+"</h1>\n<p>"+html.EscapeString(msg)+"</p></body></html>\n")
	} else {
		werr = c.JSON(http.StatusGone, Problem{Error: code, Field: "id", Message: msg})
	}
	if werr != nil {
		s.opts.Logger.WarnContext(c.Request().Context(), "writing error response", "error", werr)
	}
}

// prefersHTML reports whether an Accept header ranks text/html above
// application/json (a browser's does; an API client's does not).
func prefersHTML(accept string) bool {
	q := func(want string) float64 {
		best := -1.0
		for _, part := range strings.Split(accept, ",") {
			mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			mt = strings.ToLower(strings.TrimSpace(mt))
			if mt != want && mt != strings.SplitN(want, "/", 2)[0]+"/*" && mt != "*/*" {
				continue
			}
			v := 1.0
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.TrimSpace(k) == "q" {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						v = f
					}
				}
			}
			// An exact match counts more than a wildcard.
			if mt == want {
				v += 0.001
			}
			best = max(best, v)
		}
		return best
	}
	return q("text/html") > q("application/json")
}
