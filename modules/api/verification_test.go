package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/event"
)

// TestAPIRequiresVerificationFromTheClientsConfigured: a client listed in
// privacy.require_verification (by the caller name the API logs; "*": every
// client) that does not say how it verified the subject is refused with 400
// naming `verification`, and nothing is published; with a verification it
// is accepted and the verification travels with the request; a client not
// listed needs none.
func TestAPIRequiresVerificationFromTheClientsConfigured(t *testing.T) {
	t.Parallel()
	const (
		bare     = `{"type":"access","subject":{"id":"u-1"}}`
		verified = `{"type":"access","subject":{"id":"u-1"},"verification":{"method":"session","verified_at":"2026-01-02T03:04:05Z"}}`
	)
	cases := []struct {
		name                  string
		require               func(caller string) []string
		mainNeeds, otherNeeds bool
	}{
		{"nobody listed", func(string) []string { return nil }, false, false},
		{"one client listed", func(caller string) []string { return []string{caller} }, true, false},
		{"every client", func(string) []string { return []string{"*"} }, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOptions{requireVerification: tc.require})
			for _, c := range []struct {
				token string
				needs bool
			}{{h.token, tc.mainNeeds}, {h.token + "-other-app", tc.otherNeeds}} {
				res := h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(bare), "Content-Type", "application/json", "Authorization", "Bearer "+c.token))
				if c.needs {
					require.Equal(t, http.StatusBadRequest, res.status, "%s", res.body)
					require.Equal(t, "verification", res.json(t)["field"], "%s", res.body)
					require.Empty(t, h.take(), "a refused request publishes nothing")
				} else {
					require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
					require.Len(t, h.take(), 1)
				}
				res = h.do(h.request(http.MethodPost, "/v1/requests", strings.NewReader(verified), "Content-Type", "application/json", "Authorization", "Bearer "+c.token))
				require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
				msgs := h.take()
				require.Len(t, msgs, 1)
				var sub event.RequestSubmitted
				require.NoError(t, json.Unmarshal(msgs[0].Body, &sub))
				require.NotNil(t, sub.Verification)
				require.Equal(t, "session", sub.Verification.Method)
				require.Equal(t, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), sub.Verification.VerifiedAt)
			}
		})
	}
}

// TestAPIAcceptsPhoneNumbersAndDeclaredIdentifiers: a subject may be given
// by phone number (published in E.164) and by named identifiers declared in
// serve.identifiers; an undeclared name or a bad number is refused with 400
// naming the member, and nothing is published.
func TestAPIAcceptsPhoneNumbersAndDeclaredIdentifiers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{identifiers: []string{"loyalty_card"}})
	res := h.submit(`{"type":"erasure","subject":{"phone":"+49 151 1234-5678","identifiers":{"loyalty_card":"LC-991"}}}`)
	require.Equal(t, http.StatusAccepted, res.status, "%s", res.body)
	msgs := h.take()
	require.Len(t, msgs, 1)
	var sub event.RequestSubmitted
	require.NoError(t, json.Unmarshal(msgs[0].Body, &sub))
	require.Equal(t, event.Subject{Phone: "+4915112345678", Identifiers: map[string]string{"loyalty_card": "LC-991"}}, sub.Subject)

	for body, field := range map[string]string{
		`{"type":"access","subject":{"identifiers":{"passport":"X1"}}}`:  "subject.identifiers.passport",
		`{"type":"access","subject":{"phone":"0151 12345678"}}`:          "subject.phone",
		`{"type":"access","subject":{"identifiers":{"Loyalty":"LC-1"}}}`: "subject.identifiers",
	} {
		res := h.submit(body)
		require.Equal(t, http.StatusBadRequest, res.status, "%s", res.body)
		require.Equal(t, field, res.json(t)["field"], "%s", body)
	}
	require.Empty(t, h.take())
}
