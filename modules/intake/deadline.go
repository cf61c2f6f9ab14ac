package intake

import (
	"time"

	"github.com/gdpr-oss/gdpr/modules/deadline"
)

// DueAt is the legal deadline for answering a request received at t, as
// deadline.DueAt computes it: a status shown before the request is stored
// carries the deadline the requests manager will store.
func DueAt(t time.Time) time.Time { return deadline.DueAt(t) }
