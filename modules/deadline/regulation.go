package deadline

import (
	"errors"
	"fmt"
	"time"
)

// Regulation names the law whose clock a request runs on. Its deadline,
// whether it may be extended and by how much all follow from it.
type Regulation string

// The regulations a request may carry.
const (
	// GDPR: one calendar month from receipt (Art. 12(3)), extendable once by
	// two further months.
	GDPR Regulation = "gdpr"
	// CCPA: 45 calendar days (Cal. Civ. Code §1798.130(a)(2)), extendable
	// once by 45 more.
	CCPA Regulation = "ccpa"
	// LGPD: 15 days (Art. 19, II); no extension.
	LGPD Regulation = "lgpd"
)

// Regulations lists every regulation in a stable order (forms, settings).
func Regulations() []Regulation { return []Regulation{GDPR, CCPA, LGPD} }

// ErrUnknownRegulation marks a regulation name this service has no clock for.
var ErrUnknownRegulation = errors.New("deadline: unknown regulation")

// ErrNoExtension marks an extension the regulation does not allow.
var ErrNoExtension = errors.New("deadline: the regulation allows no extension")

// Parse returns the regulation named s; the empty name is GDPR, the default.
func Parse(s string) (Regulation, error) {
	switch r := Regulation(s); r {
	case "":
		return GDPR, nil
	case GDPR, CCPA, LGPD:
		return r, nil
	}
	return "", fmt.Errorf("%w: %q (must be gdpr, ccpa or lgpd)", ErrUnknownRegulation, s)
}

// DueAt is the deadline of a request received at t under r, in UTC. An
// unknown regulation gets GDPR's clock (Parse refuses it before a request
// is stored).
func (r Regulation) DueAt(t time.Time) time.Time {
	switch r {
	case CCPA:
		return t.UTC().AddDate(0, 0, 45)
	case LGPD:
		return t.UTC().AddDate(0, 0, 15)
	}
	return DueAt(t)
}

// ExtendedLimit is the latest deadline an extension of a request due at due
// may set: two further calendar months under GDPR (the same month-end rule
// as DueAt: 28 February + 2 months = 28 April, 31 March + 2 = 31 May,
// 31 December + 2 = 28/29 February), 45 more days under CCPA.
// ErrNoExtension for LGPD.
func (r Regulation) ExtendedLimit(due time.Time) (time.Time, error) {
	switch r {
	case CCPA:
		return due.UTC().AddDate(0, 0, 45), nil
	case LGPD:
		return time.Time{}, fmt.Errorf("%w: %s", ErrNoExtension, r)
	}
	return addMonths(due, 2), nil
}

// addMonths adds n calendar months to t, ending on the last day of the
// target month when it is shorter, never spilling into the next.
func addMonths(t time.Time, n int) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	lastDay := time.Date(y, m+time.Month(n)+1, 0, 0, 0, 0, 0, time.UTC).Day()
	return time.Date(y, m+time.Month(n), min(d, lastDay), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}
