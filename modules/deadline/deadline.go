// Package deadline is the one place the legal deadline of a data subject
// request is computed. The intake shows it, the requests manager stores it
// (requests.due_at), the gauges and the status read it back: none of them
// computes it again, so they cannot disagree.
package deadline

import "time"

// DueAt is the legal deadline for answering a request received at t: one
// month later (GDPR Art. 12(3)). As Regulation 1182/71 counts months, the
// period ends on the same day of the next month or, when that month is
// shorter, on its last day (31 January → 28/29 February), never spilling
// into the month after as time.AddDate would. Days are counted in UTC,
// whatever the time zone of t or of a database session.
func DueAt(t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	lastDay := time.Date(y, m+2, 0, 0, 0, 0, 0, time.UTC).Day()
	d = min(d, lastDay)
	return time.Date(y, m+1, d, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}
