package db

import (
	"errors"
	"fmt"
)

// Config is the postgres section: the service's own database.
type Config struct {
	DSN          string `yaml:"dsn" secret:"true"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	// MigrateOnStart applies pending migrations when a role starts (on for `all`).
	MigrateOnStart bool `yaml:"migrate_on_start"`
}

// DefaultConfig works against a local PostgreSQL.
func DefaultConfig() Config {
	return Config{
		DSN:          "postgres://root@127.0.0.1:5432/gdpr?sslmode=disable",
		MaxOpenConns: 20,
	}
}

// Validate reports every bad setting, each named by its full path (postgres.…).
func (c Config) Validate() error {
	var errs []error
	if c.DSN == "" {
		errs = append(errs, errors.New("postgres.dsn must be set"))
	}
	if c.MaxOpenConns < 1 {
		errs = append(errs, fmt.Errorf("postgres.max_open_conns must be >= 1, got %d", c.MaxOpenConns))
	}
	return errors.Join(errs...)
}
