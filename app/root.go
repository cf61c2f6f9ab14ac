// Package app wires gdpr's roles from modules and runs them as cobra commands.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/trace"
)

// Version is set at build time with -ldflags "-X github.com/gdpr-oss/gdpr/app.Version=...".
var Version = "dev" //nolint:gochecknoglobals // set at link time with -ldflags -X; never written at run time

// exitError carries a process exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Execute runs the root command with the process's arguments and returns the exit code.
func Execute() int {
	return ExecuteArgs(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Environ())
}

// ExecuteArgs runs the root command with explicit arguments, output and
// environment (tests call it in-process).
func ExecuteArgs(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) int {
	root := newRoot(stdout, environ)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if errors.Is(err, config.ErrInvalid) {
		return 2
	}
	return 1
}

// cli holds what every command shares: the flags bound to config paths and
// the effective configuration once loaded.
type cli struct {
	stdout     io.Writer
	environ    []string
	configPath string
	// flagPaths maps a flag name to the dotted config path it sets.
	flagPaths map[string]string
}

func newRoot(stdout io.Writer, environ []string) *cobra.Command {
	c := &cli{stdout: stdout, environ: environ, flagPaths: map[string]string{}}
	root := &cobra.Command{
		Use:           "gdpr",
		Short:         "Answer GDPR data subject requests: access reports and erasure",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// A mistyped flag is a usage error, like an invalid setting: exit 2.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: 2, err: err}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&c.configPath, "config", "", "YAML config file (env GDPR_CONFIG)")
	c.bind(pf, "log-format", "log.format", "log format: json or text")
	c.bind(pf, "log-level", "log.level", "log level: debug, info, warn, error")
	c.bind(pf, "postgres-dsn", "postgres.dsn", "PostgreSQL connection URL")
	c.bind(pf, "amqp-url", "amqp.url", "RabbitMQ connection URL")
	c.bind(pf, "amqp-prefix", "amqp.prefix", "prefix of exchange and queue names")
	c.bind(pf, "redis-addr", "redis.addr", "Redis address host:port")
	c.bind(pf, "redis-prefix", "redis.prefix", "prefix of Redis keys")
	c.bind(pf, "drain-timeout", "shutdown.drain_timeout", "how long to drain in-flight work on SIGTERM")
	c.bind(pf, "migrate", "postgres.migrate_on_start", "apply pending migrations at start (true, false)")

	root.AddCommand(
		c.serveCommand(),
		c.workerCommand(),
		c.schedulerCommand(),
		c.cancellerCommand(),
		c.allCommand(),
		c.migrateCommand(),
		c.configCommand(),
		c.keysCommand(),
		versionCommand(),
		c.deadLetterCommand(),
		c.retentionCommand(),
		c.demoCommand(),
	)
	// The operators' one-shot commands.
	root.AddCommand(c.opsCommands()...)
	root.AddCommand(c.participantCommands()...)
	return root
}

// bind registers a string flag whose value, when given, sets a config path.
// All flags are strings here so that one parser (config.Set) handles types
// and names the setting in its errors.
func (c *cli) bind(fs *pflag.FlagSet, flag, path, usage string) {
	fs.String(flag, "", usage+" ("+path+")")
	c.flagPaths[flag] = path
}

// load builds the effective configuration for cmd: defaults < file < env <
// flags. base adjusts the defaults for one command (e.g. `all` migrates at start).
func (c *cli) load(cmd *cobra.Command, base ...func(*config.Config)) (config.Config, error) {
	path := c.configPath
	if path == "" {
		for _, kv := range c.environ {
			if v, ok := strings.CutPrefix(kv, "GDPR_CONFIG="); ok {
				path = v
			}
		}
	}
	defaults := config.Default()
	for _, b := range base {
		b(&defaults)
	}
	cfg, err := config.Load(defaults, path, c.environ)
	if err != nil {
		return cfg, err
	}
	var setErr error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		p, ok := c.flagPaths[f.Name]
		if !ok || setErr != nil {
			return
		}
		setErr = cfg.Set(p, f.Value.String())
	})
	if setErr != nil {
		return cfg, setErr
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// newLogger builds the process logger: JSON (or text) to stdout, with
// request, message and trace ids taken from the context of each call.
func newLogger(cfg config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(trace.NewHandler(h))
}

// signalContext returns a context that ends on the first SIGTERM or SIGINT
// and a channel closed on the second one, so an operator can cut a slow drain
// short. Without it the second signal would be swallowed: once Notify is
// registered, the default "terminate" action no longer applies.
func signalContext(ctx context.Context) (context.Context, <-chan struct{}, func()) {
	ctx, cancel := context.WithCancel(ctx)
	force := make(chan struct{})
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
		case <-done:
			return
		}
		cancel()
		select {
		case <-sig:
			close(force)
		case <-done:
		}
	}()
	stop := func() {
		signal.Stop(sig)
		close(done)
		cancel()
	}
	return ctx, force, stop
}

func versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "gdpr", Version)
			return err
		},
	}
}
