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
	// ReasonMalformed or ReasonDeliveryLimit.
	HeaderDeadLetterClass = "x-gdpr-dead-letter-class"
	headerPublishSeq      = "x-gdpr-publish-seq"
	headerDeliveryCount   = "x-delivery-count"
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
			switch n := v.(type) {
			case int64:
				m.DeliveryCount = n
			case int32:
				m.DeliveryCount = int64(n)
			case int:
				m.DeliveryCount = int64(n)
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

// deadLetterPublishing is d as it arrived, headers and properties kept, plus
// why and from where it was dead-lettered.
func deadLetterPublishing(d amqp.Delivery, queue, class string, reason error) amqp.Publishing {
	headers := make(amqp.Table, len(d.Headers)+3)
	for k, v := range d.Headers {
		if k != headerPublishSeq {
			headers[k] = v
		}
	}
	headers[HeaderDeadLetterReason] = reason.Error()
	headers[HeaderDeadLetterClass] = class
	headers[HeaderDeadLetterQueue] = queue
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
