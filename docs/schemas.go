// Package docs holds gdpr's documentation. Its Go files are the JSON
// Schemas of the participant protocol, embedded for `gdpr participant
// check`, and the tests that keep the documentation in step with the code.
package docs

import "embed"

// Schemas holds schemas/*.json (the protocol's message bodies).
//
//go:embed schemas/*.json
var Schemas embed.FS
