package app

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/modules/db"
)

// demoCommand is `gdpr demo company|helpdesk`: the pieces of the demo
// company that `make run` (deploy/demo.sh) starts beside gdpr. Hidden from
// --help: nothing here belongs in a real install.
func (c *cli) demoCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "demo",
		Short:  "Demo company for `make run` (deploy/demo.sh); not for production",
		Hidden: true,
	}
	cmd.AddCommand(c.demoCompanyCommand(), c.demoHelpdeskCommand())
	return cmd
}

// demoCompanyCommand creates the demo company's database when missing and
// (re)loads its fixtures, so every demo starts with every sample customer.
func (c *cli) demoCompanyCommand() *cobra.Command {
	var dsn, fixtures string
	cmd := &cobra.Command{
		Use:   "company",
		Short: "Create the demo company database and load its sample customers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" || fixtures == "" {
				return &exitError{code: 2, err: errors.New("demo company: --dsn and --fixtures are required")}
			}
			script, err := os.ReadFile(fixtures)
			if err != nil {
				return fmt.Errorf("reading demo fixtures: %w", err)
			}
			ctx := cmd.Context()
			if err := db.EnsureDatabase(ctx, dsn); err != nil {
				return err
			}
			sdb, err := sql.Open("pgx", dsn)
			if err != nil {
				return fmt.Errorf("opening demo company database: %w", err)
			}
			defer sdb.Close()
			// Without arguments the script goes out as one simple-protocol
			// query, so it may hold many statements; it runs as one transaction.
			if _, err := sdb.ExecContext(ctx, string(script)); err != nil {
				return fmt.Errorf("loading demo fixtures %s: %w", fixtures, err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "dsn", "", "PostgreSQL URL of the demo company database (created when missing)")
	cmd.Flags().StringVar(&fixtures, "fixtures", "testdata/demo/company.sql", "SQL file that (re)creates the demo data")
	return cmd
}

// demoHelpdeskCommand runs the demo company's helpdesk: a service that
// keeps support tickets in PostgreSQL and takes part in data subject
// requests over HTTP only, the way a third-party API would.
//
//	GET    /customers/{id}/tickets  {"tickets": [...]}: an http report source
//	DELETE /customers/{id}/tickets  204 erased, 404 nothing held: an http participant
func (c *cli) demoHelpdeskCommand() *cobra.Command {
	var addr, dsn, token string
	cmd := &cobra.Command{
		Use:   "helpdesk",
		Short: "Serve the demo helpdesk's tickets as an HTTP report source and erasure participant",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg.Log, c.stdout).With("role", "demo-helpdesk")
			ctx, _, stop := signalContext(cmd.Context())
			defer stop()
			sdb, err := sql.Open("pgx", dsn)
			if err != nil {
				return fmt.Errorf("opening helpdesk database: %w", err)
			}
			defer sdb.Close()
			h := helpdesk{db: sdb, token: "Bearer " + token}
			mux := http.NewServeMux()
			mux.HandleFunc("GET /customers/{id}/tickets", h.tickets)
			mux.HandleFunc("DELETE /customers/{id}/tickets", h.erase)
			ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
			if err != nil {
				return fmt.Errorf("helpdesk: %w", err)
			}
			srv := &http.Server{Handler: h.authorized(mux), ReadHeaderTimeout: 5 * time.Second}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			logger.InfoContext(ctx, "demo helpdesk listening", "addr", ln.Addr().String())
			select {
			case err := <-served:
				return fmt.Errorf("helpdesk: %w", err)
			case <-ctx.Done():
			}
			shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(shutdownCtx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8081", "listen address")
	f.StringVar(&dsn, "dsn", "postgres://root@127.0.0.1:5432/gdpr_demo_company?sslmode=disable", "PostgreSQL URL of the demo company database")
	f.StringVar(&token, "token", "demo-helpdesk-token", "bearer token gdpr must send")
	return cmd
}

type helpdesk struct {
	db    *sql.DB
	token string
}

func (h helpdesk) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(h.token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ticket is one support ticket as the helpdesk's API returns it.
type ticket struct {
	ID       int       `json:"id"`
	Subject  string    `json:"subject"`
	Body     string    `json:"body"`
	OpenedAt time.Time `json:"opened_at"`
}

func (h helpdesk) tickets(w http.ResponseWriter, r *http.Request) {
	rows, err := h.db.QueryContext(r.Context(),
		`SELECT id, subject, body, opened_at FROM helpdesk.tickets WHERE customer_id = $1 ORDER BY id`, r.PathValue("id"))
	if err != nil {
		http.Error(w, "database error", http.StatusServiceUnavailable)
		return
	}
	defer rows.Close()
	out := struct {
		Tickets []ticket `json:"tickets"`
	}{Tickets: []ticket{}}
	for rows.Next() {
		var t ticket
		if err := rows.Scan(&t.ID, &t.Subject, &t.Body, &t.OpenedAt); err != nil {
			http.Error(w, "database error", http.StatusServiceUnavailable)
			return
		}
		out.Tickets = append(out.Tickets, t)
	}
	if rows.Err() != nil {
		http.Error(w, "database error", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (h helpdesk) erase(w http.ResponseWriter, r *http.Request) {
	res, err := h.db.ExecContext(r.Context(), `DELETE FROM helpdesk.tickets WHERE customer_id = $1`, r.PathValue("id"))
	if err != nil {
		// 503 is transient to gdpr: it calls again later.
		http.Error(w, "database error", http.StatusServiceUnavailable)
		return
	}
	if n, _ := res.RowsAffected(); n == 0 {
		http.Error(w, "no tickets", http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
