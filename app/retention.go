package app

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/retention"
	"github.com/spf13/cobra"
	"gorm.io/gorm"
)

// retentionSteps are the sweeper's steps over this installation's tables
// and, when given, its dead-letter queue.
func retentionSteps(cfg config.Config, gdb *gorm.DB, store *requests.Store, extra ...retention.Step) []retention.Step {
	return retention.Steps(cfg.Retention, cfg.Report.Retention, store,
		func(ctx context.Context, cutoff time.Time, limit int, dry bool) ([]string, error) {
			return notify.DeleteRecords(ctx, gdb, cutoff, limit, dry)
		},
		func(ctx context.Context, cutoff time.Time, limit int, dry bool) ([]string, error) {
			return erasure.DeleteRecords(ctx, gdb, cutoff, limit, dry)
		}, extra...)
}

// buildRetention is the retention module: the sweeper of the worker role.
func buildRetention(_ context.Context, in *infra) ([]Component, error) {
	files, err := report.NewLocal(in.cfg.Report.StorageDir)
	if err != nil {
		return nil, err
	}
	store := requests.NewStore(in.db, files)
	sweeper, err := retention.New(in.cfg.Retention, retentionSteps(in.cfg, in.db, store, deadLetterStep(in.cfg, in.bus, store)), in.logger, in.registry)
	if err != nil {
		return nil, err
	}
	return []Component{sweeper}, nil
}

// retentionCommand is `gdpr retention run [--dry-run]`: one sweep now, or
// the list of what it would delete.
func (c *cli) retentionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "retention", Short: "Delete what gdpr keeps past its lifetime (docs/privacy.md), or show what would go"}
	var dryRun bool
	var limit int
	run := &cobra.Command{
		Use:   "run",
		Short: "Run one retention sweep now; with --dry-run only print what it would delete",
		Long: `Runs the worker's retention sweep once: report files whose deletion a crash
left undone, reports past report.retention, the personal data of requests
finished longer than retention.scrub_after ago, request records past
retention.record_for, and dead letters past retention.dead_letters_for or of
an erased request. Several workers (and this command) may sweep at once;
each item is deleted once. --dry-run prints KIND and ID of up to --limit
items per kind and deletes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			if limit < 1 {
				return &exitError{code: 2, err: fmt.Errorf("--limit must be >= 1, got %d", limit)}
			}
			gdb, err := db.Open(cmd.Context(), cfg.Postgres)
			if err != nil {
				return err
			}
			defer closeDB(gdb)
			files, err := report.NewLocal(cfg.Report.StorageDir)
			if err != nil {
				return err
			}
			store := requests.NewStore(gdb, files)
			deadLetters, closeBus, err := c.deadLetterSteps(cmd.Context(), cfg, store)
			if err != nil {
				return err
			}
			defer closeBus()
			steps := retentionSteps(cfg, gdb, store, deadLetters...)
			sw, err := retention.New(cfg.Retention, steps, newLogger(cfg.Log, io.Discard), nil)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dryRun {
				items, err := sw.DryRun(cmd.Context(), limit)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tID")
				for _, it := range items {
					fmt.Fprintf(tw, "%s\t%s\n", it.Kind, it.ID)
				}
				if ferr := tw.Flush(); ferr != nil {
					return ferr
				}
				fmt.Fprintf(out, "would delete %d (dry run: nothing deleted)\n", len(items))
				return err
			}
			counts, err := sw.Sweep(cmd.Context())
			total := 0
			for _, st := range steps {
				fmt.Fprintf(out, "%s\t%d\n", st.Kind, counts[st.Kind])
				total += counts[st.Kind]
			}
			fmt.Fprintf(out, "deleted %d\n", total)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			return nil
		},
	}
	run.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be deleted, delete nothing")
	run.Flags().IntVar(&limit, "limit", 1000, "with --dry-run, list at most this many per kind")
	cmd.AddCommand(run)
	return cmd
}
