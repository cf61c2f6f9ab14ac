package app

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/modules/db"
)

func (c *cli) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply, roll back or list the database migrations",
	}
	withMigrator := func(fn func(cmd *cobra.Command, m *db.Migrator) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.load(cmd)
			if err != nil {
				return err
			}
			if err := db.EnsureDatabase(cmd.Context(), cfg.Postgres.DSN); err != nil {
				return err
			}
			m, err := db.NewMigrator(cfg.Postgres.DSN)
			if err != nil {
				return err
			}
			defer m.Close()
			return fn(cmd, m)
		}
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: withMigrator(func(cmd *cobra.Command, m *db.Migrator) error {
			cfg, _ := c.load(cmd)
			return m.Up(cmd.Context(), newLogger(cfg.Log, c.stdout))
		}),
	}
	down := &cobra.Command{
		Use:   "down",
		Short: "Roll back the most recent migration",
		Args:  cobra.NoArgs,
		RunE: withMigrator(func(cmd *cobra.Command, m *db.Migrator) error {
			cfg, _ := c.load(cmd)
			return m.Down(cmd.Context(), newLogger(cfg.Log, c.stdout))
		}),
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "List migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: withMigrator(func(cmd *cobra.Command, m *db.Migrator) error {
			list, err := m.Status(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tFILE\tAPPLIED")
			for _, s := range list {
				applied := "pending"
				if s.Applied {
					applied = s.AppliedAt.UTC().Format("2006-01-02 15:04:05")
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\n", s.Version, s.Name, applied)
			}
			return tw.Flush()
		}),
	}
	cmd.AddCommand(up, down, status)
	return cmd
}
