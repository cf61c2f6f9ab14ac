package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/officer"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/strictjson"
)

// Officer is what the admin API needs from modules/officer.
type Officer interface {
	List(ctx context.Context, f requests.Filter) (requests.Page, error)
	Counts(ctx context.Context) (map[string]int, error)
	Detail(ctx context.Context, id string) (officer.Detail, error)
	Retry(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Cancel(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Deny(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Extend(ctx context.Context, p console.Principal, id string, in officer.Input) (officer.Result, error)
	Resend(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	ConfirmManually(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	NotApplicable(ctx context.Context, p console.Principal, id, participant string, in officer.Input) (officer.Result, error)
	DeadLetterList(ctx context.Context, limit int) ([]bus.DeadLetter, error)
	Requeue(ctx context.Context, p console.Principal, queue string, limit int, in officer.Input) (int, error)
}

// principalKey holds the authenticated operator.
const principalKey = "gdpr.principal"

// requireOperator checks the bearer token against the named operators
// (console.operators, and serve.admin_tokens as operators).
func (s *Server) requireOperator(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := singleAuthorization(c); err != nil {
			return err
		}
		if err := s.authBlocked(c); err != nil {
			return err
		}
		scheme, token, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		p, ok := s.opts.Operators.Match(strings.TrimSpace(token))
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			e := problem(http.StatusUnauthorized, "unauthorized", "Authorization", "a valid operator token is required")
			e.header = http.Header{echo.HeaderWWWAuthenticate: {`Bearer realm="gdpr-admin"`}}
			return s.authFailed(c, e)
		}
		c.Set(principalKey, p)
		c.Set(callerKey, p.Name)
		return next(c)
	}
}

func principal(c echo.Context) console.Principal {
	p, _ := c.Get(principalKey).(console.Principal)
	return p
}

// adminRoutes registers /v1/admin/* (docs/console.md, openapi.json).
func (s *Server) adminRoutes(e *echo.Echo) {
	auth := s.requireOperator
	s.route(e, http.MethodGet, "/v1/admin/requests", s.adminList, auth)
	s.route(e, http.MethodGet, "/v1/admin/requests/counts", s.adminCounts, auth)
	s.route(e, http.MethodGet, "/v1/admin/requests/:id", s.adminDetail, auth)
	s.route(e, http.MethodGet, "/v1/admin/requests/:id/timeline", s.adminTimeline, auth)
	for _, a := range []string{"retry", "cancel", "deny", "extend"} {
		s.route(e, http.MethodPost, "/v1/admin/requests/:id/"+a, s.adminAct(a), auth)
	}
	for _, a := range []string{"resend", "confirm", "not-applicable"} {
		s.route(e, http.MethodPost, "/v1/admin/requests/:id/participants/:participant/"+a, s.adminParticipant(a), auth)
	}
	s.route(e, http.MethodGet, "/v1/admin/dead-letters", s.adminDeadLetters, auth)
	s.route(e, http.MethodPost, "/v1/admin/dead-letters/requeue", s.adminRequeue, auth)
}

// ParseFilter reads the list filters from query parameters (the admin API
// and the web console share it). Errors name the parameter.
func ParseFilter(q func(string) string) (requests.Filter, error) {
	var f requests.Filter
	var err error
	if v := q("state"); v != "" {
		f.States = strings.Split(v, ",")
		for _, st := range f.States {
			if !slices.Contains(requests.States(), requests.State(st)) {
				return f, problem(http.StatusBadRequest, "invalid_request", "state", "unknown state %q", st)
			}
		}
	}
	f.Type = q("type")
	if f.Type != "" && f.Type != "access" && f.Type != "erasure" {
		return f, problem(http.StatusBadRequest, "invalid_request", "type", "must be access or erasure")
	}
	f.Regulation = q("regulation")
	if f.Regulation != "" && f.Regulation != "gdpr" && f.Regulation != "ccpa" && f.Regulation != "lgpd" {
		return f, problem(http.StatusBadRequest, "invalid_request", "regulation", "must be gdpr, ccpa or lgpd")
	}
	f.Client = q("client")
	if len(f.Client) > 64 {
		return f, problem(http.StatusBadRequest, "invalid_request", "client", "must be at most 64 characters")
	}
	times := map[string]*time.Time{"due_before": &f.DueBefore, "submitted_after": &f.SubmittedAfter, "submitted_before": &f.SubmittedBefore}
	for name, dst := range times {
		if v := q(name); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				return f, problem(http.StatusBadRequest, "invalid_request", name, "must be an RFC 3339 time")
			}
		}
	}
	bools := map[string]*bool{"overdue": &f.Overdue, "near_deadline": &f.NearDeadline, "participant_overdue": &f.ParticipantOverdue}
	for name, dst := range bools {
		if v := q(name); v != "" {
			if *dst, err = strconv.ParseBool(v); err != nil {
				return f, problem(http.StatusBadRequest, "invalid_request", name, "must be true or false")
			}
		}
	}
	f.Sort = q("sort")
	switch f.Sort {
	case "", requests.SortDeadline, requests.SortDeadlineDesc, requests.SortSubmittedAt, requests.SortSubmittedAtDesc:
	default:
		return f, problem(http.StatusBadRequest, "invalid_request", "sort", "must be deadline, -deadline, submitted_at or -submitted_at")
	}
	if v := q("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 500 {
			return f, problem(http.StatusBadRequest, "invalid_request", "limit", "must be between 1 and 500")
		}
	}
	f.Cursor = q("cursor")
	return f, nil
}

func (s *Server) adminList(c echo.Context) error {
	f, err := ParseFilter(c.QueryParam)
	if err != nil {
		return err
	}
	page, err := s.opts.Officer.List(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) adminCounts(c echo.Context) error {
	counts, err := s.opts.Officer.Counts(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"counts": counts})
}

func (s *Server) adminDetail(c echo.Context) error {
	id, err := s.requestID(c)
	if err != nil {
		return err
	}
	d, err := s.opts.Officer.Detail(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

// adminTimeline keeps the timeline route and answer of before the console.
func (s *Server) adminTimeline(c echo.Context) error {
	id, err := s.requestID(c)
	if err != nil {
		return err
	}
	d, err := s.opts.Officer.Detail(c.Request().Context(), id)
	if err != nil {
		return err
	}
	if len(d.Timeline) == 0 {
		return problem(http.StatusNotFound, "not_found", "id", "no audit events for this request")
	}
	return c.JSON(http.StatusOK, map[string]any{"request_id": id, "events": d.Timeline})
}

// actionBody is the JSON body of every action.
type actionBody struct {
	ReasonCode string     `json:"reason_code"`
	Reason     string     `json:"reason"`
	Until      *time.Time `json:"until"`
	Queue      string     `json:"queue"`
	Limit      int        `json:"limit"`
}

func (s *Server) actionBody(c echo.Context) (actionBody, error) {
	var b actionBody
	body, err := io.ReadAll(io.LimitReader(c.Request().Body, s.opts.MaxBodyBytes+1))
	if err != nil {
		return b, problem(http.StatusBadRequest, "invalid_request", "body", "could not be read")
	}
	if int64(len(body)) > s.opts.MaxBodyBytes {
		return b, s.tooLarge()
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return b, nil
	}
	var me *strictjson.MemberError
	if err := strictjson.Check(body, &b); errors.As(err, &me) {
		return b, problem(http.StatusBadRequest, "invalid_request", me.Path, "%s", me.Message)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, problem(http.StatusBadRequest, "invalid_request", "body", "must be a JSON object with reason_code, reason, until, queue or limit")
	}
	return b, nil
}

func (b actionBody) input() officer.Input {
	in := officer.Input{ReasonCode: b.ReasonCode, Reason: b.Reason}
	if b.Until != nil {
		in.Until = *b.Until
	}
	return in
}

func (s *Server) adminAct(action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := s.requestID(c)
		if err != nil {
			return err
		}
		b, err := s.actionBody(c)
		if err != nil {
			return err
		}
		ctx, p, in := c.Request().Context(), principal(c), b.input()
		var res officer.Result
		switch action {
		case "retry":
			res, err = s.opts.Officer.Retry(ctx, p, id, in)
		case "cancel":
			res, err = s.opts.Officer.Cancel(ctx, p, id, in)
		case "deny":
			res, err = s.opts.Officer.Deny(ctx, p, id, in)
		case "extend":
			res, err = s.opts.Officer.Extend(ctx, p, id, in)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, res)
	}
}

func (s *Server) adminParticipant(action string) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, err := s.requestID(c)
		if err != nil {
			return err
		}
		name := c.Param("participant")
		b, err := s.actionBody(c)
		if err != nil {
			return err
		}
		ctx, p, in := c.Request().Context(), principal(c), b.input()
		var res officer.Result
		switch action {
		case "resend":
			res, err = s.opts.Officer.Resend(ctx, p, id, name, in)
		case "confirm":
			res, err = s.opts.Officer.ConfirmManually(ctx, p, id, name, in)
		case "not-applicable":
			res, err = s.opts.Officer.NotApplicable(ctx, p, id, name, in)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, res)
	}
}

func (s *Server) adminDeadLetters(c echo.Context) error {
	limit := 100
	if v := c.QueryParam("limit"); v != "" {
		var err error
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return problem(http.StatusBadRequest, "invalid_request", "limit", "must be between 1 and 1000")
		}
	}
	dls, err := s.opts.Officer.DeadLetterList(c.Request().Context(), limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"dead_letters": dls})
}

func (s *Server) adminRequeue(c echo.Context) error {
	b, err := s.actionBody(c)
	if err != nil {
		return err
	}
	if b.Limit == 0 {
		b.Limit = 1000
	}
	moved, err := s.opts.Officer.Requeue(c.Request().Context(), principal(c), b.Queue, b.Limit, b.input())
	if err != nil && moved == 0 {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"requeued": moved})
}

// officerProblem maps the officer's errors to problems; nil when err is
// not one of them.
func officerProblem(err error) *apiError {
	switch {
	case errors.Is(err, officer.ErrNotFound):
		return problem(http.StatusNotFound, "not_found", "id", "%s", err.Error())
	case errors.Is(err, officer.ErrConflict):
		return problem(http.StatusConflict, "state_conflict", "", "%s", err.Error())
	case errors.Is(err, officer.ErrForbidden):
		return problem(http.StatusForbidden, "forbidden", "Authorization", "%s", err.Error())
	case errors.Is(err, officer.ErrBadInput):
		return problem(http.StatusBadRequest, "invalid_request", "body", "%s", err.Error())
	case errors.Is(err, officer.ErrUnavailable):
		return problem(http.StatusServiceUnavailable, "unavailable", "", "%s", err.Error())
	}
	return nil
}
