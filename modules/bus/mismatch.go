package bus

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrQueueMismatch means the broker refused to declare a queue because it
// exists with other arguments (the error is a *MismatchError).
var ErrQueueMismatch = errors.New("queue exists with other arguments")

const argDeliveryLimit = "x-delivery-limit"

// MismatchError is a queue declaration the broker refused with
// PRECONDITION_FAILED because the queue exists with other arguments: created
// by an older configuration, or by another service that declared it differently.
type MismatchError struct {
	Queue string
	// Argument is the first argument that differs, as the broker names it
	// (x-queue-type, x-dead-letter-exchange, x-delivery-limit, durable, ...).
	Argument string
	// Detail is the broker's account of the difference, e.g.
	// "received 'quorum' but current is 'classic'".
	Detail string
	// Declared lists the arguments gdpr declares the queue with.
	Declared string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("queue %s exists with other arguments than gdpr declares: %s %s; gdpr declares it durable with %s. Fix: %s",
		e.Queue, e.Argument, e.Detail, e.Declared, e.Fix())
}

// Unwrap makes errors.Is(err, ErrQueueMismatch) hold.
func (e *MismatchError) Unwrap() error { return ErrQueueMismatch }

// Fix says what an operator does about it.
func (e *MismatchError) Fix() string {
	return "declare the queue with exactly these arguments wherever it is declared (a participant's are listed in docs/protocol.md, Transport), " +
		"or set amqp.queue_type to the existing queue's type; then delete the queue once it is empty (rabbitmqctl delete_queue " +
		e.Queue + ") so that it is declared anew"
}

// mismatch turns the broker's "inequivalent arg" refusal of a declaration
// of queue with args into a *MismatchError; other errors pass unchanged.
func mismatch(queue string, args amqp.Table, err error) error {
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.PreconditionFailed {
		return err
	}
	// "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received 'classic' but current is 'quorum'"
	_, rest, ok := strings.Cut(amqpErr.Reason, "inequivalent arg '")
	if !ok {
		return err
	}
	arg, rest, _ := strings.Cut(rest, "'")
	detail := rest
	if _, after, ok := strings.Cut(rest, "': "); ok {
		detail = after
	}
	return &MismatchError{Queue: queue, Argument: arg, Detail: detail, Declared: describeArgs(args)}
}

// currentLimit reads the existing queue's delivery limit from the broker's
// detail ("received none but current is the value '20' of type 'long'").
func (e *MismatchError) currentLimit() (int64, bool) {
	_, rest, ok := strings.Cut(e.Detail, "current is the value '")
	if !ok {
		return 0, false
	}
	digits, _, _ := strings.Cut(rest, "'")
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil
}

func describeArgs(args amqp.Table) string {
	parts := make([]string, 0, len(args))
	for k, v := range args {
		parts = append(parts, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "no arguments"
	}
	return strings.Join(parts, ", ")
}
