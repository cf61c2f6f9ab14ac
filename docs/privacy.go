package docs

import (
	_ "embed"
	"errors"
	"fmt"
	"path"
	"strings"
)

//go:embed privacy.md
var privacyMD string

// Place is one row of docs/privacy.md's record of processing: one kind of
// place where gdpr keeps personal data.
type Place struct {
	// Kind is table, files, queue, redis, logs or email.
	Kind string
	// Keys are the backticked names of its "where" cell: table.column for
	// tables, key patterns (after the installation's prefix) for Redis.
	Keys         []string
	Data         string
	KeptFor      string
	RemovedBy    string
	AfterErasure string
}

// KeptAfterErasure reports whether the record says the data may stay once
// the subject's erasure completed.
func (p Place) KeptAfterErasure() bool { return strings.HasPrefix(p.AfterErasure, "kept") }

// placeKind reports whether k is a kind of place in the record of processing.
func placeKind(k string) bool {
	switch k {
	case "table", "files", "queue", "redis", "logs", "email":
		return true
	}
	return false
}

// RecordOfProcessing parses the table of docs/privacy.md.
func RecordOfProcessing() ([]Place, error) { return parseRecord(privacyMD) }

func parseRecord(md string) ([]Place, error) {
	_, rest, ok := strings.Cut(md, "<!-- record-of-processing:begin")
	if !ok {
		return nil, errors.New("docs/privacy.md: no record-of-processing:begin marker")
	}
	body, _, ok := strings.Cut(rest, "<!-- record-of-processing:end -->")
	if !ok {
		return nil, errors.New("docs/privacy.md: no record-of-processing:end marker")
	}
	var out []Place
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") || strings.HasPrefix(line, "|---") || strings.HasPrefix(line, "| kind ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 6 {
			return nil, fmt.Errorf("docs/privacy.md: row %q has %d cells, want 6", line, len(cells))
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		p := Place{Kind: cells[0], Data: cells[2], KeptFor: cells[3], RemovedBy: cells[4], AfterErasure: cells[5]}
		if !placeKind(p.Kind) {
			return nil, fmt.Errorf("docs/privacy.md: row %q: unknown kind %q", line, p.Kind)
		}
		parts := strings.Split(cells[1], "`")
		for i := 1; i < len(parts); i += 2 {
			p.Keys = append(p.Keys, parts[i])
		}
		if len(p.Keys) == 0 || p.KeptFor == "" || p.RemovedBy == "" || p.AfterErasure == "" {
			return nil, fmt.Errorf("docs/privacy.md: row %q needs a backticked place, a lifetime, what removes it and what an erasure does", line)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("docs/privacy.md: the record of processing is empty")
	}
	return out, nil
}

// Find returns the place of kind listing key: a table column
// ("requests.subject_id"), or a Redis key without the installation's
// prefix, matched against the listed patterns ("intake:idem:*").
func Find(places []Place, kind, key string) (Place, bool) {
	for _, p := range places {
		if p.Kind != kind {
			continue
		}
		for _, k := range p.Keys {
			pattern := strings.TrimPrefix(k, "<prefix>")
			if ok, _ := path.Match(pattern, key); ok || pattern == key {
				return p, true
			}
		}
	}
	return Place{}, false
}
