package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/config"
)

func TestCancellerValidationNamesTheSetting(t *testing.T) {
	t.Parallel()
	ok := config.Participant{Name: "billing", Kind: "amqp"}
	cases := []struct {
		name string
		edit func(c *config.Canceller)
		want string
	}{
		{"silent too long before overdue", func(c *config.Canceller) {
			c.ConfirmTimeout = 24 * time.Hour
			c.MaxResends = 20
			c.MaxBackoff = 48 * time.Hour
		}, "canceller.max_resends"},
		{"negative resends", func(c *config.Canceller) { c.MaxResends = -1 }, "canceller.max_resends"},
		{"zero retry backoff", func(c *config.Canceller) { c.RetryBackoff = 0 }, "canceller.retry_backoff"},
		{"zero concurrency", func(c *config.Canceller) { c.Concurrency = 0 }, "canceller.concurrency"},
		{"negative email delay", func(c *config.Canceller) { c.EmailDelay = -time.Second }, "canceller.email_delay"},
		{"name with a dot", func(c *config.Canceller) { c.Participants = []config.Participant{{Name: "a.b", Kind: "amqp"}} }, "canceller.participants[0].name"},
		{"duplicate name", func(c *config.Canceller) { c.Participants = []config.Participant{ok, ok} }, "canceller.participants[1].name"},
		{"unknown kind", func(c *config.Canceller) { c.Participants = []config.Participant{{Name: "x", Kind: "smtp"}} }, "canceller.participants[0].kind"},
		{"two email systems", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "m1", Kind: "email"}, {Name: "m2", Kind: "email"}}
		}, "canceller.participants[1].kind"},
		{"http without url", func(c *config.Canceller) { c.Participants = []config.Participant{{Name: "api", Kind: "http"}} }, "canceller.participants[0].url"},
		{"http url not http", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "ftp://x/{subject_id}"}}
		}, "canceller.participants[0].url"},
		{"http url without placeholder", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://x/customers/"}}
		}, "canceller.participants[0].url must use {subject_id} or {subject_email}"},
		{"http url with only the request id", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://x/erasures/{request_id}"}}
		}, "canceller.participants[0].url must use {subject_id} or {subject_email}"},
		{"http placeholder in the host", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://{subject_id}.x/users"}}
		}, "canceller.participants[0].url"},
		{"http placeholder as a query name", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://x/users?{subject_email}"}}
		}, "canceller.participants[0].url"},
		{"http bad method", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://x/{subject_id}", Method: "FETCH"}}
		}, "canceller.participants[0].method"},
		{"http non-2xx expected", func(c *config.Canceller) {
			c.Participants = []config.Participant{{Name: "api", Kind: "http", URL: "https://x/{subject_id}", ExpectedStatuses: []int{404}}}
		}, "canceller.participants[0].expected_statuses"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			tc.edit(&cfg.Canceller)
			err := cfg.Validate()
			require.ErrorIs(t, err, config.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestCancellerDefaultsMakeOverdueWellBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	c := config.Default().Canceller
	require.NoError(t, config.Default().Validate())
	require.Equal(t, 72*time.Hour, c.EmailDelay)
	require.Less(t, c.OverdueAfter(), 7*24*time.Hour)
	require.Equal(t, time.Hour, c.ResendWait(1))
	require.Equal(t, 2*time.Hour, c.ResendWait(2))
	require.Equal(t, c.MaxBackoff, c.ResendWait(30))
	require.Equal(t, c.RetryBackoff*4, c.RetryWait(3))
}

func TestCancellerParticipantsFromEnvironment(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(config.Default(), "", []string{
		`GDPR_CANCELLER_PARTICIPANTS=[{name: billing, kind: amqp}, {name: api, kind: http, url: "https://x/{subject_id}", timeout: 3s, expected_statuses: [204]}]`,
		"GDPR_CANCELLER_EMAIL_DELAY=1m",
	})
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())
	require.Equal(t, []config.Participant{
		{Name: "billing", Kind: "amqp"},
		{Name: "api", Kind: "http", URL: "https://x/{subject_id}", Timeout: 3 * time.Second, ExpectedStatuses: []int{204}},
	}, cfg.Canceller.Participants)
	require.Equal(t, time.Minute, cfg.Canceller.EmailDelay)
}
