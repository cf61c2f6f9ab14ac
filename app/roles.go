package app

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/otlp"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// roleBuilder returns the components of one role, built from shared infra.
type roleBuilder func(in *infra) ([]Component, error)

// runRole loads the configuration, opens the infrastructure, starts the
// admin server and the roles' components, and runs until SIGTERM/SIGINT.
// A second signal during the drain exits at once with code 1.
func (c *cli) runRole(cmd *cobra.Command, role string, adminAddr func(config.Config) string, builders []roleBuilder, base ...func(*config.Config)) error {
	cfg, err := c.load(cmd, base...)
	if err != nil {
		return err
	}
	if role == "canceller" || role == "all" {
		// The roles that fan erasures out; refused before connecting to
		// anything, as a usage error (exit 2).
		if err := cfg.Canceller.CheckParticipants(); err != nil {
			return fmt.Errorf("%w: %w", config.ErrInvalid, err)
		}
	}
	if err := cfg.CheckSecretKeys(); err != nil {
		return err
	}
	logger := newLogger(cfg.Log, c.stdout).With("role", role)
	ctx, force, stop := signalContext(cmd.Context())
	defer stop()

	in, err := openInfra(ctx, cfg, logger, role)
	if err != nil {
		if ctx.Err() != nil {
			// Stopped by a signal while still connecting.
			return nil
		}
		return fmt.Errorf("starting %s: %w", role, err)
	}

	admin := health.NewServer(adminAddr(cfg), in.checks(), in.registry, logger)
	components := []Component{admin}
	if cfg.Telemetry.OTLPEndpoint != "" {
		exp, err := otlp.New(ctx, cfg.Telemetry.OTLPEndpoint, role, Version)
		if err != nil {
			closeInfra(in, logger)
			return fmt.Errorf("starting %s: %w", role, err)
		}
		// First, so it stops last and flushes the spans of everything else.
		components = []Component{exp, admin}
		ctx = trace.WithTracer(ctx, exp.Tracer())
	}
	for _, build := range builders {
		cs, err := build(in)
		if err != nil {
			closeInfra(in, logger)
			return fmt.Errorf("wiring %s: %w", role, err)
		}
		components = append(components, cs...)
	}
	logger.InfoContext(ctx, "starting", "version", Version, "components", len(components))
	err = runForce(ctx, force, logger, cfg.Shutdown.DrainTimeout, components)
	if errors.Is(err, errForced) {
		// Leave the connections to the kernel: closing them could block too.
		return &exitError{code: 1, err: err}
	}
	closeInfra(in, logger)
	return err
}

// infraCloseTimeout bounds closing connections after the drain, so an
// unresponsive broker or database cannot keep a stopped process alive.
const infraCloseTimeout = 2 * time.Second

func closeInfra(in *infra, logger *slog.Logger) {
	done := make(chan error, 1)
	go func() { done <- in.close() }()
	select {
	case err := <-done:
		if err != nil {
			logger.Warn("closing connections", "error", err)
		}
	case <-time.After(infraCloseTimeout):
		logger.Warn("closing connections timed out", "timeout", infraCloseTimeout)
	}
}

func (c *cli) serveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "HTTP intake: accept requests, status, report download, admin API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runRole(cmd, "serve", func(cfg config.Config) string { return cfg.Serve.AdminAddr }, []roleBuilder{serveComponents})
		},
	}
	c.bind(cmd.Flags(), "addr", "serve.addr", "public API listen address")
	c.bind(cmd.Flags(), "admin-addr", "serve.admin_addr", "admin listen address (/healthz, /readyz, /metrics)")
	return cmd
}

func (c *cli) workerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Requests manager: store requests, build access reports, hand erasures on, notify",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runRole(cmd, "worker", func(cfg config.Config) string { return cfg.Worker.AdminAddr }, []roleBuilder{workerComponents, auditComponents})
		},
	}
	c.bind(cmd.Flags(), "concurrency", "worker.concurrency", "number of concurrent workers (default 8)")
	c.bind(cmd.Flags(), "admin-addr", "worker.admin_addr", "admin listen address")
	return cmd
}

func (c *cli) schedulerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "Delayed messages: publish stored messages when they are due",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runRole(cmd, "scheduler", func(cfg config.Config) string { return cfg.Scheduler.AdminAddr }, []roleBuilder{schedulerComponents})
		},
	}
	c.bind(cmd.Flags(), "admin-addr", "scheduler.admin_addr", "admin listen address")
	for _, sub := range c.schedulerAdminCommands() {
		cmd.AddCommand(sub)
	}
	return cmd
}

func (c *cli) cancellerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "canceller",
		Short: "Erasure fan-out: command every participant, collect confirmations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runRole(cmd, "canceller", func(cfg config.Config) string { return cfg.Canceller.AdminAddr }, []roleBuilder{cancellerComponents})
		},
	}
	c.bind(cmd.Flags(), "admin-addr", "canceller.admin_addr", "admin listen address")
	return cmd
}

func (c *cli) allCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "all",
		Short: "Every role in one process (development and small installs); migrates at start",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.runRole(cmd, "all", func(cfg config.Config) string { return cfg.Serve.AdminAddr },
				[]roleBuilder{schedulerComponents, workerComponents, auditComponents, cancellerComponents, serveComponents},
				func(d *config.Config) { d.Postgres.MigrateOnStart = true })
		},
	}
	c.bind(cmd.Flags(), "concurrency", "worker.concurrency", "number of concurrent workers (default 8)")
	c.bind(cmd.Flags(), "addr", "serve.addr", "public API listen address")
	c.bind(cmd.Flags(), "admin-addr", "serve.admin_addr", "admin listen address")
	return cmd
}
