package erasure_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestHTTPParticipantStatuses: the canceller's own calls to a third-party API
// map statuses to outcomes: expected → erased, 404 → not_found, 429, 409,
// 5xx and timeouts are retried with backoff, other 4xx fail permanently.
func TestHTTPParticipantStatuses(t *testing.T) {
	t.Parallel()
	// script: subject id -> statuses answered in turn (the last one repeats);
	// 0 means hang past the participant's timeout.
	script := map[string][]int{
		"ok":        {http.StatusAccepted},
		"gone":      {http.StatusNotFound},
		"throttled": {http.StatusTooManyRequests, http.StatusNoContent},
		"conflict":  {http.StatusConflict, http.StatusOK},
		"slow":      {0, http.StatusOK},
		"refused":   {http.StatusForbidden},
		"bad":       {http.StatusBadRequest},
		"down":      {http.StatusBadGateway},
	}
	var mu sync.Mutex
	calls := map[string]int{}
	var headers []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		mu.Lock()
		n := calls[id]
		calls[id]++
		headers = append(headers, r.Header.Clone())
		mu.Unlock()
		seq := script[id]
		status := seq[min(n, len(seq)-1)]
		if status == 0 {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.WriteHeader(status)
	}))
	mux := http.NewServeMux()
	mux.Handle("POST /v1/forget/{id}", srv.Config.Handler)
	srv.Config.Handler = mux
	t.Cleanup(srv.Close)

	h := newHarness(t, []erasure.Participant{{
		Name: "api", Kind: "http", Method: http.MethodPost, URL: srv.URL + "/v1/forget/{subject_id}",
		AuthHeader: "X-Api-Key: k3y", Timeout: 300 * time.Millisecond, ExpectedStatuses: []int{200, 202, 204},
	}}, func(c *erasure.Config) { c.MaxResends = 2 })
	h.startDispatcher()
	h.startCanceller()
	requests := map[string]string{}
	for id := range script {
		s := newSubjects(1)[0]
		s.Subject.ID = id
		requests[id] = s.RequestID
		h.request(s)
	}
	// results are the erasure.called messages of each request, in attempt
	// order: "outcome status" or "outcome error_class".
	want := map[string]struct {
		state   erasure.State
		calls   int
		results []string
	}{
		"ok":        {erasure.StateErased, 1, []string{"erased 202"}},
		"gone":      {erasure.StateNotFound, 1, []string{"not_found 404"}},
		"throttled": {erasure.StateErased, 2, []string{"failed 429", "erased 204"}},
		"conflict":  {erasure.StateErased, 2, []string{"failed 409", "erased 200"}},
		"slow":      {erasure.StateErased, 2, []string{"failed timeout", "erased 200"}},
		"refused":   {erasure.StateFailed, 1, []string{"failed 403"}},
		"bad":       {erasure.StateFailed, 1, []string{"failed 400"}},
		"down":      {erasure.StateOverdue, 3, []string{"failed 502", "failed 502", "failed 502"}},
	}
	for id, w := range want {
		testkit.Eventually(t, 30*time.Second, func() bool {
			st, _ := h.participantState(requests[id], "api")
			return st == w.state
		}, "%s reaches %s", id, w.state)
	}
	for id, w := range want {
		mu.Lock()
		require.Equal(t, w.calls, calls[id], id)
		mu.Unlock()
		ps, err := erasure.Participants(context.Background(), h.db, requests[id])
		require.NoError(t, err)
		require.Len(t, ps, 1)
		require.Equal(t, w.calls, ps[0].Attempts, id)
		if w.state == erasure.StateFailed {
			require.Contains(t, ps[0].Detail, "http 4", id)
			require.Equal(t, erasure.ErasureOpen, h.erasureState(requests[id]), "a failed participant keeps the erasure open")
		}
	}
	// Every call's result is published for the audit log, caused by the
	// timer that made the call.
	called := func(requestID string) []string {
		var out []string
		for _, m := range h.events.all(event.TypeErasureCalled) {
			var c event.ErasureCalled
			require.NoError(t, m.Decode(&c))
			if c.RequestID != requestID {
				continue
			}
			require.Equal(t, requestID, m.CorrelationID)
			require.NotEmpty(t, m.CausationID)
			require.Equal(t, "api", c.Participant)
			require.Equal(t, len(out)+1, c.Attempt)
			res := c.Outcome + " " + c.ErrorClass
			if c.HTTPStatus != 0 {
				res = c.Outcome + " " + strconv.Itoa(c.HTTPStatus)
			}
			out = append(out, res)
		}
		return out
	}
	for id, w := range want {
		testkit.Eventually(t, 10*time.Second, func() bool { return len(called(requests[id])) >= len(w.results) }, "erasure.called of %s", id)
		require.Equal(t, w.results, called(requests[id]), id)
	}
	require.Equal(t, erasure.ErasureFinished, h.erasureState(requests["ok"]))
	require.Equal(t, erasure.ErasureFinished, h.erasureState(requests["gone"]))
	mu.Lock()
	for _, hd := range headers {
		require.Equal(t, "k3y", hd.Get("X-Api-Key"))
		require.NotEmpty(t, hd.Get("X-Request-Id"))
	}
	mu.Unlock()
	require.Equal(t, 2.0, metricValue(t, h.registry, "gdpr_erasure_participants_attention", map[string]string{"participant": "api", "state": "failed"}))
	require.Equal(t, 1.0, metricValue(t, h.registry, "gdpr_erasures_overdue_total", nil))
}
