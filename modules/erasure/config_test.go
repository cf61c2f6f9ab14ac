package erasure_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	ok := erasure.Participant{Name: "billing", Kind: "amqp"}
	cases := []struct {
		name string
		edit func(c *erasure.Config)
		want string
	}{
		{"silent too long before overdue", func(c *erasure.Config) {
			c.ConfirmTimeout = 24 * time.Hour
			c.MaxResends = 20
			c.MaxBackoff = 48 * time.Hour
		}, "canceller.max_resends"},
		{"negative resends", func(c *erasure.Config) { c.MaxResends = -1 }, "canceller.max_resends"},
		{"zero retry backoff", func(c *erasure.Config) { c.RetryBackoff = 0 }, "canceller.retry_backoff"},
		{"zero concurrency", func(c *erasure.Config) { c.Concurrency = 0 }, "canceller.concurrency"},
		{"negative email delay", func(c *erasure.Config) { c.EmailDelay = -time.Second }, "canceller.email_delay"},
		{"name with a dot", func(c *erasure.Config) { c.Participants = []erasure.Participant{{Name: "a.b", Kind: "amqp"}} }, "canceller.participants[0].name"},
		{"duplicate name", func(c *erasure.Config) { c.Participants = []erasure.Participant{ok, ok} }, "canceller.participants[1].name"},
		{"unknown kind", func(c *erasure.Config) { c.Participants = []erasure.Participant{{Name: "x", Kind: "smtp"}} }, "canceller.participants[0].kind"},
		{"two email systems", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "m1", Kind: "email"}, {Name: "m2", Kind: "email"}}
		}, "canceller.participants[1].kind"},
		{"http without url", func(c *erasure.Config) { c.Participants = []erasure.Participant{{Name: "api", Kind: "http"}} }, "canceller.participants[0].url"},
		{"http url not http", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "ftp://x/{subject_id}"}}
		}, "canceller.participants[0].url"},
		{"requires an unknown identifier", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "shop", Kind: "amqp", Requires: []string{"subject_id", "phone"}}}
		}, `canceller.participants[0].requires[1] must be subject_id or subject_email, got "phone"`},
		{"http url without placeholder", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://x/customers/"}}
		}, "canceller.participants[0].url must use {subject_id}, {subject_email}, {phone} or {identifier.<name>}"},
		{"http url with only the request id", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://x/erasures/{request_id}"}}
		}, "canceller.participants[0].url must use {subject_id}, {subject_email}, {phone} or {identifier.<name>}"},
		{"http placeholder in the host", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://{subject_id}.x/users"}}
		}, "canceller.participants[0].url"},
		{"http placeholder as a query name", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://x/users?{subject_email}"}}
		}, "canceller.participants[0].url"},
		{"http bad method", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://x/{subject_id}", Method: "FETCH"}}
		}, "canceller.participants[0].method"},
		{"http non-2xx expected", func(c *erasure.Config) {
			c.Participants = []erasure.Participant{{Name: "api", Kind: "http", URL: "https://x/{subject_id}", ExpectedStatuses: []int{404}}}
		}, "canceller.participants[0].expected_statuses"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := erasure.DefaultConfig()
			tc.edit(&cfg)
			require.ErrorContains(t, cfg.Validate(), tc.want)
		})
	}
}

func TestDefaultConfigMakesOverdueWellBeforeTheDeadline(t *testing.T) {
	t.Parallel()
	c := erasure.DefaultConfig()
	require.NoError(t, c.Validate())
	require.Equal(t, 72*time.Hour, c.EmailDelay)
	require.Less(t, c.OverdueAfter(), 7*24*time.Hour)
	require.Equal(t, time.Hour, c.ResendWait(1))
	require.Equal(t, 2*time.Hour, c.ResendWait(2))
	require.Equal(t, c.MaxBackoff, c.ResendWait(30))
	require.Equal(t, c.RetryBackoff*4, c.RetryWait(3))
}

func TestCheckParticipantsWantsAnEmptyListDeclared(t *testing.T) {
	t.Parallel()
	c := erasure.DefaultConfig()
	require.ErrorContains(t, c.CheckParticipants(), "canceller.participants is empty")
	c.NoParticipants = true
	require.NoError(t, c.CheckParticipants())
	c = erasure.DefaultConfig()
	c.Participants = []erasure.Participant{{Name: "billing", Kind: "amqp"}}
	require.NoError(t, c.CheckParticipants())
}
