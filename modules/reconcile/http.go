package reconcile

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"
)

// Handler serves the in-sync check as JSON (GET, optional query parameters
// since and stuck_after as Go durations, e.g. ?since=24h&stuck_after=15m).
// It answers 200 when in sync and 409 when not, so a probe can use the status.
// The caller mounts it behind admin authentication.
func Handler(c *Checker, defaults Options, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		opts := defaults
		for _, p := range []struct {
			name string
			dst  *time.Duration
		}{{"since", &opts.Since}, {"stuck_after", &opts.StuckAfter}} {
			v := r.URL.Query().Get(p.name)
			if v == "" {
				continue
			}
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": p.name + " must be a duration like 24h", "field": p.name})
				return
			}
			*p.dst = d
		}
		res, err := c.Check(ctx, opts)
		if err != nil {
			logger.ErrorContext(ctx, "in-sync check failed", "error", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "the in-sync check failed"})
			return
		}
		status := http.StatusOK
		if !res.InSync() {
			status = http.StatusConflict
		}
		writeJSON(w, status, res)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
