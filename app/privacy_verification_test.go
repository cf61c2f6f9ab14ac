package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// opsCaller is the caller name the API gives opsAPIToken, as
// privacy.require_verification lists callers.
func opsCaller() string { return digest(opsAPIToken)[:16] }

// auditedVerification is the request.received audit record of a request.
type auditedVerification struct {
	Method     string
	VerifiedAt time.Time
	Raw        string
}

func receivedAudit(t *testing.T, run *opsRun, requestID string) auditedVerification {
	t.Helper()
	var row struct{ Details string }
	testkit.Eventually(t, 60*time.Second, func() bool {
		err := run.gdb.Raw(`SELECT details::text AS details FROM audit_events WHERE request_id = ? AND type = 'request.received'`, requestID).Scan(&row).Error
		return err == nil && row.Details != ""
	}, "the audit record of %s's request.received", requestID)
	var d struct {
		Method     string `json:"verification_method"`
		VerifiedAt string `json:"verified_at"`
	}
	require.NoError(t, json.Unmarshal([]byte(row.Details), &d))
	at, err := time.Parse(time.RFC3339Nano, d.VerifiedAt)
	require.NoError(t, err, "verified_at in %s", row.Details)
	return auditedVerification{Method: d.Method, VerifiedAt: at, Raw: row.Details}
}

// checkVerificationsAudited is part of TestPrivacyPageInBrowser (its run
// lists the ops API token's caller in privacy.require_verification): the
// page's request is recorded as verified by email, at the time the code was
// confirmed; the API caller, required to say how it verified the subject, is
// refused without it (400 naming `verification`) and its statement is
// recorded with the request and in the audit log. No audit record of either
// request holds the subject's email or id.
func checkVerificationsAudited(t *testing.T, run *opsRun, pageRequestID string, pageVerifiedBy time.Time) {
	t.Helper()
	subject := map[string]string{"id": "c-api-verified", "email": "api.verified@example.com"}
	code, body := run.do(t, http.MethodPost, "/v1/requests", opsAPIToken, map[string]any{"type": "access", "subject": subject})
	require.Equal(t, http.StatusBadRequest, code, "%s", body)
	var problem struct{ Field string }
	require.NoError(t, json.Unmarshal(body, &problem))
	require.Equal(t, "verification", problem.Field, "%s", body)

	stated := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	code, body = run.do(t, http.MethodPost, "/v1/requests", opsAPIToken, map[string]any{
		"type": "access", "subject": subject,
		"verification": map[string]string{"method": "document", "verified_at": stated.Format(time.RFC3339)},
	})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var accepted struct{ ID string }
	require.NoError(t, json.Unmarshal(body, &accepted))

	api := receivedAudit(t, run, accepted.ID)
	require.Equal(t, "document", api.Method)
	require.True(t, stated.Equal(api.VerifiedAt), "verified_at %s, stated %s", api.VerifiedAt, stated)
	var row struct {
		VerificationMethod string
		VerifiedAt         time.Time
	}
	require.NoError(t, run.gdb.Raw(`SELECT verification_method, verified_at FROM requests WHERE id = ?`, accepted.ID).Scan(&row).Error)
	require.Equal(t, "document", row.VerificationMethod)
	require.True(t, stated.Equal(row.VerifiedAt))

	page := receivedAudit(t, run, pageRequestID)
	require.Equal(t, "email", page.Method)
	require.False(t, page.VerifiedAt.After(pageVerifiedBy), "verified_at %s is before the receipt was shown (%s)", page.VerifiedAt, pageVerifiedBy)
	require.WithinDuration(t, pageVerifiedBy, page.VerifiedAt, 2*time.Minute)

	var rows []string
	require.NoError(t, run.gdb.Raw(`SELECT details::text FROM audit_events WHERE request_id IN (?, ?)`, accepted.ID, pageRequestID).Scan(&rows).Error)
	require.NotEmpty(t, rows)
	all := strings.Join(rows, "\n")
	for _, pii := range []string{"api.verified@example.com", "c-api-verified", "ada@example.com", "c-4711"} {
		require.NotContains(t, all, pii, "the audit log holds no personal data")
	}
}
