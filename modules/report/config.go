package report

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gdpr-oss/gdpr/modules/source"
)

// DevEncryptionKey is the report encryption key used when none is configured.
// It is public (it is in the source code), so reports encrypted with it are
// NOT protected at rest: it exists only so `make run` works out of the box.
// Operators must set report.encryption_key (GDPR_REPORT_ENCRYPTION_KEY); the
// report builder logs a warning while this key is in use.
const DevEncryptionKey = "646576656c6f706d656e742d6f6e6c792d6b65792d6e6f742d7365637265742e" // "development-only-key-not-secret."

// ErrBadKey marks an encryption key that is not 32 bytes in hex or base64.
var ErrBadKey = errors.New("must be 32 bytes as 64 hex characters or base64")

// Config is the report section: access report building and storage.
type Config struct {
	// StorageDir is where finished (encrypted) reports are kept.
	StorageDir string `yaml:"storage_dir"`
	// SpoolDir holds the short-lived encrypted spool files a build writes
	// while it reads the sources (default: the system temp directory). The
	// files are unlinked as soon as they are created, so a crash leaves none.
	SpoolDir string `yaml:"spool_dir"`
	// EncryptionKey encrypts reports at rest (32 bytes, hex or base64); it is
	// the active key, the one new reports are encrypted with.
	EncryptionKey string `yaml:"encryption_key" secret:"true"`
	// PreviousEncryptionKeys are former encryption keys (same format): reports
	// encrypted with them still open, so a key can be rotated without
	// rebuilding reports. Remove a key once no stored report needs it.
	PreviousEncryptionKeys []string `yaml:"previous_encryption_keys" secret:"true"`
	// Retention is how long a report is kept after it was built: the
	// download link's lifetime (serve.download_ttl) plus a grace period.
	// Then the retention sweeper deletes it and its link answers 410 Gone.
	Retention time.Duration `yaml:"retention"`
	// SourceTimeout bounds reading one source when it sets no timeout of its own.
	SourceTimeout time.Duration `yaml:"source_timeout"`
	// SourceConcurrency is how many sources of one report are read at once.
	SourceConcurrency int `yaml:"source_concurrency"`
	// CompressConcurrency is how many goroutines beside a source's reader
	// encode and compress its JSON and CSV files while it is read: 0 (the
	// reader does it), 1, or 2 (one per file). Each holds a compressor and
	// the reader runs at most 4 batches of 64 KiB ahead of them.
	CompressConcurrency int `yaml:"compress_concurrency"`
	// MaxResponseBytes bounds one http source response or one Elasticsearch page; past it the read fails with source_too_large.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`
	// MaxValueBytes bounds one JSON value in a source response (a record, or a member skipped on the way to records_path); past it the read fails with source_too_large.
	MaxValueBytes int64 `yaml:"max_value_bytes"`
	// Sources are read for every access report.
	Sources []source.Config `yaml:"sources"`
}

// DefaultConfig stores reports under ./var/reports, encrypted with the
// public development key (WarnDevelopmentKey, config.CheckSecretKeys).
func DefaultConfig() Config {
	return Config{
		StorageDir:    "./var/reports",
		EncryptionKey: DevEncryptionKey,
		// serve.download_ttl (7 days) plus 7 days' grace.
		Retention:           14 * 24 * time.Hour,
		SourceTimeout:       2 * time.Minute,
		SourceConcurrency:   4,
		CompressConcurrency: 2,
		MaxResponseBytes:    256 << 20,
		MaxValueBytes:       8 << 20,
	}
}

// ParseEncryptionKey decodes a 32-byte key given as hex (64 characters) or
// standard/URL base64.
func ParseEncryptionKey(s string) ([]byte, error) {
	return parseEncryptionKey("report.encryption_key", s)
}

func parseEncryptionKey(setting, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, fmt.Errorf("%s %w", setting, ErrBadKey)
}

// Keys decodes the encryption keys, the active key (encryption_key) first
// and then the previous ones in the order given.
func (c Config) Keys() ([][]byte, error) {
	active, err := ParseEncryptionKey(c.EncryptionKey)
	if err != nil {
		return nil, err
	}
	keys := [][]byte{active}
	for i, s := range c.PreviousEncryptionKeys {
		k, err := parseEncryptionKey("report.previous_encryption_keys["+strconv.Itoa(i)+"]", s)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Validate names the first bad setting in full (report.…). That reports
// outlive their links (report.retention >= serve.download_ttl) spans two
// sections and is config's check.
func (c Config) Validate() error {
	if c.StorageDir == "" {
		return errors.New("report.storage_dir must be set")
	}
	if _, err := c.Keys(); err != nil {
		return err
	}
	if c.SourceTimeout <= 0 {
		return fmt.Errorf("report.source_timeout must be > 0, got %s", c.SourceTimeout)
	}
	if c.SourceConcurrency < 1 {
		return fmt.Errorf("report.source_concurrency must be >= 1, got %d", c.SourceConcurrency)
	}
	if c.CompressConcurrency < 0 || c.CompressConcurrency > 2 {
		return fmt.Errorf("report.compress_concurrency must be 0, 1 or 2, got %d", c.CompressConcurrency)
	}
	if c.MaxValueBytes < 1024 {
		return fmt.Errorf("report.max_value_bytes must be >= 1024, got %d", c.MaxValueBytes)
	}
	if c.MaxResponseBytes < c.MaxValueBytes {
		return fmt.Errorf("report.max_response_bytes must be >= report.max_value_bytes (%d), got %d", c.MaxValueBytes, c.MaxResponseBytes)
	}
	// Names are files of one archive: seen holds only names that passed
	// source.ValidName, so a repeat is reported where it was before.
	seen := map[string]bool{}
	for i, s := range c.Sources {
		path := "report.sources[" + strconv.Itoa(i) + "]"
		if seen[s.Name] {
			return fmt.Errorf("%s.name must be unique, %q repeats", path, s.Name)
		}
		if err := s.Validate(path); err != nil {
			return err
		}
		seen[s.Name] = true
	}
	return nil
}
