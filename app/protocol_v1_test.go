package app

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestProtocolV1PythonParticipantErasesASubjectWithPhoneAndIdentifiers runs
// gdpr all with docs/examples/participant-python, a participant written
// against protocol v1 before subjects had a phone number or named
// identifiers, as its only participant. An erasure whose subject has both
// besides its id and email completes: the participant reads the id it
// knows, erases, and its confirmation is accepted as before.
func TestProtocolV1PythonParticipantErasesASubjectWithPhoneAndIdentifiers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs gdpr all and a python participant")
	}
	py := pythonWithPika(t)
	run := startOpsRun(t, "GDPR_CANCELLER_PARTICIPANTS=[{name: newsletter, kind: amqp}]", "GDPR_SERVE_IDENTIFIERS=loyalty_card")

	pout := startPythonParticipant(t, py, run.cfg.AMQP.URL, run.cfg.AMQP.Prefix, "newsletter")

	// The example's one subscriber is user-1 (jane@example.com).
	code, body := run.do(t, http.MethodPost, "/v1/requests", opsAPIToken, map[string]any{
		"type": "erasure",
		"subject": map[string]any{
			"id": "user-1", "email": "jane@example.com", "phone": "+4915112345678",
			"identifiers": map[string]string{"loyalty_card": "LC-991"},
		},
	})
	require.Equal(t, http.StatusAccepted, code, "%s", body)
	var accepted struct{ ID string }
	require.NoError(t, json.Unmarshal(body, &accepted))

	testkit.Eventually(t, 90*time.Second, func() bool { return run.storedState(t, accepted.ID) == "completed" },
		"the erasure completed (state %s)", run.storedState(t, accepted.ID))
	var participant struct{ State, LastOutcome string }
	require.NoError(t, run.gdb.Raw(`SELECT state, last_outcome FROM erasure_participants WHERE request_id = ? AND participant = 'newsletter'`,
		accepted.ID).Scan(&participant).Error)
	require.Equal(t, "erased", participant.State, "the v1 participant found the subject by the id it knows")
	require.NotContains(t, pout.String(), "unroutable")
}
