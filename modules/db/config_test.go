package db_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/db"
)

func TestConfigValidateNamesTheSetting(t *testing.T) {
	t.Parallel()
	require.NoError(t, db.DefaultConfig().Validate(), "the defaults are valid")
	cases := []struct {
		edit func(*db.Config)
		want string
	}{
		{func(c *db.Config) { c.DSN = "" }, "postgres.dsn must be set"},
		{func(c *db.Config) { c.MaxOpenConns = 0 }, "postgres.max_open_conns must be >= 1, got 0"},
	}
	for _, tc := range cases {
		c := db.DefaultConfig()
		tc.edit(&c)
		require.EqualError(t, c.Validate(), tc.want)
	}
}
