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
	"maps"
	"slices"

	"github.com/gdpr-oss/gdpr/modules/event"
	"github.com/gdpr-oss/gdpr/modules/expand"
)

// Participant kinds.
const (
	KindAMQP  = "amqp"
	KindHTTP  = "http"
	KindEmail = "email"
)

// State is a participant's state on one erasure, as stored in
// erasure_participants.state and as shown by the status API and the console.
// (ParticipantState is the row that holds one, with its attempts and times.)
type State string

// Participant states.
const (
	// StatePending: created, nothing sent yet (an HTTP call is about to be made).
	StatePending State = "pending"
	// StateWaiting: the email system, waiting until every other participant confirmed.
	StateWaiting State = "waiting"
	// StateSent: a command was sent (or scheduled) and awaits its confirmation.
	StateSent State = "sent"
	// StateRetrying: the last attempt failed; another is scheduled with backoff.
	StateRetrying State = "retrying"
	// StateErased and StateNotFound are the two confirmations that count.
	StateErased   State = "erased"
	StateNotFound State = "not_found"
	// StateFailed: permanently refused (an HTTP 4xx); an operator must act.
	StateFailed State = "failed"
	// StateOverdue: silent or failing after every re-send; an operator must act.
	StateOverdue State = "overdue"
	// StateCannotErase: a participant that needs an identifier the request
	// lacks (its `requires`, or what an http participant's URL template
	// uses; or one the template refuses, such as ".."), or that answered
	// cannot_erase itself. One that lacks an identifier is never commanded,
	// so never called with an empty value (a DELETE of the collection); the
	// erasure cannot complete and an operator must erase by other means and
	// confirm.
	StateCannotErase State = "cannot_erase"
)

// States is every participant state: those on the way to a confirmation,
// the two confirmations, then those an operator must act on (the order of
// the erasure_participants.state CHECK constraint).
func States() []State {
	return []State{StatePending, StateWaiting, StateSent, StateRetrying, StateErased, StateNotFound, StateFailed, StateOverdue, StateCannotErase}
}

// Confirmed says whether s is one of the two confirmations that count
// (StateErased, StateNotFound): nothing more is sent to the participant.
func (s State) Confirmed() bool { return s == StateErased || s == StateNotFound }

// DetailMissingIdentifier is the detail of a participant in StateCannotErase
// because the request lacks an identifier its URL needs.
const DetailMissingIdentifier = "missing identifier"

// DetailCannotFind is the detail of a participant that answered
// cannot_erase without one of its own.
const DetailCannotFind = "the participant cannot find the subject by the identifiers given"

// ErasureState is the state of one erasure as a whole, as stored in
// erasures.state.
type ErasureState string //nolint:revive // erasure.State is a participant's (the StateX constants); this one is named as its ErasureX constants are

// Erasure states.
const (
	// ErasureOpen: fanned out; a participant other than the email system
	// has yet to confirm.
	ErasureOpen ErasureState = "open"
	// ErasureCompleted: every participant but the email system confirmed.
	ErasureCompleted ErasureState = "completed"
	// ErasureFinished: the email system confirmed as well; the subject is
	// blanked.
	ErasureFinished ErasureState = "finished"
	// ErasureCancelled: an operator cancelled the request after its
	// commands went out; nothing more is sent (docs/console.md).
	ErasureCancelled ErasureState = "cancelled"
)

// ErasureStates is every erasure state, in lifecycle order (that of the
// erasures.state CHECK constraint).
func ErasureStates() []ErasureState { //nolint:revive // erasure.States lists a participant's states
	return []ErasureState{ErasureOpen, ErasureCompleted, ErasureFinished, ErasureCancelled}
}

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
	list   []Participant
	byName map[string]Participant
	urls   map[string]*expand.URL
}

// NewRegistry builds the registry from the canceller configuration.
func NewRegistry(ps []Participant) (*Registry, error) {
	r := &Registry{byName: map[string]Participant{}, urls: map[string]*expand.URL{}}
	for _, p := range ps {
		if _, dup := r.byName[p.Name]; dup {
			return nil, fmt.Errorf("participant %s registered twice", p.Name)
		}
		switch p.Kind {
		case KindAMQP, KindEmail:
		case KindHTTP:
			u, err := expand.ParseURL(p.URL, urlPlaceholders(p.URL)...)
			if err != nil {
				return nil, fmt.Errorf("participant %s url: %w", p.Name, err)
			}
			r.urls[p.Name] = u
		default:
			return nil, fmt.Errorf("participant %s has unknown kind %q", p.Name, p.Kind)
		}
		r.list = append(r.list, p)
		r.byName[p.Name] = p
	}
	return r, nil
}

// All returns the participants in configuration order.
func (r *Registry) All() []Participant { return r.list }

// Get returns the participant named name.
func (r *Registry) Get(name string) (Participant, bool) {
	p, ok := r.byName[name]
	return p, ok
}

// missing names the first identifier participant name requires (its
// Requires, then what an http participant's URL uses) that subject s lacks
// (or has as "." or ".."), or returns "".
func (r *Registry) missing(name string, s event.Subject) string {
	needs := r.byName[name].Requires
	if u, ok := r.urls[name]; ok {
		needs = append(slices.Clone(needs), u.Names()...)
	}
	v := urlValues("", s)
	for _, n := range needs {
		if n == "request_id" {
			continue
		}
		if val := v[n]; val == "" || val == "." || val == ".." {
			return n
		}
	}
	return ""
}

func urlValues(requestID string, s event.Subject) expand.Values {
	v := expand.Values{"subject_id": s.ID, "subject_email": s.Email, "request_id": requestID}
	maps.Copy(v, s.PlaceholderValues())
	return v
}

// CommandRoutingKey is the routing key of commands for participant name.
func CommandRoutingKey(name string) string { return "erasure.command." + name }

// QueueName is the queue (without the exchange prefix) a participant consumes.
func QueueName(name string) string { return "participant." + name }

// ParticipantQueue is the queue participant p consumes its commands from and
// the routing key that reaches it; ok is false for a participant called over
// HTTP, which has no queue. The queue is shared: the participant declares it
// too.
func ParticipantQueue(p Participant) (queue, binding string, ok bool) {
	if p.Kind != "amqp" && p.Kind != "email" {
		return "", "", false
	}
	return QueueName(p.Name), CommandRoutingKey(p.Name), true
}
