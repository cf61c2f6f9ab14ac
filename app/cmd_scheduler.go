package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// schedulerAdminCommands are `gdpr scheduler list|show|cancel`.
func (c *cli) schedulerAdminCommands() []*cobra.Command {
	var limit int
	var after string
	list := &cobra.Command{
		Use:   "list",
		Short: "List pending scheduled messages, earliest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.withSchedulerStore(cmd, func(ctx context.Context, store *scheduler.Store) error {
				items, err := store.List(ctx, limit, after)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "KEY\tDELIVER_AT\tTYPE\tROUTING_KEY\tEXCHANGE\tATTEMPTS\tMESSAGE_ID")
				for _, s := range items {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Key, s.DeliverAt.UTC().Format(time.RFC3339Nano),
						s.Type, s.RoutingKey, orMain(s.Exchange), s.Attempts, s.MessageID)
				}
				return w.Flush()
			})
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "most entries to list")
	list.Flags().StringVar(&after, "after", "", "list keys after this one (paging)")

	show := &cobra.Command{
		Use:   "show KEY",
		Short: "Show one scheduled message (pending, or its latest sent record) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSchedulerStore(cmd, func(ctx context.Context, store *scheduler.Store) error {
				s, err := store.Get(ctx, args[0])
				if err != nil {
					if errors.Is(err, scheduler.ErrNotFound) {
						return &exitError{code: 3, err: err}
					}
					return err
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			})
		},
	}

	cancel := &cobra.Command{
		Use:   "cancel KEY",
		Short: "Cancel a pending scheduled message",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.withSchedulerStore(cmd, func(ctx context.Context, store *scheduler.Store) error {
				existed, err := store.Cancel(ctx, nil, args[0])
				if err != nil {
					return err
				}
				if !existed {
					return &exitError{code: 3, err: fmt.Errorf("%w: %s is not pending", scheduler.ErrNotFound, strconv.Quote(args[0]))}
				}
				_, err = fmt.Fprintln(cmd.OutOrStdout(), "cancelled", args[0])
				return err
			})
		},
	}
	return []*cobra.Command{list, show, cancel}
}

func orMain(exchange string) string {
	if exchange == "" {
		return "(main)"
	}
	return exchange
}

// withSchedulerStore loads the configuration, opens the database and runs f.
func (c *cli) withSchedulerStore(cmd *cobra.Command, f func(context.Context, *scheduler.Store) error) error {
	cfg, err := c.load(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	gdb, err := db.Open(ctx, cfg.Postgres)
	if err != nil {
		return err
	}
	defer func() {
		if sqlDB, err := gdb.DB(); err == nil {
			_ = sqlDB.Close()
		}
	}()
	return f(ctx, scheduler.NewStore(gdb))
}
