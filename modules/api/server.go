// Package api is the public HTTP API of `gdpr serve` on echo: it decodes
// requests, calls modules/intake and maps its results and errors to JSON
// responses. Domain rules live in intake, not here.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gdpr-oss/gdpr/modules/console"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/lifecycle"
	"github.com/gdpr-oss/gdpr/modules/ratelimit"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// OpenAPI is the API's OpenAPI 3 document, served at /v1/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte

// Intake is what the handlers need from modules/intake.
type Intake interface {
	Submit(ctx context.Context, caller, idemKey string, sub intake.Submission) (intake.Accepted, error)
	// StatusFor answers ErrNotFound for another client's request.
	StatusFor(ctx context.Context, c intake.Client, id string) (intake.Status, error)
	// CheckOwner answers ErrNotFound unless the request is the client's.
	CheckOwner(ctx context.Context, c intake.Client, id string) error
	OpenReport(ctx context.Context, requestID, token string) (io.ReadCloser, int64, error)
}

// AdminRoute mounts a plain net/http handler under /v1/admin/<Path> (and
// everything below it) behind the admin token check, for GET and HEAD: these
// handlers only read. The handler sees the full original request path; a
// plain-text 404 it answers (a net/http ServeMux's) becomes the API's JSON.
type AdminRoute struct {
	// Path is relative to /v1/admin/, e.g. "timeline".
	Path    string
	Handler http.Handler
}

// Options configure a Server. Intake and Logger are required.
type Options struct {
	// Addr is the listen address; port 0 picks a free one (see Addr).
	Addr string
	// Listener, when set, is served instead of listening on Addr (a socket
	// handed over by a supervisor, or a test's).
	Listener net.Listener
	Intake   Intake
	// APITokens authenticate the company's apps (API clients) on
	// /v1/requests; each client reads only its own requests.
	APITokens intake.Tokens
	// AdminTokens authenticate operators on /v1/admin/.
	AdminTokens intake.Tokens
	// MaxBodyBytes bounds a request body (413 beyond it).
	MaxBodyBytes int64
	// RetryAfter is the hint sent with 503 answers.
	RetryAfter time.Duration
	// Limits bound connections and their timeouts; zero timeouts are
	// health.DefaultLimits'.
	Limits health.Limits
	Admin  []AdminRoute
	// Officer serves /v1/admin/requests and /v1/admin/dead-letters
	// (modules/officer); Operators authenticate every /v1/admin call
	// when set (console.operators and serve.admin_tokens).
	Officer   Officer
	Operators *console.Operators
	// Console, when set, is the web console, served under /admin/.
	Console http.Handler
	// RateLimiter, when set, enforces RateLimits (nil: no limits), counting
	// client addresses as Proxies say.
	RateLimiter *ratelimit.Limiter
	RateLimits  RateLimits
	Proxies     ratelimit.Proxies
	// Privacy, when set, serves the self-service page at /privacy.
	Privacy    *selfservice.Service
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Server is the public HTTP server; it is an app Component.
type Server struct {
	opts     Options
	echo     *echo.Echo
	duration *prometheus.HistogramVec

	srv          *http.Server
	ln           net.Listener
	writeTimeout time.Duration
	life         lifecycle.Runner
}

// New builds the server and registers its metrics.
func New(opts Options) (*Server, error) {
	if opts.Intake == nil || opts.Logger == nil {
		return nil, errors.New("api: Intake and Logger are required")
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 64 << 10
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 5 * time.Second
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	s := &Server{
		opts: opts,
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gdpr_http_request_duration_seconds",
			Help:    "Public API request duration by route pattern, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method", "status"}),
	}
	if err := opts.Registerer.Register(s.duration); err != nil {
		return nil, fmt.Errorf("registering api metrics: %w", err)
	}
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.observe)
	s.route(e, http.MethodPost, "/v1/requests", s.submit, s.requireClient(opts.APITokens))
	s.route(e, http.MethodGet, "/v1/requests/:id", s.status, s.requireClient(opts.APITokens))
	s.route(e, http.MethodGet, "/v1/requests/:id/report", s.report)
	s.route(e, http.MethodGet, "/v1/openapi.json", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/json", OpenAPI)
	})
	if opts.Privacy != nil {
		s.routePrivacy(e, opts.Privacy)
	}
	adminAuth := s.requireToken(opts.AdminTokens)
	if opts.Operators != nil {
		adminAuth = s.requireOperator
	}
	for _, r := range opts.Admin {
		p := "/v1/admin/" + strings.Trim(r.Path, "/")
		// Read-only, so GET and HEAD: any other method is the API's JSON
		// 405 (a PUT on an action route once fell through to the handler's
		// own mux and got a plain-text 404).
		h := echo.WrapHandler(plainNotFoundAsProblem(r.Handler))
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			s.route(e, m, p, h, adminAuth)
			s.route(e, m, p+"/*", h, adminAuth)
		}
	}
	if opts.Officer != nil && opts.Operators != nil {
		s.adminRoutes(e)
	}
	if opts.Console != nil {
		h := echo.WrapHandler(opts.Console)
		s.routeAny(e, "/admin", h)
		s.routeAny(e, "/admin/*", h, s.consoleSignInLimit)
	}
	s.echo = e
	return s, nil
}

// routeKey is where a matched route leaves its pattern for the metrics
// middleware; unmatched paths never become label values.
const routeKey = "gdpr.route"

func (s *Server) route(e *echo.Echo, method, pattern string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
	label := openAPIPath(pattern)
	e.Add(method, pattern, func(c echo.Context) error {
		c.Set(routeKey, label)
		return h(c)
	}, mw...)
}

func (s *Server) routeAny(e *echo.Echo, pattern string, h echo.HandlerFunc, mw ...echo.MiddlewareFunc) {
	label := openAPIPath(pattern)
	e.Any(pattern, func(c echo.Context) error {
		c.Set(routeKey, label)
		return h(c)
	}, mw...)
}

// openAPIPath writes echo's ":id" as "{id}", the form the OpenAPI document
// and the metrics use.
func openAPIPath(pattern string) string {
	parts := strings.Split(pattern, "/")
	for i, p := range parts {
		if name, ok := strings.CutPrefix(p, ":"); ok {
			parts[i] = "{" + name + "}"
		}
	}
	return strings.Join(parts, "/")
}

// Handler is the server's HTTP handler, for tests that serve it themselves.
func (s *Server) Handler() http.Handler { return s.echo }

// Name identifies the component in logs.
func (s *Server) Name() string { return "api server" }

// Addr is the bound address once started.
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.opts.Addr
	}
	return s.ln.Addr().String()
}

// Start binds the port and serves in the background. Should serving fail
// later, the error is reported through Failed.
func (s *Server) Start(ctx context.Context) error {
	ln := s.opts.Listener
	if ln == nil {
		var lc net.ListenConfig
		var err error
		if ln, err = lc.Listen(ctx, "tcp", s.opts.Addr); err != nil {
			return fmt.Errorf("api server listening on %s: %w", s.opts.Addr, err)
		}
	}
	if _, _, err := s.life.Begin(ctx); err != nil {
		return fmt.Errorf("starting api server: %w", err)
	}
	s.ln = ln
	tracer := trace.Tracer(ctx)
	s.srv = s.opts.Limits.Server(s.echo)
	s.srv.ErrorLog = slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn)
	// Requests are traced with the role's tracer, if it has one.
	s.srv.BaseContext = func(net.Listener) context.Context { return trace.WithTracer(context.Background(), tracer) }
	// Report downloads extend their write deadline while the client reads.
	s.writeTimeout = s.srv.WriteTimeout
	served := s.opts.Limits.Listener(ln)
	s.life.Go(func() {
		if err := s.srv.Serve(served); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.life.Fail(fmt.Errorf("api server on %s: %w", ln.Addr(), err))
		}
	})
	s.opts.Logger.InfoContext(ctx, "api server listening", "addr", ln.Addr().String())
	return nil
}

// Stop stops accepting connections and waits for in-flight requests (each
// submission ends within the publisher's confirm timeout) until ctx ends,
// then closes what is left; it returns once the server's goroutine has.
func (s *Server) Stop(ctx context.Context) error {
	return s.life.Stop(ctx, func(ctx context.Context) error {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		return err
	})
}

// Failed receives the error that ended serving after Start.
func (s *Server) Failed() <-chan error { return s.life.Failed() }

// Running is how many of the server's goroutines have not returned yet.
func (s *Server) Running() int { return s.life.Running() }

// plainNotFoundAsProblem answers the API's JSON not_found where h answers a
// plain-text 404, as a net/http ServeMux does for a path it has no pattern
// for; everything else h writes passes through.
func plainNotFoundAsProblem(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&notFoundWriter{ResponseWriter: w}, r)
	})
}

type notFoundWriter struct {
	http.ResponseWriter
	swallow bool
}

func (w *notFoundWriter) WriteHeader(code int) {
	if code == http.StatusNotFound && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.swallow = true
		h := w.Header()
		h.Set("Content-Type", "application/json")
		w.ResponseWriter.WriteHeader(code)
		_ = json.NewEncoder(w.ResponseWriter).Encode(Problem{Error: "not_found", Message: "no such endpoint"})
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *notFoundWriter) Write(b []byte) (int, error) {
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}
