package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/retention"
)

// deadLetterCommand is `gdpr dead-letters list|requeue`: what is in the
// dead-letter queue and why, and putting it back once the cause is fixed.
func (c *cli) deadLetterCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "dead-letters", Short: "List dead-lettered messages, or put them back into their queues"}
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
	cmd.AddCommand(list, requeue)
	return cmd
}

// deadLetterSteps are the retention steps over the dead-letter queue, with
// the connection they use and its close.
func (c *cli) deadLetterSteps(context.Context, config.Config) ([]retention.Step, func(), error) {
	return nil, func() {}, nil
}
