package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/modules/audit"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/reconcile"
)

// errOutOfSync makes `gdpr reconcile` exit 1 after printing its table.
var errOutOfSync = errors.New("requests out of sync")

// opsCommands are `gdpr reconcile` and `gdpr timeline`.
func (c *cli) opsCommands() []*cobra.Command {
	return []*cobra.Command{c.reconcileCommand(), c.timelineCommand()}
}

func (c *cli) reconcileCommand() *cobra.Command {
	var since, stuckAfter time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check that submitted, received, reported/erased and emailed counts agree; exit 1 when out of sync",
		Long: `Compares, per request first seen within --since, the stages it passed
(submitted -> received -> report generated or erasure completed -> email sent)
according to the audit log and the database. Prints the counts per stage and
every request that made no progress for longer than --stuck-after while a
stage is missing. Failed requests are listed separately. Exit status: 0 in
sync, 1 out of sync, 2 bad configuration.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("stuck-after") {
				stuckAfter = cfg.Telemetry.Reconcile.StuckAfter
			}
			gdb, err := db.Open(cmd.Context(), cfg.Postgres)
			if err != nil {
				return err
			}
			defer closeDB(gdb)
			res, err := reconcile.New(gdb, reconcile.Stores(gdb)).Check(cmd.Context(), reconcile.Options{Since: since, StuckAfter: stuckAfter})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			case "table":
				if err := printReconcile(out, res, since, stuckAfter); err != nil {
					return err
				}
			default:
				return &exitError{code: 2, err: fmt.Errorf("--output must be table or json, got %q", output)}
			}
			if !res.InSync() {
				return &exitError{code: 1, err: fmt.Errorf("%w: %d stuck", errOutOfSync, len(res.Stuck))}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&since, "since", 24*time.Hour, "check requests first seen within this long")
	cmd.Flags().DurationVar(&stuckAfter, "stuck-after", 15*time.Minute, "a request without progress for this long with a stage missing is out of sync (default telemetry.stuck_after)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printReconcile(out io.Writer, res reconcile.Result, since, stuckAfter time.Duration) error {
	fmt.Fprintf(out, "in-sync check at %s: requests since %s (%s), stuck after %s\n\n",
		res.CheckedAt.Format(time.RFC3339), res.Since.Format(time.RFC3339), since, stuckAfter)
	kinds := make([]string, 0, len(res.Counts))
	for k := range res.Counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	outOfSync := res.OutOfSync()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "STAGE\t%s\tTOTAL\tOUT OF SYNC\n", strings.ToUpper(strings.Join(kinds, "\t")))
	for _, stage := range reconcile.Stages() {
		total := 0
		row := stage
		for _, k := range kinds {
			n := res.Counts[k][stage]
			total += n
			row += fmt.Sprintf("\t%d", n)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\n", row, total, outOfSync[stage])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nin progress (within threshold): %d\nemail skipped (no address): %d\nclosed by an operator: %d\nfailed: %d\n",
		res.InProgress, res.EmailSkipped, res.Closed, len(res.Failed))
	if len(res.Failed) > 0 {
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FAILED REQUEST\tTYPE\tERROR CLASS")
		for _, f := range res.Failed {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.RequestID, f.Type, f.ErrorClass)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if res.InSync() {
		_, err := fmt.Fprintln(out, "\nIN SYNC")
		return err
	}
	fmt.Fprintf(out, "\nOUT OF SYNC: %d request(s) stuck\n", len(res.Stuck))
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STUCK REQUEST\tTYPE\tSTATE\tMISSING\tREACHED\tIDLE\tREASON")
	for _, s := range res.Stuck {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.RequestID, s.Type, dash(s.State), s.Missing, strings.Join(s.Reached, ","),
			s.Idle.Round(time.Second), dash(s.Reason))
	}
	return tw.Flush()
}

func (c *cli) timelineCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "timeline REQUEST_ID",
		Short: "Print a request's audit timeline in causal order",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			gdb, err := db.Open(cmd.Context(), cfg.Postgres)
			if err != nil {
				return err
			}
			defer closeDB(gdb)
			events, err := auditStore(gdb).Timeline(cmd.Context(), args[0])
			if errors.Is(err, audit.ErrNoEvents) {
				return &exitError{code: 1, err: err}
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(audit.TimelineResponse{RequestID: args[0], Events: events})
			case "table":
				return printTimeline(out, events)
			default:
				return &exitError{code: 2, err: fmt.Errorf("--output must be table or json, got %q", output)}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printTimeline(out io.Writer, events []audit.Event) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OCCURRED AT\tROLE\tEVENT\tMESSAGE ID\tCAUSED BY\tDETAILS")
	for _, e := range events {
		keys := make([]string, 0, len(e.Details))
		for k := range e.Details {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			if k == "request_id" {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s=%v", k, e.Details[k]))
		}
		role := dash(e.Role)
		if e.DispatchedBy != "" {
			role += " via " + e.DispatchedBy
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.OccurredAt.Format("2006-01-02T15:04:05.000Z07:00"),
			role, e.RoutingKey, e.MessageID, dash(e.CausationID), strings.Join(parts, " "))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func closeDB(g *gorm.DB) {
	if sqlDB, err := g.DB(); err == nil {
		_ = sqlDB.Close()
	}
}
