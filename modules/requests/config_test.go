package requests_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/requests"
)

func TestWorkerConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, requests.DefaultWorkerConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*requests.WorkerConfig)
		want string
	}{
		{func(c *requests.WorkerConfig) { c.AdminAddr = "" }, "worker.admin_addr must be set"},
		{func(c *requests.WorkerConfig) { c.Concurrency = 0 }, "worker.concurrency must be >= 1, got 0"},
		{func(c *requests.WorkerConfig) { c.ReceiveConcurrency = 0 }, "worker.receive_concurrency must be >= 1, got 0"},
		{func(c *requests.WorkerConfig) { c.PollInterval = 0 }, "worker.poll_interval must be > 0, got 0s"},
		{func(c *requests.WorkerConfig) { c.MaxAttempts = 0 }, "worker.max_attempts must be >= 1, got 0"},
		{func(c *requests.WorkerConfig) { c.BackoffBase = 0 }, "worker.backoff_base must be > 0, got 0s"},
		{func(c *requests.WorkerConfig) { c.BackoffMax = c.BackoffBase / 2 }, "worker.backoff_max must be >= worker.backoff_base, got 1s"},
		{func(c *requests.WorkerConfig) { c.ErasureWait = 0 }, "worker.erasure_wait must be > 0, got 0s"},
		{func(c *requests.WorkerConfig) { c.SweepInterval = 0 }, "worker.sweep_interval must be > 0, got 0s"},
		{func(c *requests.WorkerConfig) { c.SweepAge = 0 }, "worker.sweep_age must be > 0, got 0s"},
	}
	for _, tc := range cases {
		c := requests.DefaultWorkerConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
