package config

import (
	"strconv"
	"time"
)

// Report configures access report building and storage.
type Report struct {
	// StorageDir is where finished (encrypted) reports are kept.
	StorageDir string `yaml:"storage_dir"`
	// EncryptionKey encrypts reports at rest (32 bytes, hex or base64).
	EncryptionKey string `yaml:"encryption_key" secret:"true"`
	// Sources are read for every access report.
	Sources []Source `yaml:"sources"`
}

// Source is one place personal data is read from for an access report.
type Source struct {
	Name string `yaml:"name"`
	// Kind is postgres, mysql, http or elasticsearch.
	Kind    string        `yaml:"kind"`
	Timeout time.Duration `yaml:"timeout"`
	// DSN is used by the postgres and mysql kinds.
	DSN string `yaml:"dsn" secret:"true"`
	// Query is SQL with named parameters @subject_id and @email, or an
	// Elasticsearch query body template.
	Query string `yaml:"query"`
	// URL is a template with {subject_id} and {email} for http and elasticsearch.
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// Body is an optional request body template for http sources.
	Body string `yaml:"body"`
	// AuthHeader is sent as Authorization on http and elasticsearch sources.
	AuthHeader string `yaml:"auth_header" secret:"true"`
	// Index is the Elasticsearch index pattern.
	Index string `yaml:"index"`
}

func defaultReport() Report {
	return Report{StorageDir: "./var/reports"}
}

func (r Report) validate() error {
	if r.StorageDir == "" {
		return invalid("report.storage_dir", "must be set")
	}
	seen := map[string]bool{}
	for i, s := range r.Sources {
		switch {
		case s.Name == "":
			return invalid("report.sources["+strconv.Itoa(i)+"].name", "must be set")
		case seen[s.Name]:
			return invalid("report.sources["+strconv.Itoa(i)+"].name", "must be unique, %q repeats", s.Name)
		}
		seen[s.Name] = true
		switch s.Kind {
		case "postgres", "mysql", "http", "elasticsearch":
		default:
			return invalid("report.sources["+strconv.Itoa(i)+"].kind", "must be postgres, mysql, http or elasticsearch, got %q", s.Kind)
		}
	}
	return nil
}
