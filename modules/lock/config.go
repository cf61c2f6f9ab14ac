package lock

import (
	"errors"
	"fmt"
	"time"
)

// Config is the lock section: distributed locks and PostgreSQL leases.
type Config struct {
	TTL time.Duration `yaml:"ttl"`
}

// DefaultConfig is a TTL long enough to ride out a slow renewal.
func DefaultConfig() Config { return Config{TTL: 30 * time.Second} }

// Validate names the bad setting in full (lock.ttl).
func (c Config) Validate() error {
	if c.TTL < time.Second {
		return fmt.Errorf("lock.ttl must be >= 1s, got %s", c.TTL)
	}
	return nil
}

// RedisConfig is the redis section: the Redis client used for locks.
type RedisConfig struct {
	Addr     string `yaml:"addr"`
	Password string `yaml:"password" secret:"true"`
	DB       int    `yaml:"db"`
	// Prefix is prepended to every key this service writes.
	Prefix string `yaml:"prefix"`
}

// DefaultRedisConfig works against a local Redis.
func DefaultRedisConfig() RedisConfig {
	return RedisConfig{Addr: "127.0.0.1:6379", Prefix: "gdpr:"}
}

// Validate names the bad setting in full (redis.…).
func (c RedisConfig) Validate() error {
	if c.Addr == "" {
		return errors.New("redis.addr must be set")
	}
	return nil
}
