package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/participant"
)

// participantCommands is `gdpr example-participant`.
func (c *cli) participantCommands() []*cobra.Command {
	var name, dsn, table, column, by string
	var concurrency int
	cmd := &cobra.Command{
		Use:   "example-participant",
		Short: "Run an example erasure participant that deletes a subject's rows from a PostgreSQL table",
		Long: `Runs a service taking part in erasure (docs/protocol.md) with the Go SDK
(modules/participant): it consumes erasure.command.<name>, deletes the
subject's rows from --table in the database at --dsn, and confirms.
Commands are deduplicated in the table gdpr_participant_inbox of that database.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			if name == "" || dsn == "" || table == "" {
				return &exitError{code: 2, err: errors.New("example-participant: --name, --dsn and --table are required")}
			}
			if by != "id" && by != "email" {
				return &exitError{code: 2, err: fmt.Errorf("example-participant: --by must be id or email, got %q", by)}
			}
			logger := newLogger(cfg.Log, c.stdout).With("role", "example-participant", "participant", name)
			ctx, _, stop := signalContext(cmd.Context())
			defer stop()
			sdb, err := sql.Open("pgx", dsn)
			if err != nil {
				return fmt.Errorf("opening %s database: %w", name, err)
			}
			defer sdb.Close()
			if err := sdb.PingContext(ctx); err != nil {
				return fmt.Errorf("connecting to %s database: %w", name, err)
			}
			host, _ := os.Hostname()
			conn, err := bus.Dial(ctx, cfg.AMQP, fmt.Sprintf("gdpr-participant-%s-%s-%d", name, host, os.Getpid()), bus.Topology{}, logger)
			if err != nil {
				return err
			}
			defer conn.Close()
			query := `DELETE FROM ` + pgx.Identifier(strings.Split(table, ".")).Sanitize() +
				` WHERE ` + pgx.Identifier{column}.Sanitize() + ` = $1`
			erase := func(ctx context.Context, s event.Subject) (string, error) {
				key := s.ID
				if by == "email" {
					key = s.Email
				}
				if key == "" {
					return event.OutcomeNotFound, nil
				}
				res, err := sdb.ExecContext(ctx, query, key)
				if err != nil {
					logger.ErrorContext(ctx, "deleting rows failed", "error", err)
					return "", participant.Failed("database error")
				}
				n, _ := res.RowsAffected()
				logger.InfoContext(ctx, "rows deleted", "rows", n)
				if n == 0 {
					return event.OutcomeNotFound, nil
				}
				return event.OutcomeErased, nil
			}
			logger.InfoContext(ctx, "example participant running", "table", table)
			return participant.Run(ctx, conn, name, erase, participant.Options{DB: sdb, Concurrency: concurrency, Logger: logger})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "participant name, as in canceller.participants")
	f.StringVar(&dsn, "dsn", "", "PostgreSQL URL of the service's own database")
	f.StringVar(&table, "table", "", "table holding the subject's rows (schema.table allowed)")
	f.StringVar(&column, "column", "subject_id", "column matched against the subject")
	f.StringVar(&by, "by", "id", "subject identifier matched: id or email")
	f.IntVar(&concurrency, "concurrency", 4, "commands handled at once")
	return []*cobra.Command{cmd}
}
