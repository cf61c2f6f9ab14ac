package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/download"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/intake"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// TestClientsReadOnlyTheirOwnRequests: each request records the client that
// submitted it, and another client asking for its status or (with its own
// bearer token) its report gets exactly the 404 an unknown id gets, so
// that no client learns which ids exist (#11 item 6).
func TestClientsReadOnlyTheirOwnRequests(t *testing.T) {
	t.Parallel()
	crm, shop, moved := "crm-"+testkit.ID(), "shop-"+testkit.ID(), "moved-"+testkit.ID()
	h := newHarness(t, harnessOptions{clients: []intake.NamedToken{
		{Name: "crm", TokenSHA256: digest(crm)},
		{Name: "shop", TokenSHA256: digest(shop)},
		// A token that used to be a flat serve.api_tokens entry, since named.
		{Name: "moved", TokenSHA256: digest(moved)},
	}})
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	get := func(path, tok string) response {
		t.Helper()
		var hs []string
		if tok != "" {
			hs = bearer(tok)
		}
		return h.do(h.request(http.MethodGet, path, nil, hs...))
	}

	// Submitted by crm: the message names it, and before the requests
	// manager stored it (the accepted record in Redis) only crm sees it.
	res := h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(accessBody), append(bearer(crm), "Content-Type", "application/json")...))
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
	id := res.json(t)["id"].(string)
	msgs := h.take()
	require.Len(t, msgs, 1)
	var sub event.RequestSubmitted
	require.NoError(t, json.Unmarshal(msgs[0].Body, &sub))
	require.Equal(t, "crm", sub.Client)

	unknown := get("/v1/requests/"+uuid.NewString(), shop)
	require.Equal(t, http.StatusNotFound, unknown.status)
	require.Equal(t, http.StatusOK, get("/v1/requests/"+id, crm).status)
	for name, tok := range map[string]string{"another named client": shop, "a flat token": h.token} {
		other := get("/v1/requests/"+id, tok)
		require.Equal(t, http.StatusNotFound, other.status, "%s: %s", name, other.body)
		require.JSONEq(t, string(unknown.body), string(other.body), "%s: another client's request looks like no request", name)
	}

	// Stored rows: crm's completed access with a report, one stored before
	// requests recorded their client, one submitted with the flat token
	// that is now "moved".
	now := time.Now().UTC()
	store := func(client string) string {
		rid := uuid.NewString()
		require.NoError(t, h.db.Exec(`INSERT INTO requests (id, type, state, submitted_at, due_at, completed_at, client) VALUES (?, 'access', 'completed', ?, ?, ?, ?)`,
			rid, now, intake.DueAt(now), now, client).Error)
		repID := uuid.NewString()
		require.NoError(t, h.db.Exec(`INSERT INTO reports (id, request_id, bytes, sha256) VALUES (?, ?, 1, 'x')`, repID, rid).Error)
		h.reports.add(t, repID)
		return rid
	}
	owned, legacy, renamed := store("crm"), store(""), store(intake.LegacyName(digest(moved)))
	link := func(rid string) string {
		return strings.TrimPrefix(download.URL("https://privacy.example.com", h.key, rid, time.Hour, time.Now()), "https://privacy.example.com")
	}

	cases := []struct {
		name, path, token string
		want              int
	}{
		{"owner reads status", "/v1/requests/" + owned, crm, http.StatusOK},
		{"other client's status", "/v1/requests/" + owned, shop, http.StatusNotFound},
		{"flat token, other client's status", "/v1/requests/" + owned, h.token, http.StatusNotFound},
		{"owner downloads with its token", link(owned), crm, http.StatusOK},
		{"other client downloads with a valid link", link(owned), shop, http.StatusNotFound},
		{"link alone (the subject's email)", link(owned), "", http.StatusOK},
		{"forged bearer on a download", link(owned), "forged-" + testkit.ID(), http.StatusUnauthorized},
		{"other client, forged link", "/v1/requests/" + owned + "/report?token=AAAA", shop, http.StatusNotFound},
		{"pre-migration request, any client", "/v1/requests/" + legacy, shop, http.StatusOK},
		{"pre-migration request, another", "/v1/requests/" + legacy, crm, http.StatusOK},
		{"renamed token keeps its requests", "/v1/requests/" + renamed, moved, http.StatusOK},
		{"renamed token's request, other client", "/v1/requests/" + renamed, crm, http.StatusNotFound},
		{"renamed token downloads its report", link(renamed), moved, http.StatusOK},
	}
	// Two Authorization headers: net/http would read the first, a proxy
	// perhaps the last; neither wins.
	for _, order := range [][2]string{{shop, crm}, {crm, shop}} {
		req := h.request(http.MethodGet, "/v1/requests/"+owned, nil)
		req.Header.Add("Authorization", "Bearer "+order[0])
		req.Header.Add("Authorization", "Bearer "+order[1])
		got := h.do(req)
		require.Equal(t, http.StatusBadRequest, got.status, "%s", got.body)
		require.Equal(t, "Authorization", got.json(t)["field"])
	}
	for _, tc := range cases {
		got := get(tc.path, tc.token)
		require.Equal(t, tc.want, got.status, "%s: %s", tc.name, got.body)
		if tc.want == http.StatusNotFound && !strings.HasSuffix(strings.Split(tc.path, "?")[0], "/report") {
			require.JSONEq(t, string(unknown.body), string(got.body), "%s", tc.name)
		}
	}
}

// ParseClients refuses a token configured twice and a nameless client.
func TestParseClientsRefusesDuplicatesAndEmptyNames(t *testing.T) {
	t.Parallel()
	d := digest("a-token")
	for name, tc := range map[string]struct {
		named []intake.NamedToken
		flat  []string
	}{
		"same digest in two clients":        {named: []intake.NamedToken{{Name: "a", TokenSHA256: d}, {Name: "b", TokenSHA256: d}}},
		"same digest named and flat":        {named: []intake.NamedToken{{Name: "a", TokenSHA256: d}}, flat: []string{d}},
		"same digest, upper and lower case": {flat: []string{d, strings.ToUpper(d)}},
		"empty name":                        {named: []intake.NamedToken{{TokenSHA256: d}}},
		"empty digest":                      {named: []intake.NamedToken{{Name: "a"}}},
	} {
		_, err := intake.ParseClients(tc.named, tc.flat)
		require.Error(t, err, name)
	}
}
