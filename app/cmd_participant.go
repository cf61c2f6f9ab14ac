package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/participant"
	"github.com/gdpr-oss/gdpr/modules/participant/conformance"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
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
			logger := newLogger(cfg.Log, c.stdout).With("role", "example-participant") // the SDK adds the participant
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
			// Identifiers are quoted by pgx; the subject is a bound parameter.
			query := `DELETE FROM ` + pgx.Identifier(strings.Split(table, ".")).Sanitize() + //nolint:gosec // G202: quoted identifiers, not input values
				` WHERE ` + pgx.Identifier{column}.Sanitize() + ` = $1`
			if by == "email" {
				// Addresses compare ignoring case (docs/protocol.md, The command).
				query = `DELETE FROM ` + pgx.Identifier(strings.Split(table, ".")).Sanitize() +
					` WHERE lower(` + pgx.Identifier{column}.Sanitize() + `) = lower($1)`
			}
			erase := func(ctx context.Context, s event.Subject) (string, error) {
				key := s.ID
				if by == "email" {
					key = s.Email
				}
				if key == "" {
					// Not not_found: the rows may well be there, under the
					// identifier this command lacks.
					return event.OutcomeCannotErase, nil
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
	return []*cobra.Command{cmd, c.erasureCommand(), c.participantCommand()}
}

// participantCommand is `gdpr participant check NAME`, the conformance check
// other teams run against their participant.
func (c *cli) participantCommand() *cobra.Command {
	var opts conformance.Options
	check := &cobra.Command{
		Use:   "check NAME",
		Short: "Check a running participant against the erasure protocol and print the rules it keeps",
		Long: `Sends participant NAME, on the configured exchange (amqp.prefix), erasure
commands for made-up subjects (ids starting with ` + conformance.SubjectPrefix + `, emails at conformance.invalid): a well-formed
command, a duplicate, a replay after its confirmation, a re-send, a body that
is not JSON, a command without subject and one of an unsupported version. It
prints each protocol rule with PASS, FAIL (a broken rule: exit code 1), WARN
(a recommendation not followed) or SKIP.

Run it against a test deployment: the malformed commands end in the
dead-letter queue, and a canceller on the same prefix dead-letters the
confirmations, whose requests it does not know.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			logger := newLogger(cfg.Log, io.Discard)
			ctx, _, stop := signalContext(cmd.Context())
			defer stop()
			dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			host, _ := os.Hostname()
			conn, err := bus.Dial(dialCtx, cfg.AMQP, fmt.Sprintf("gdpr-participant-check-%s-%s-%d", args[0], host, os.Getpid()), bus.Topology{}, logger)
			if err != nil {
				return err
			}
			defer conn.Close()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "checking participant %s (queue %s)\n", args[0], conn.QueueName("participant."+args[0]))
			report, err := conformance.Run(ctx, conn, args[0], opts)
			printReport(out, report)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("participant check: %w", err)}
			}
			if broken := report.Broken(); len(broken) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("participant %s breaks %d protocol rule(s), first: %s: %s", args[0], len(broken), broken[0].Step, broken[0].Rule)}
			}
			return nil
		},
	}
	f := check.Flags()
	f.DurationVar(&opts.Timeout, "timeout", 30*time.Second, "how long each step waits for the participant's answer")
	f.DurationVar(&opts.Settle, "settle", 2*time.Second, "how long each step listens on after the answer, for extra confirmations")
	cmd := &cobra.Command{Use: "participant", Short: "Tools for the services that take part in erasure"}
	cmd.AddCommand(check)
	return cmd
}

// printReport prints one line per rule: verdict, step, rule, what was seen.
func printReport(w io.Writer, r conformance.Report) {
	var kept, broken, warned int
	for _, res := range r.Results {
		verdict := "PASS"
		switch {
		case res.Skipped:
			verdict = "SKIP"
		case res.Kept:
			kept++
		case res.Must:
			verdict = "FAIL"
			broken++
		default:
			verdict = "WARN"
			warned++
		}
		fmt.Fprintf(w, "%s  %s: %s (%s)\n", verdict, res.Step, res.Rule, res.Detail)
	}
	fmt.Fprintf(w, "%d rules kept, %d broken, %d recommendations not followed\n", kept, broken, warned)
}

// erasureCommand is `gdpr erasure status|resend`, the operator's view of and
// action on an erasure's participants.
func (c *cli) erasureCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "erasure", Short: "Inspect an erasure's participants and re-send to overdue ones"}
	withCanceller := func(cmd *cobra.Command, fn func(ctx context.Context, gdb *gorm.DB, k *erasure.Canceller) error) error {
		cfg, err := c.load(cmd)
		if err != nil {
			return err
		}
		gdb, err := db.Open(cmd.Context(), cfg.Postgres)
		if err != nil {
			return err
		}
		defer func() {
			if s, err := gdb.DB(); err == nil {
				_ = s.Close()
			}
		}()
		logger := newLogger(cfg.Log, io.Discard)
		k, err := erasure.New(gdb, scheduler.NewStore(gdb), outbox.NewStore(gdb), cfg.Canceller, nil, logger)
		if err != nil {
			return err
		}
		return fn(cmd.Context(), gdb, k)
	}
	status := &cobra.Command{
		Use:   "status REQUEST_ID",
		Short: "List each participant's state, attempts and last outcome",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withCanceller(cmd, func(ctx context.Context, gdb *gorm.DB, _ *erasure.Canceller) error {
				ps, err := erasure.Participants(ctx, gdb, args[0])
				if err != nil {
					return err
				}
				if len(ps) == 0 {
					return &exitError{code: 1, err: fmt.Errorf("erasure %s: no participants (unknown or not fanned out yet)", args[0])}
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PARTICIPANT\tKIND\tSTATE\tATTEMPTS\tLAST OUTCOME\tDETAIL\tUPDATED")
				for _, p := range ps {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", p.Participant, p.Kind, p.State, p.Attempts, p.LastOutcome, p.Detail,
						p.UpdatedAt.UTC().Format("2006-01-02 15:04:05"))
				}
				return tw.Flush()
			})
		},
	}
	resend := &cobra.Command{
		Use:   "resend REQUEST_ID PARTICIPANT",
		Short: "Send a new command (or make a new HTTP call) to an overdue, failed or silent participant now",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withCanceller(cmd, func(ctx context.Context, _ *gorm.DB, k *erasure.Canceller) error {
				if err := k.Resend(ctx, args[0], args[1]); err != nil {
					return &exitError{code: 1, err: err}
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "re-sent to %s\n", args[1])
				return err
			})
		},
	}
	cmd.AddCommand(status, resend)
	return cmd
}
