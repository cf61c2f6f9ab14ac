package deadline_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/deadline"
)

func TestDueAtIsOneCalendarMonthInUTC(t *testing.T) {
	t.Parallel()
	auckland, err := time.LoadLocation("Pacific/Auckland")
	require.NoError(t, err)
	for _, tc := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2026, 3, 15, 10, 0, 0, 0, time.UTC), "2026-04-15T10:00:00Z"},
		{time.Date(2026, 1, 31, 23, 30, 0, 0, time.UTC), "2026-02-28T23:30:00Z"},
		{time.Date(2028, 1, 31, 12, 0, 0, 0, time.UTC), "2028-02-29T12:00:00Z"},
		{time.Date(2026, 1, 30, 23, 30, 0, 0, time.UTC), "2026-02-28T23:30:00Z"},
		{time.Date(2026, 2, 28, 23, 30, 0, 0, time.UTC), "2026-03-28T23:30:00Z"},
		{time.Date(2026, 12, 31, 8, 0, 0, 0, time.UTC), "2027-01-31T08:00:00Z"},
		// The same instant written in another zone has the same deadline.
		{time.Date(2026, 3, 1, 12, 30, 0, 0, auckland), "2026-03-28T23:30:00Z"},
	} {
		require.Equal(t, tc.want, deadline.DueAt(tc.in).Format(time.RFC3339), tc.in)
	}
}
