package erasure_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/gdpr-oss/gdpr/modules/erasure"
	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/message"
)

func loadSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join("..", "..", "docs", "schemas", name)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	require.NoError(t, c.AddResource(name, doc))
	s, err := c.Compile(name)
	require.NoError(t, err)
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, body []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	require.NoError(t, err)
	return s.Validate(v)
}

// TestProtocolSchemasMatchTheCode: the commands the canceller really sends
// validate against docs/schemas, and so do the confirmations the SDK
// builds; confirmations the canceller rejects are rejected by the schema too.
func TestProtocolSchemasMatchTheCode(t *testing.T) {
	t.Parallel()
	cmdSchema := loadSchema(t, "erasure-command.v1.json")
	confSchema := loadSchema(t, "erasure-confirmed.v1.json")

	h := newHarness(t, []erasure.Participant{{Name: "billing", Kind: "amqp"}, {Name: "news-letter_2", Kind: "amqp"}}, nil)
	c, err := erasure.New(h.db, h.store, h.outbox, h.cfg.Canceller, nil, h.logger)
	require.NoError(t, err)
	for _, subj := range []event.Subject{{ID: "u-1"}, {Email: "a@example.com"}, {ID: "u-2", Email: "b@example.com"},
		{Phone: "+4915112345678"}, {Identifiers: map[string]string{"loyalty_card": "LC-991"}}} {
		m, err := message.New(event.TypeErasureRequested, event.ErasureRequested{RequestID: uuid.NewString(), Subject: subj}, nil)
		require.NoError(t, err)
		require.NoError(t, c.Handle(context.Background(), m))
	}
	var bodies [][]byte
	require.NoError(t, h.db.Raw(`SELECT body FROM outbox_messages WHERE type = ?`, event.TypeErasureCommand).Scan(&bodies).Error)
	require.Len(t, bodies, 10)
	for _, b := range bodies {
		require.NoError(t, validate(t, cmdSchema, b), string(b))
	}

	good := event.ErasureConfirmed{Version: 1, RequestID: uuid.NewString(), Participant: "billing", Outcome: event.OutcomeErased, Attempt: 1}
	require.NoError(t, validate(t, confSchema, mustJSON(t, good)))
	minimal := event.ErasureConfirmed{Version: 1, RequestID: uuid.NewString(), Participant: "billing", Outcome: event.OutcomeNotFound}
	require.NoError(t, validate(t, confSchema, mustJSON(t, minimal)))

	bad := map[string]event.ErasureConfirmed{
		"outcome": {Version: 1, RequestID: good.RequestID, Participant: "billing", Outcome: "maybe"},
		"version": {Version: 2, RequestID: good.RequestID, Participant: "billing", Outcome: event.OutcomeErased},
		"uuid":    {Version: 1, RequestID: "42", Participant: "billing", Outcome: event.OutcomeErased},
		"name":    {Version: 1, RequestID: good.RequestID, Participant: "", Outcome: event.OutcomeErased},
	}
	for name, b := range bad {
		require.Error(t, validate(t, confSchema, mustJSON(t, b)), name)
		m, err := message.New(event.TypeErasureConfirmed, b, nil)
		require.NoError(t, err)
		require.ErrorIs(t, c.HandleConfirmed(context.Background(), m), erasure.ErrInvalid, name)
	}
}
