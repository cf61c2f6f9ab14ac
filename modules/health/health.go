// Package health serves a role's admin endpoints: /healthz (the process is
// alive), /readyz (its dependencies answer) and /metrics.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gdpr-oss/gdpr/modules/lifecycle"
)

// Checker is a dependency that can say whether it is usable.
type Checker interface {
	Check(ctx context.Context) error
}

// CheckFunc adapts a function to Checker.
type CheckFunc func(ctx context.Context) error

// Check implements Checker.
func (f CheckFunc) Check(ctx context.Context) error { return f(ctx) }

// Server is the admin HTTP server of one process.
type Server struct {
	addr     string
	checks   map[string]Checker
	gatherer prometheus.Gatherer
	logger   *slog.Logger
	mux      *http.ServeMux
	limits   Limits

	srv      *http.Server
	ln       net.Listener
	draining chan struct{}
	started  atomic.Bool
	once     sync.Once
	life     lifecycle.Runner
}

// NewServer returns an admin server for addr with the named readiness checks.
func NewServer(addr string, checks map[string]Checker, gatherer prometheus.Gatherer, logger *slog.Logger) *Server {
	s := &Server{addr: addr, checks: checks, gatherer: gatherer, logger: logger, mux: http.NewServeMux(), draining: make(chan struct{}), limits: DefaultLimits()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return s
}

// ServeProfiles adds Go's runtime profiles under /debug/pprof/ (index,
// profile, trace, symbol and the named profiles); it must be called before
// Start. /debug/pprof/cmdline is left out: a command line can carry a path
// or a flag an operator did not mean to publish. A CPU profile or trace
// longer than the server's WriteTimeout is refused by net/http/pprof.
func (s *Server) ServeProfiles() {
	s.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	s.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	s.mux.HandleFunc("GET /debug/pprof/cmdline", http.NotFound)
}

// SetLimits replaces DefaultLimits; it must be called before Start.
func (s *Server) SetLimits(l Limits) { s.limits = l }

// Handle adds a route, e.g. an admin API.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Name identifies the component in logs.
func (s *Server) Name() string { return "admin server" }

// Addr is the bound address, useful when configured with port 0.
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.addr
	}
	return s.ln.Addr().String()
}

// Start binds the port and serves in the background. Should serving fail
// later, the error is reported through Failed.
func (s *Server) Start(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin server listening on %s: %w", s.addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Start on a listener the caller opened (a socket handed over by
// a supervisor, or a test's).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if _, _, err := s.life.Begin(ctx); err != nil {
		return fmt.Errorf("starting admin server: %w", err)
	}
	s.ln = ln
	s.srv = s.limits.Server(s.mux)
	s.srv.ErrorLog = slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn)
	served := s.limits.Listener(ln)
	s.life.Go(func() {
		if err := s.srv.Serve(served); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.life.Fail(fmt.Errorf("admin server on %s: %w", ln.Addr(), err))
		}
	})
	s.logger.InfoContext(ctx, "admin server listening", "addr", ln.Addr().String())
	return nil
}

// Failed receives the error that ended serving after Start.
func (s *Server) Failed() <-chan error { return s.life.Failed() }

// Running is how many of the server's goroutines have not returned yet.
func (s *Server) Running() int { return s.life.Running() }

// MarkReady makes /readyz check dependencies; before it, /readyz answers
// 503 "starting" so no work is routed to a half-started process.
func (s *Server) MarkReady() { s.started.Store(true) }

// Drain makes /readyz fail so load balancers stop sending work.
func (s *Server) Drain() { s.once.Do(func() { close(s.draining) }) }

// Stop shuts the server down and returns once its goroutine has.
func (s *Server) Stop(ctx context.Context) error {
	s.Drain()
	return s.life.Stop(ctx, func(ctx context.Context) error {
		err := s.srv.Shutdown(ctx)
		if err != nil {
			_ = s.srv.Close()
		}
		return err
	})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.draining:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	default:
	}
	if !s.started.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	results := map[string]string{}
	status := http.StatusOK
	for name, c := range s.checks {
		if err := c.Check(ctx); err != nil {
			results[name] = err.Error()
			status = http.StatusServiceUnavailable
			continue
		}
		results[name] = "ok"
	}
	writeJSON(w, status, results)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
