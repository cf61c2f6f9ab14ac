"""An erasure participant in Python (pika), following docs/protocol.md.

    pip install pika
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ AMQP_PREFIX=gdpr python participant.py

Register it in the canceller's configuration as {name: newsletter, kind: amqp}.
"""
import json
import os
import uuid
from datetime import datetime, timezone

import pika

NAME = "newsletter"
PREFIX = os.environ.get("AMQP_PREFIX", "gdpr")
EXCHANGE = PREFIX
QUEUE = f"{PREFIX}.participant.{NAME}"
# Deterministic confirmation ids: confirming one command twice yields one id,
# which the canceller deduplicates.
NAMESPACE = uuid.UUID("5b0f2c1e-7f4a-4c57-9a55-6a8f0f3c2d10")

subscribers = {"user-1": "jane@example.com"}  # stands in for the service's data


def erase(subject):
    """Idempotent: a second call for the same subject answers not_found."""
    if subscribers.pop(subject.get("id"), None) is not None:
        return "erased"
    return "not_found"


def main():
    conn = pika.BlockingConnection(pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")))
    ch = conn.channel()
    # Same arguments as gdpr declares, so either side may start first.
    ch.queue_declare(QUEUE, durable=True, arguments={
        "x-queue-type": "quorum", "x-delivery-limit": 20, "x-dead-letter-exchange": f"{PREFIX}.dlx"})
    ch.queue_bind(QUEUE, EXCHANGE, routing_key=f"erasure.command.{NAME}")
    ch.confirm_delivery()  # publisher confirms: basic_publish raises if not confirmed
    ch.basic_qos(prefetch_count=8)

    def on_command(ch, method, props, body):
        try:
            cmd = json.loads(body)
            assert props.type == "erasure.command" and cmd["version"] == 1 and cmd["participant"] == NAME
        except Exception:
            ch.basic_reject(method.delivery_tag, requeue=False)  # dead-lettered
            return
        outcome = erase(cmd["subject"])
        confirmation = {"version": 1, "request_id": cmd["request_id"], "participant": NAME,
                        "outcome": outcome, "attempt": cmd["attempt"]}
        ch.basic_publish(
            EXCHANGE, "erasure.confirmed", json.dumps(confirmation).encode(),
            properties=pika.BasicProperties(
                message_id=str(uuid.uuid5(NAMESPACE, NAME + "\x00" + props.message_id)),
                type="erasure.confirmed", correlation_id=cmd["request_id"],
                content_type="application/json", delivery_mode=2,
                headers={"causation_id": props.message_id,
                         "occurred_at": datetime.now(timezone.utc).isoformat(),
                         "traceparent": (props.headers or {}).get("traceparent", "")}),
            mandatory=True)
        ch.basic_ack(method.delivery_tag)  # only after the confirmation was confirmed

    ch.basic_consume(QUEUE, on_command)
    ch.start_consuming()


if __name__ == "__main__":
    main()
