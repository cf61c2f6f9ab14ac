// Package migrations embeds the numbered SQL files that are the only way the
// schema changes. Numbers are grouped by module: 001-009 core, 010-019
// requests and reports, 020-029 scheduler, 030-039 erasure, 040-049 audit
// and operations, 060-069 the data lifecycle (gdpr erasing its own copy,
// retention), 070-079 the operator console.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
