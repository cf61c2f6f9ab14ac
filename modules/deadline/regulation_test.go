package deadline_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/deadline"
)

// TestRegulationClocks: due_at and the latest extended deadline of each
// regulation, month ends and leap years included.
func TestRegulationClocks(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	for _, tc := range []struct {
		name       string
		reg        deadline.Regulation
		received   string
		due        string
		extendedTo string // "" = no extension allowed
	}{
		{"gdpr mid-month", deadline.GDPR, "2026-03-15T10:00:00Z", "2026-04-15T10:00:00Z", "2026-06-15T10:00:00Z"},
		{"gdpr 31 January", deadline.GDPR, "2026-01-31T23:30:00Z", "2026-02-28T23:30:00Z", "2026-04-28T23:30:00Z"},
		{"gdpr leap year", deadline.GDPR, "2028-01-31T12:00:00Z", "2028-02-29T12:00:00Z", "2028-04-29T12:00:00Z"},
		{"gdpr 31 March", deadline.GDPR, "2026-03-31T08:00:00Z", "2026-04-30T08:00:00Z", "2026-06-30T08:00:00Z"},
		{"gdpr extension over the year end to February", deadline.GDPR, "2026-11-30T08:00:00Z", "2026-12-30T08:00:00Z", "2027-02-28T08:00:00Z"},
		{"gdpr 31 December", deadline.GDPR, "2026-12-31T08:00:00Z", "2027-01-31T08:00:00Z", "2027-03-31T08:00:00Z"},
		{"ccpa", deadline.CCPA, "2026-03-15T10:00:00Z", "2026-04-29T10:00:00Z", "2026-06-13T10:00:00Z"},
		{"ccpa over February", deadline.CCPA, "2028-01-31T10:00:00Z", "2028-03-16T10:00:00Z", "2028-04-30T10:00:00Z"},
		{"lgpd", deadline.LGPD, "2026-03-15T10:00:00Z", "2026-03-30T10:00:00Z", ""},
		{"lgpd over a month end", deadline.LGPD, "2026-02-20T10:00:00Z", "2026-03-07T10:00:00Z", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			due := tc.reg.DueAt(at(tc.received))
			require.Equal(t, tc.due, due.Format(time.RFC3339))
			limit, err := tc.reg.ExtendedLimit(due)
			if tc.extendedTo == "" {
				require.ErrorIs(t, err, deadline.ErrNoExtension)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.extendedTo, limit.Format(time.RFC3339))
		})
	}
}

func TestParseRegulation(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]deadline.Regulation{"": deadline.GDPR, "gdpr": deadline.GDPR, "ccpa": deadline.CCPA, "lgpd": deadline.LGPD} {
		got, err := deadline.Parse(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	for _, bad := range []string{"GDPR", "hipaa", " gdpr"} {
		_, err := deadline.Parse(bad)
		require.ErrorIs(t, err, deadline.ErrUnknownRegulation, bad)
	}
	// The default clock is the one DueAt has always computed.
	at := time.Date(2026, 1, 31, 9, 0, 0, 0, time.UTC)
	require.Equal(t, deadline.DueAt(at), deadline.GDPR.DueAt(at))
}
