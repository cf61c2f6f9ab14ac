// Package erasure is the canceller: it fans an erasure out to every
// registered participant, collects one confirmation from each, re-sends to the
// silent ones through the scheduler, and postpones the email system's erasure
// until the "your data was deleted" email has had time to go out.
//
// Every state change of one erasure happens in a transaction that first locks
// the erasure's row, so any number of canceller replicas may handle the
// messages of one request at once: they queue on the row lock, and each sees
// the state the previous one committed. Follow-up messages are enqueued in
// the same transaction (the scheduler's outbox), so a crash between a state
// change and its messages is impossible.
package erasure

import (
	"errors"
	"fmt"

	"github.com/gdpr-oss/gdpr/config"
)

// Participant kinds.
const (
	KindAMQP  = "amqp"
	KindHTTP  = "http"
	KindEmail = "email"
)

// Participant states, as stored and as shown by the status API.
const (
	// StatePending: created, nothing sent yet (an HTTP call is about to be made).
	StatePending = "pending"
	// StateWaiting: the email system, waiting until every other participant confirmed.
	StateWaiting = "waiting"
	// StateSent: a command was sent (or scheduled) and awaits its confirmation.
	StateSent = "sent"
	// StateRetrying: the last attempt failed; another is scheduled with backoff.
	StateRetrying = "retrying"
	// StateErased and StateNotFound are the two confirmations that count.
	StateErased   = "erased"
	StateNotFound = "not_found"
	// StateFailed: permanently refused (an HTTP 4xx); an operator must act.
	StateFailed = "failed"
	// StateOverdue: silent or failing after every re-send; an operator must act.
	StateOverdue = "overdue"
)

// Erasure states.
const (
	ErasureOpen      = "open"
	ErasureCompleted = "completed"
	ErasureFinished  = "finished"
)

// TypeTimer is the canceller's message to itself, delivered by the scheduler:
// send attempt N to a participant, or sweep an erasure for participants
// whose wait for a confirmation is over.
const TypeTimer = "erasure.timer"

// Timer actions.
const (
	ActionSend  = "send"
	ActionSweep = "sweep"
)

// Timer is the body of a TypeTimer message.
type Timer struct {
	RequestID   string `json:"request_id"`
	Participant string `json:"participant"`
	Action      string `json:"action"`
	Attempt     int    `json:"attempt"`
}

// Errors callers test with errors.Is. Each one means the message can never
// be processed: the consumer dead-letters it with the reason.
var (
	ErrInvalid        = errors.New("erasure: invalid message")
	ErrUnknownRequest = errors.New("erasure: unknown request")
	ErrUnknownParty   = errors.New("erasure: unregistered participant")
	ErrNotResendable  = errors.New("erasure: participant is not awaiting anything an operator can re-send")
)

// Registry is the set of configured participants.
type Registry struct {
	list   []config.Participant
	byName map[string]config.Participant
}

// NewRegistry builds the registry from the canceller configuration.
func NewRegistry(ps []config.Participant) (*Registry, error) {
	r := &Registry{byName: map[string]config.Participant{}}
	for _, p := range ps {
		if _, dup := r.byName[p.Name]; dup {
			return nil, fmt.Errorf("participant %s registered twice", p.Name)
		}
		switch p.Kind {
		case KindAMQP, KindHTTP, KindEmail:
		default:
			return nil, fmt.Errorf("participant %s has unknown kind %q", p.Name, p.Kind)
		}
		r.list = append(r.list, p)
		r.byName[p.Name] = p
	}
	return r, nil
}

// All returns the participants in configuration order.
func (r *Registry) All() []config.Participant { return r.list }

// Get returns the participant named name.
func (r *Registry) Get(name string) (config.Participant, bool) {
	p, ok := r.byName[name]
	return p, ok
}

// CommandRoutingKey is the routing key of commands for participant name.
func CommandRoutingKey(name string) string { return "erasure.command." + name }

// QueueName is the queue (without the exchange prefix) a participant consumes.
func QueueName(name string) string { return "participant." + name }
