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
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

	srv      *http.Server
	ln       net.Listener
	draining chan struct{}
	started  atomic.Bool
	once     sync.Once
	wg       sync.WaitGroup
}

// NewServer returns an admin server for addr with the named readiness checks.
func NewServer(addr string, checks map[string]Checker, gatherer prometheus.Gatherer, logger *slog.Logger) *Server {
	s := &Server{addr: addr, checks: checks, gatherer: gatherer, logger: logger, mux: http.NewServeMux(), draining: make(chan struct{})}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return s
}

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

// Start binds the port and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("admin server listening on %s: %w", s.addr, err)
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("admin server stopped", "error", err)
		}
	}()
	s.logger.InfoContext(ctx, "admin server listening", "addr", ln.Addr().String())
	return nil
}

// MarkReady makes /readyz check dependencies; before it, /readyz answers
// 503 "starting" so no work is routed to a half-started process.
func (s *Server) MarkReady() { s.started.Store(true) }

// Drain makes /readyz fail so load balancers stop sending work.
func (s *Server) Drain() { s.once.Do(func() { close(s.draining) }) }

// Stop shuts the server down.
func (s *Server) Stop(ctx context.Context) error {
	s.Drain()
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	return err
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
