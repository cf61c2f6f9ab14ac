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
	"github.com/gdpr-oss/gdpr/modules/bus"
	"github.com/gdpr-oss/gdpr/modules/db"
	"github.com/gdpr-oss/gdpr/modules/health"
	"github.com/gdpr-oss/gdpr/modules/lock"
	"github.com/gdpr-oss/gdpr/modules/report"
	"github.com/gdpr-oss/gdpr/modules/scheduler"
)

// infra is what the roles of one process share: connections, the metrics
// registry and the logger. Roles get their dependencies from it and nothing else.
type infra struct {
	cfg       config.Config
	logger    *slog.Logger
	registry  *prometheus.Registry
	db        *gorm.DB
	bus       *bus.Conn
	publisher *bus.Publisher
	redis     *redis.Client
	locker    *lock.Locker
	outbox    *scheduler.Store
	// devKeyWarning makes the development-key warning once per process,
	// however many report builders its roles make.
	devKeyWarning sync.Once
}

// newReportBuilder is report.New for the roles of this process; it warns
// about the development key once, not once per role.
func (in *infra) newReportBuilder(cfg config.Report, reg prometheus.Registerer) (*report.Builder, error) {
	in.devKeyWarning.Do(func() { report.WarnDevelopmentKey(cfg, in.logger.With("module", "report")) })
	return report.New(cfg, in.logger.With("module", "report"), reg)
}

// openInfra connects to PostgreSQL, RabbitMQ and Redis. Migrations run first
// when configured.
func openInfra(ctx context.Context, cfg config.Config, logger *slog.Logger, role string) (*infra, error) {
	in := &infra{cfg: cfg, logger: logger, registry: prometheus.NewRegistry()}
	in.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if cfg.Postgres.MigrateOnStart {
		if err := migrateUp(ctx, cfg.Postgres.DSN, logger); err != nil {
			return nil, err
		}
	}
	gdb, err := db.Open(ctx, cfg.Postgres)
	if err != nil {
		return nil, err
	}
	in.db = gdb
	in.outbox = scheduler.NewStore(gdb)
	host, _ := os.Hostname()
	conn, err := bus.Dial(ctx, cfg.AMQP, fmt.Sprintf("gdpr-%s-%s-%d", role, host, os.Getpid()), topology(cfg), logger,
		bus.WithMetrics(bus.NewMetrics(in.registry)))
	if err != nil {
		in.close()
		return nil, err
	}
	in.bus = conn
	in.publisher = bus.NewPublisher(conn)
	in.redis = redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Password: cfg.Redis.Password, DB: cfg.Redis.DB})
	if err := in.redis.Ping(ctx).Err(); err != nil {
		in.close()
		return nil, fmt.Errorf("connecting to redis %s: %w", cfg.Redis.Addr, err)
	}
	in.locker = lock.NewLocker(in.redis, cfg.Redis.Prefix+"lock:", logger)
	return in, nil
}

func (in *infra) checks() map[string]health.Checker {
	return map[string]health.Checker{
		"postgres": db.Checker{DB: in.db},
		"rabbitmq": in.bus,
		"redis":    health.CheckFunc(func(ctx context.Context) error { return in.redis.Ping(ctx).Err() }),
	}
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
