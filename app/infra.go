package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/api"
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/outbox"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
	"github.com/gdpr-oss/gdpr/modules/selfservice"
)

// infra is what the modules of one process share: the connections the
// service modules opened, the metrics registry, the logger, and what one
// module provides to the modules that depend on it. A connection is nil
// when no module of the role needs it.
type infra struct {
	cfg       config.Config
	logger    *slog.Logger
	role      string
	registry  *prometheus.Registry
	topology  bus.Topology
	db        *gorm.DB
	bus       *bus.Conn
	publisher *bus.Publisher
	redis     *redis.Client
	locker    *lock.Locker
	// scheduled holds delayed messages (modules/scheduler), outbox the
	// messages published at once (modules/outbox).
	scheduled *scheduler.Store
	outbox    *outbox.Store
	// intake and adminRoutes are what the intake and admin modules provide
	// to the api module.
	intake      *intake.Service
	adminRoutes []api.AdminRoute
	// privacy is the self-service page (nil unless privacy.enabled).
	privacy *selfservice.Service
	// devKeyWarning makes the development-key warning once per process,
	// however many report builders its modules make.
	devKeyWarning sync.Once
}

func newInfra(cfg config.Config, logger *slog.Logger, role string, topology bus.Topology) *infra {
	in := &infra{cfg: cfg, logger: logger, role: role, registry: prometheus.NewRegistry(), topology: topology}
	in.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return in
}

// newReportBuilder is report.New for the modules of this process; it warns
// about the development key once, not once per module.
func (in *infra) newReportBuilder(cfg report.Config, reg prometheus.Registerer) (*report.Builder, error) {
	in.devKeyWarning.Do(func() { report.WarnDevelopmentKey(cfg, in.logger.With("module", "report")) })
	return report.New(cfg, in.logger.With("module", "report"), reg)
}

// openPostgres connects to PostgreSQL (the postgres module). Migrations run
// first when configured.
func (in *infra) openPostgres(ctx context.Context) error {
	if in.cfg.Postgres.MigrateOnStart {
		if err := migrateUp(ctx, in.cfg.Postgres.DSN, in.logger); err != nil {
			return err
		}
	}
	gdb, err := db.Open(ctx, in.cfg.Postgres)
	if err != nil {
		return err
	}
	in.db = gdb
	in.scheduled = scheduler.NewStore(gdb)
	in.outbox = outbox.NewStore(gdb)
	return nil
}

// dialAMQP connects to RabbitMQ (the amqp module) and declares the whole
// topology, again after every reconnect.
func (in *infra) dialAMQP(ctx context.Context) error {
	host, _ := os.Hostname()
	conn, err := bus.Dial(ctx, in.cfg.AMQP, fmt.Sprintf("gdpr-%s-%s-%d", in.role, host, os.Getpid()), in.topology, in.logger,
		bus.WithMetrics(bus.NewMetrics(in.registry)))
	if err != nil {
		return err
	}
	in.bus = conn
	in.publisher = bus.NewPublisher(conn)
	return nil
}

// dialRedis connects to Redis (the redis module): the intake's idempotency
// keys and the requests manager's locks.
func (in *infra) dialRedis(ctx context.Context) error {
	cfg := in.cfg.Redis
	in.redis = redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password, DB: cfg.DB})
	if err := in.redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("connecting to redis %s: %w", cfg.Addr, err)
	}
	in.locker = lock.NewLocker(in.redis, cfg.Prefix+"lock:", in.logger)
	return nil
}

// checks are the readiness checks of the services this process connected
// to: a service no module needs cannot make the role unready.
func (in *infra) checks() map[string]health.Checker {
	checks := map[string]health.Checker{}
	if in.db != nil {
		checks["postgres"] = db.Checker{DB: in.db}
	}
	if in.bus != nil {
		checks["rabbitmq"] = in.bus
	}
	if in.redis != nil {
		checks["redis"] = health.CheckFunc(func(ctx context.Context) error { return in.redis.Ping(ctx).Err() })
	}
	return checks
}

func (in *infra) close() error {
	var errs []error
	if in.publisher != nil {
		errs = append(errs, in.publisher.Close())
	}
	if in.bus != nil {
		errs = append(errs, in.bus.Close())
	}
	if in.redis != nil {
		errs = append(errs, in.redis.Close())
	}
	if in.db != nil {
		if sqlDB, err := in.db.DB(); err == nil {
			errs = append(errs, sqlDB.Close())
		}
	}
	return errors.Join(errs...)
}

func migrateUp(ctx context.Context, dsn string, logger *slog.Logger) error {
	if err := db.EnsureDatabase(ctx, dsn); err != nil {
		return err
	}
	m, err := db.NewMigrator(dsn)
	if err != nil {
		return err
	}
	defer m.Close()
	return m.Up(ctx, logger)
}
