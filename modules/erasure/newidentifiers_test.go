package erasure_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
	"github.com/gdpr-oss/gdpr/modules/testkit"
)

// v1Command is the command as a participant written against protocol v1
// before phone and identifiers existed decodes it.
type v1Command struct {
	Version     int    `json:"version"`
	RequestID   string `json:"request_id"`
	Participant string `json:"participant"`
	Subject     struct {
		ID    string `json:"id"`
		Email string `json:"email"`
	} `json:"subject"`
	Attempt int `json:"attempt"`
}

// TestProtocolV1ParticipantsKeepWorkingWithPhoneAndIdentifiers: the new
// identifiers are additive. A subject known by id and email gives the very
// bytes of before, so even a participant that (against docs/protocol.md,
// Versioning) refuses unknown members decodes it; a subject with a phone
// number and named identifiers carries them beside id and email, and a
// participant that ignores unknown members, as the protocol requires, reads
// the id and email it knows unchanged.
func TestProtocolV1ParticipantsKeepWorkingWithPhoneAndIdentifiers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, []erasure.Participant{{Name: "legacy", Kind: "amqp"}}, nil)
	c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
	require.NoError(t, err)
	commandFor := func(s event.Subject) []byte {
		t.Helper()
		id := uuid.NewString()
		m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: id, Subject: s}, nil)
		require.NoError(t, err)
		require.NoError(t, c.Handle(context.Background(), m))
		var bodies [][]byte
		require.NoError(t, h.db.Raw(`SELECT body FROM outbox_messages WHERE type = ? AND convert_from(body, 'UTF8') LIKE ?`, event.TypeErasureCommand, "%"+id+"%").Scan(&bodies).Error)
		require.Len(t, bodies, 1)
		return bodies[0]
	}
	strict := func(b []byte) (v1Command, error) {
		var cmd v1Command
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return cmd, dec.Decode(&cmd)
	}

	old := commandFor(event.Subject{ID: "u-1", Email: "ann@example.com"})
	require.Contains(t, string(old), `"subject":{"id":"u-1","email":"ann@example.com"}`, "the subject is written as before")
	cmd, err := strict(old)
	require.NoError(t, err, "a strict v1 reader still decodes a subject without the new identifiers")
	require.Equal(t, "ann@example.com", cmd.Subject.Email)

	both := commandFor(event.Subject{ID: "u-2", Email: "bob@example.com", Phone: "+4915112345678", Identifiers: map[string]string{"loyalty_card": "LC-991"}})
	require.Contains(t, string(both), `"phone":"+4915112345678"`)
	require.Contains(t, string(both), `"identifiers":{"loyalty_card":"LC-991"}`)
	var tolerant v1Command
	require.NoError(t, json.Unmarshal(both, &tolerant), "a v1 reader that ignores unknown members")
	require.Equal(t, 1, tolerant.Version)
	require.Equal(t, "u-2", tolerant.Subject.ID)
	require.Equal(t, "bob@example.com", tolerant.Subject.Email)
	require.Equal(t, "legacy", tolerant.Participant)
	_, err = strict(both)
	require.ErrorContains(t, err, "unknown field", "why docs/protocol.md requires readers to ignore unknown members")
}

// TestHTTPParticipantURLsTakePhoneAndNamedIdentifiers: {phone} and
// {identifier.<name>} fill a path segment like {subject_id}; a subject
// without the identifier a participant needs leaves it cannot_erase, never
// called.
func TestHTTPParticipantURLsTakePhoneAndNamedIdentifiers(t *testing.T) {
	t.Parallel()
	var got calls
	api := customersAPI(t, &got)
	h := newHarness(t, []erasure.Participant{
		{Name: "byphone", Kind: "http", URL: api.URL + "/customers/{phone}"},
		{Name: "bycard", Kind: "http", URL: api.URL + "/customers/{identifier.loyalty_card}"},
	}, nil)
	h.startDispatcher()
	h.startCanceller()

	full := subject{RequestID: uuid.NewString(), Subject: event.Subject{Phone: "+4915112345678", Identifiers: map[string]string{"loyalty_card": "LC-991"}}}
	h.request(full)
	phoneOnly := subject{RequestID: uuid.NewString(), Subject: event.Subject{Phone: "+4915100000000"}}
	h.request(phoneOnly)
	testkit.Eventually(t, 30*time.Second, func() bool {
		a, _ := h.participantState(full.RequestID, "byphone")
		b, _ := h.participantState(full.RequestID, "bycard")
		c, _ := h.participantState(phoneOnly.RequestID, "byphone")
		return a == erasure.StateErased && b == erasure.StateErased && c == erasure.StateErased
	}, "both participants erase the full subject; byphone the phone-only one")
	ps, err := erasure.Participants(t.Context(), h.db, phoneOnly.RequestID)
	require.NoError(t, err)
	require.Equal(t, "bycard", ps[0].Participant)
	require.Equal(t, erasure.StateCannotErase, ps[0].State)
	require.Equal(t, "missing identifier {identifier.loyalty_card}", ps[0].Detail)
	require.ElementsMatch(t, []string{"DELETE /customers/+4915112345678", "DELETE /customers/LC-991", "DELETE /customers/+4915100000000"}, got.paths())
	for _, r := range got.all() {
		require.NotContains(t, r.URL.RawPath+r.URL.Path, "{", "every placeholder was filled")
	}
}
