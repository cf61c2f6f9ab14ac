package audit

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/google/uuid"
)

// TimelineResponse is the body of GET /v1/admin/requests/{id}/timeline.
type TimelineResponse struct {
	RequestID string  `json:"request_id"`
	Events    []Event `json:"events"`
}

// TimelineHandler serves a request's timeline as JSON. It reads the request
// id from the route's {id} wildcard; the caller mounts it behind admin
// authentication.
func TimelineHandler(store *Store, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		id := r.PathValue("id")
		if _, err := uuid.Parse(id); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "id must be a request id (UUID)", "field": "id"})
			return
		}
		events, err := store.Timeline(ctx, id)
		switch {
		case errors.Is(err, ErrNoEvents):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no audit events for this request", "field": "id"})
			return
		case err != nil:
			logger.ErrorContext(ctx, "reading timeline failed", "request_id", id, "error", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "reading the timeline failed"})
			return
		}
		writeJSON(w, http.StatusOK, TimelineResponse{RequestID: id, Events: events})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
