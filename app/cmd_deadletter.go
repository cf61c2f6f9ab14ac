package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/retention"
)

// deadLetterCommand is `gdpr dead-letters list|requeue|purge`: what is in the
// dead-letter queue and why, and putting it back once the cause is fixed.
func (c *cli) deadLetterCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "dead-letters", Short: "List dead-lettered messages, put them back into their queues, or purge them"}
	withBus := func(cmd *cobra.Command, limit int, fn func(ctx context.Context, conn *bus.Conn) error) error {
		if limit < 1 {
			return &exitError{code: 2, err: fmt.Errorf("--limit must be >= 1, got %d", limit)}
		}
		cfg, err := c.load(cmd)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
		defer cancel()
		host, _ := os.Hostname()
		conn, err := bus.Dial(ctx, cfg.AMQP, fmt.Sprintf("gdpr-dead-letters-%s-%d", host, os.Getpid()), topology(cfg), newLogger(cfg.Log, io.Discard))
		if err != nil {
			return err
		}
		defer conn.Close()
		return fn(cmd.Context(), conn)
	}
	var listLimit int
	list := &cobra.Command{
		Use:   "list",
		Short: "Show dead-lettered messages (ids, type, origin queue, reason), oldest first; they stay where they are",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBus(cmd, listLimit, func(ctx context.Context, conn *bus.Conn) error {
				dls, err := conn.DeadLetters(ctx, listLimit)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MESSAGE ID\tTYPE\tREQUEST ID\tQUEUE\tCLASS\tREASON")
				for _, d := range dls {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.MessageID, d.Type, d.RequestID, d.Queue, d.Class, d.Reason)
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().IntVar(&listLimit, "limit", 100, "show at most this many")
	var queue string
	var requeueLimit int
	requeue := &cobra.Command{
		Use:   "requeue",
		Short: "Put dead-lettered messages back into the queues they came from, with a fresh retry budget",
		Long: `Moves dead-lettered messages back into the work queue each came from
(only those from --queue, when given), oldest first. Each copy is confirmed by
the broker before the dead letter is removed; a message that ends up in both
is handled once (consumers deduplicate by message id). Fix the cause first:
a message that fails again is dead-lettered again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBus(cmd, requeueLimit, func(ctx context.Context, conn *bus.Conn) error {
				moved, err := conn.Redrive(ctx, queue, requeueLimit)
				fmt.Fprintf(cmd.OutOrStdout(), "requeued %d\n", moved)
				if err != nil {
					return &exitError{code: 1, err: err}
				}
				return nil
			})
		},
	}
	requeue.Flags().StringVar(&queue, "queue", "", "only messages dead-lettered from this queue (e.g. worker.requests)")
	requeue.Flags().IntVar(&requeueLimit, "limit", 1000, "move at most this many")
	var olderThan time.Duration
	var request string
	var purgeLimit int
	var dryRun bool
	purge := &cobra.Command{
		Use:   "purge",
		Short: "Remove dead-lettered messages for good (by age and/or request), each confirmed and counted",
		Long: `Removes the dead letters selected by --older-than (dead-lettered longer ago
than this) and/or --request (of this request id); at least one is required.
Prints each removed message and the count; every removal is confirmed by the
broker before the count is printed. --dry-run prints what would go and
removes nothing. The retention sweeper does the same on its own after
retention.dead_letters_for, and at once for an erased request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if olderThan <= 0 && request == "" {
				return &exitError{code: 2, err: errors.New("give --older-than, --request or both")}
			}
			return withBus(cmd, purgeLimit, func(ctx context.Context, conn *bus.Conn) error {
				var f bus.DeadLetterFilter
				if olderThan > 0 {
					f.DeadLetteredBefore = time.Now().Add(-olderThan)
				}
				if request != "" {
					f.RequestIDs = []string{request}
				}
				removed, err := conn.PurgeDeadLetters(ctx, f, purgeLimit, dryRun)
				out := cmd.OutOrStdout()
				verb := "removed"
				if dryRun {
					verb = "would remove"
				}
				for _, d := range removed {
					fmt.Fprintf(out, "%s %s %s request=%s queue=%s dead-lettered=%s\n", verb, d.MessageID, d.Type, d.RequestID, d.Queue, d.At.UTC().Format(time.RFC3339))
				}
				if err != nil {
					fmt.Fprintf(out, "purge stopped: %d not confirmed\n", len(removed))
					return &exitError{code: 1, err: err}
				}
				if dryRun {
					fmt.Fprintf(out, "would purge %d (dry run: nothing removed)\n", len(removed))
				} else {
					fmt.Fprintf(out, "purged %d\n", len(removed))
				}
				return nil
			})
		},
	}
	purge.Flags().DurationVar(&olderThan, "older-than", 0, "only messages dead-lettered longer ago than this (e.g. 336h)")
	purge.Flags().StringVar(&request, "request", "", "only messages of this request id")
	purge.Flags().IntVar(&purgeLimit, "limit", 10000, "remove at most this many")
	purge.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be removed, remove nothing")
	cmd.AddCommand(list, requeue, purge)
	return cmd
}

// deadLetterSteps dials the broker for `gdpr retention run` and returns the
// dead-letter retention step over that connection, and its close.
func (c *cli) deadLetterSteps(ctx context.Context, cfg config.Config, store *requests.Store) ([]retention.Step, func(), error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	host, _ := os.Hostname()
	conn, err := bus.Dial(dctx, cfg.AMQP, fmt.Sprintf("gdpr-retention-%s-%d", host, os.Getpid()), topology(cfg), newLogger(cfg.Log, io.Discard))
	if err != nil {
		return nil, nil, err
	}
	return []retention.Step{deadLetterStep(cfg, conn, store)}, func() { _ = conn.Close() }, nil
}

// deadLetterStep purges dead letters older than retention.dead_letters_for
// and, at once, those of a request whose subject was erased: their bodies
// may hold the subject's id or address.
func deadLetterStep(cfg config.Config, conn *bus.Conn, store *requests.Store) retention.Step {
	return retention.Step{Kind: retention.KindDeadLetter, Run: func(ctx context.Context, now time.Time, limit int, dry bool) ([]string, error) {
		old, err := conn.PurgeDeadLetters(ctx, bus.DeadLetterFilter{DeadLetteredBefore: now.Add(-cfg.Retention.DeadLettersFor)}, limit, dry)
		ids := deadLetterIDs(old)
		if err != nil || len(ids) >= limit {
			return ids, err
		}
		// The whole queue, not its head: an erased request's dead letter may
		// sit behind any number of others.
		requestIDs, err := conn.DeadLetterRequestIDs(ctx)
		if err != nil {
			return ids, err
		}
		erased, err := store.ErasedAmong(ctx, requestIDs)
		if err != nil || len(erased) == 0 {
			return ids, err
		}
		more, err := conn.PurgeDeadLetters(ctx, bus.DeadLetterFilter{RequestIDs: erased}, limit-len(ids), dry)
		return append(ids, deadLetterIDs(more)...), err
	}}
}

func deadLetterIDs(dls []bus.DeadLetter) []string {
	out := make([]string, 0, len(dls))
	for _, d := range dls {
		out = append(out, d.MessageID)
	}
	return out
}
