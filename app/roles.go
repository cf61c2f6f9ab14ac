package app

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/otlp"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// runRole loads the configuration, builds the role's modules (connecting
// only to the services they need), starts the admin server and the
// modules' components, and runs until SIGTERM/SIGINT. A second signal
// during the drain exits at once with code 1.
func (c *cli) runRole(cmd *cobra.Command, role string, adminAddr func(config.Config) string, base ...func(*config.Config)) error {
	cfg, err := c.load(cmd, base...)
	if err != nil {
		return err
	}
	mods := modules()
	order, err := mods.resolve(roleModules(role)...)
	if err != nil {
		return fmt.Errorf("wiring %s: %w", role, err)
	}
	if slices.Contains(order, modCanceller) {
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

	in := newInfra(cfg, logger, role, mods.topology(cfg))
	var built []Component
	for _, name := range order {
		cs, err := mods[name].build(ctx, in)
		if err != nil {
			closeInfra(in, logger)
			if ctx.Err() != nil {
				// Stopped by a signal while still connecting.
				return nil
			}
			return fmt.Errorf("starting %s: module %s: %w", role, name, err)
		}
		built = append(built, cs...)
	}

	// The admin server starts first, so /healthz answers while the rest
	// starts; it reports on the services this role connected to.
	admin := health.NewServer(adminAddr(cfg), in.checks(), in.registry, logger)
	admin.SetLimits(cfg.Serve.Limits())
	if cfg.Telemetry.Health.Pprof {
		admin.ServeProfiles()
	}
	components := append([]Component{admin}, built...)
	if cfg.Telemetry.OTLP.Endpoint != "" {
		exp, err := otlp.New(ctx, cfg.Telemetry.OTLP.Endpoint, role, Version)
		if err != nil {
			closeInfra(in, logger)
			return fmt.Errorf("starting %s: %w", role, err)
		}
		// First, so it stops last and flushes the spans of everything else.
		components = append([]Component{exp}, components...)
		ctx = trace.WithTracer(ctx, exp.Tracer())
	}
	logger.InfoContext(ctx, "starting", "version", Version, "modules", order, "components", len(components))
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
			return c.runRole(cmd, "serve", func(cfg config.Config) string { return cfg.Serve.AdminAddr })
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
			return c.runRole(cmd, "worker", func(cfg config.Config) string { return cfg.Worker.AdminAddr })
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
			return c.runRole(cmd, "scheduler", func(cfg config.Config) string { return cfg.Scheduler.AdminAddr })
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
			return c.runRole(cmd, "canceller", func(cfg config.Config) string { return cfg.Canceller.AdminAddr })
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
				func(d *config.Config) { d.Postgres.MigrateOnStart = true })
		},
	}
	c.bind(cmd.Flags(), "concurrency", "worker.concurrency", "number of concurrent workers (default 8)")
	c.bind(cmd.Flags(), "addr", "serve.addr", "public API listen address")
	c.bind(cmd.Flags(), "admin-addr", "serve.admin_addr", "admin listen address")
	return cmd
}
