package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
	"github.com/gdpr-oss/gdpr/modules/erasure"
)

func TestCancellerParticipantsFromEnvironment(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(config.Default(), "", []string{
		`GDPR_CANCELLER_PARTICIPANTS=[{name: billing, kind: amqp}, {name: api, kind: http, url: "https://x/{subject_id}", timeout: 3s, expected_statuses: [204]}]`,
		"GDPR_CANCELLER_EMAIL_DELAY=1m",
	})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, []erasure.Participant{
		{Name: "billing", Kind: "amqp"},
		{Name: "api", Kind: "http", URL: "https://x/{subject_id}", Timeout: 3 * time.Second, ExpectedStatuses: []int{204}},
	}, cfg.Canceller.Participants)
	require.Equal(t, time.Minute, cfg.Canceller.EmailDelay)
}
