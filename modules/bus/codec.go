package bus

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gdpr-oss/gdpr/modules/message"
)

// Header names on the wire; the contract is in docs/protocol.md.
const (
	HeaderCausationID      = "causation_id"
	HeaderOccurredAt       = "occurred_at"
	HeaderTraceparent      = "traceparent"
	HeaderDeadLetterReason = "x-gdpr-dead-letter-reason"
	HeaderDeadLetterQueue  = "x-gdpr-dead-letter-queue"
	// HeaderDeadLetterClass is the reason's class: ReasonPoison,
	// ReasonMalformed, ReasonRetryExpired or ReasonDeliveryLimit.
	HeaderDeadLetterClass = "x-gdpr-dead-letter-class"
	// HeaderDeadLetterAt is when the message was dead-lettered (RFC 3339):
	// its age for the retention purge (retention.dead_letters_for).
	HeaderDeadLetterAt = "x-gdpr-dead-letter-at"
	// HeaderRetries and HeaderFailingSince travel on the copy of a message
	// put back for a retry: how many attempts failed, and when the first did.
	HeaderRetries       = "x-gdpr-retries"
	HeaderFailingSince  = "x-gdpr-failing-since"
	headerPublishSeq    = "x-gdpr-publish-seq"
	headerDeliveryCount = "x-delivery-count"
)

func encode(m message.Message) amqp.Publishing {
	// Room for the publisher's sequence header too.
	headers := make(amqp.Table, len(m.Headers)+4)
	headers[HeaderOccurredAt] = m.OccurredAt.UTC().Format(time.RFC3339Nano)
	headers[HeaderTraceparent] = m.Traceparent
	if m.CausationID != "" {
		headers[HeaderCausationID] = m.CausationID
	}
	for k, v := range m.Headers {
		headers[k] = v
	}
	return amqp.Publishing{
		Headers:       headers,
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		MessageId:     m.ID,
		CorrelationId: m.CorrelationID,
		Type:          m.Type,
		Timestamp:     m.OccurredAt,
		Body:          m.Body,
	}
}

func decode(d amqp.Delivery) message.Message {
	m := message.Message{
		ID:            d.MessageId,
		Type:          d.Type,
		RoutingKey:    d.RoutingKey,
		CorrelationID: d.CorrelationId,
		OccurredAt:    d.Timestamp,
		Body:          d.Body,
		Redelivered:   d.Redelivered,
		Headers:       map[string]string{},
	}
	for k, v := range d.Headers {
		switch k {
		case HeaderCausationID:
			m.CausationID = fmt.Sprint(v)
		case HeaderTraceparent:
			m.Traceparent = fmt.Sprint(v)
		case HeaderOccurredAt:
			if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(v)); err == nil {
				m.OccurredAt = t
			}
		case headerDeliveryCount:
			m.DeliveryCount = headerInt(v)
		case HeaderRetries:
			m.Retries = headerInt(v)
		case HeaderFailingSince:
			if t, err := time.Parse(time.RFC3339Nano, fmt.Sprint(v)); err == nil {
				m.FailingSince = t
			}
		case headerPublishSeq:
		default:
			if s, ok := v.(string); ok {
				m.Headers[k] = s
			}
		}
	}
	return m
}

func headerInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int:
		return int64(n)
	}
	return 0
}

// retryPublishing is d as it arrived, to be put back at the end of its
// queue for another attempt: same message id (consumers deduplicate a copy
// that exists twice after a crash), the failed attempts counted.
func retryPublishing(d amqp.Delivery, retries int64, failingSince time.Time) amqp.Publishing {
	pub := copyPublishing(d)
	pub.Headers[HeaderRetries] = retries
	pub.Headers[HeaderFailingSince] = failingSince.UTC().Format(time.RFC3339Nano)
	return pub
}

// copyPublishing is d as it arrived: properties and headers (but for the
// ones the broker and the publisher add) kept.
func copyPublishing(d amqp.Delivery) amqp.Publishing {
	headers := make(amqp.Table, len(d.Headers)+3)
	for k, v := range d.Headers {
		switch k {
		case headerPublishSeq, headerDeliveryCount:
		default:
			headers[k] = v
		}
	}
	return amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		MessageId:       d.MessageId,
		CorrelationId:   d.CorrelationId,
		Type:            d.Type,
		Timestamp:       d.Timestamp,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

// deadLetterPublishing is d as it arrived, headers and properties kept, plus
// why and from where it was dead-lettered.
func deadLetterPublishing(d amqp.Delivery, queue, class string, reason error) amqp.Publishing {
	pub := copyPublishing(d)
	pub.Headers[HeaderDeadLetterReason] = reason.Error()
	pub.Headers[HeaderDeadLetterClass] = class
	pub.Headers[HeaderDeadLetterQueue] = queue
	pub.Headers[HeaderDeadLetterAt] = time.Now().UTC().Format(time.RFC3339Nano)
	return pub
}
