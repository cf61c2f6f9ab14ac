package app

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/notify"
	"github.com/gdpr-oss/gdpr/modules/requests"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestTracesReachTheOTLPCollector runs `gdpr all` exporting to an in-process
// OTLP/HTTP collector: one access and one erasure request leave spans for
// the HTTP intake, every consumer handler, the report's source read and the
// participant calls, all in the caller's trace, none naming the subject.
func TestTracesReachTheOTLPCollector(t *testing.T) {
	t.Parallel()
	rcv := testkit.NewOTLPReceiver(t)
	r := startOpsRun(t, "GDPR_TELEMETRY_OTLP_ENDPOINT="+rcv.URL)
	tag := testkit.ID()
	access := opsSubject{id: "otlp-" + tag + "-a", email: "otlp." + tag + ".a@example.org", name: "Tracy Spanner" + tag}
	erasure := opsSubject{id: "otlp-" + tag + "-e", email: "otlp." + tag + ".e@example.org", name: "Erin Spanner" + tag}
	for _, s := range []opsSubject{access, erasure} {
		require.NoError(t, r.gdb.Exec(`INSERT INTO crm_customers VALUES (?, ?, ?, 'basic')`, s.id, s.email, s.name).Error)
	}
	accessID := r.submit(t, event.KindAccess, access)
	erasureID := r.submit(t, event.KindErasure, erasure)
	testkit.Eventually(t, 120*time.Second, func() bool {
		return r.state(t, accessID) == "completed" && r.state(t, erasureID) == "completed"
	}, "both requests completed")
	testkit.Eventually(t, 60*time.Second, func() bool {
		n, err := r.mail.Count(t.Context())
		return err == nil && n == 2
	}, "both emails sent")

	// Stopping flushes what is still batched.
	r.proc.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, r.proc.exitCode(t, exitBound))

	spans := rcv.Spans()
	require.NotEmpty(t, spans)
	seen := map[spanKey]int{}
	for _, s := range spans {
		require.Equal(t, callerTraceID, s.TraceID, "span %s is in the caller's trace", s.Name)
		require.Equal(t, "gdpr", s.Resource["service.name"])
		require.Equal(t, "all", s.Resource["gdpr.role"])
		seen[spanKey{s.Name, s.Attributes["gdpr.request_id"]}]++
		for _, pd := range []string{access.id, access.email, access.name, erasure.id, erasure.email, erasure.name, "@example.org"} {
			require.NotContains(t, s.Name, pd)
			for k, v := range s.Attributes {
				require.NotContains(t, v, pd, "span %s attribute %s", s.Name, k)
			}
		}
	}
	for _, want := range []spanKey{
		{"POST /v1/requests", accessID},
		{"POST /v1/requests", erasureID},
		{"GET /v1/requests/{id}", accessID},
		{"process " + requests.Consumer, accessID},
		{"report.build", accessID},
		{"source.read crm", ""},
		{"process " + notify.Consumer, accessID},
		{"process audit", accessID},
		{"process " + requests.Consumer, erasureID},
		{"process canceller", erasureID},
		{"erasure.call partner", erasureID},
		{"erasure.command billing", erasureID},
		{"erasure.command mailer", erasureID},
		{"process " + notify.Consumer, erasureID},
	} {
		require.NotZero(t, seen[want], "a span %q for request %q among %s", want.name, want.request, names(seen))
	}

	// The caller's span is the intake span's parent.
	var intake int
	for _, s := range spans {
		if s.Name == "POST /v1/requests" {
			intake++
			require.Equal(t, "00f067aa0ba902b7", s.ParentSpanID)
			require.Equal(t, "202", s.Attributes["http.response.status_code"])
		}
	}
	require.Equal(t, 2, intake)
}

// spanKey is a span's name and the request it names, if any.
type spanKey struct{ name, request string }

func names(m map[spanKey]int) string {
	var b strings.Builder
	for k := range m {
		fmt.Fprintf(&b, "\n  %q %s", k.name, k.request)
	}
	return b.String()
}
