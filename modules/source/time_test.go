package source

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestAppendRFC3339UTCIsAppendFormat: the digit-by-digit formatter writes
// what time.Time.AppendFormat(time.RFC3339Nano) writes, for times across
// the years 0-9999 (and beyond, where it defers to AppendFormat) with and
// without fractions.
func TestAppendRFC3339UTCIsAppendFormat(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	times := []time.Time{
		time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 7, 8, 9, 10, 11, 120000000, time.UTC),
		time.Date(2026, 7, 8, 9, 10, 11, 1000, time.UTC),
	}
	for range 10000 {
		sec := rng.Int64N(253402300800) - 62135596800 // years 1-9999
		ns := int64(0)
		switch rng.IntN(3) {
		case 1:
			ns = rng.Int64N(1e9)
		case 2:
			ns = rng.Int64N(1e6) * 1000
		}
		times = append(times, time.Unix(sec, ns).UTC())
	}
	for _, tm := range times {
		require.Equal(t, string(tm.AppendFormat(nil, time.RFC3339Nano)), string(appendRFC3339UTC(nil, tm)), "%v", tm)
	}
}
