"""An erasure participant in Python (pika), following docs/protocol.md.

    apt-get install python3-pika      # or: pip install pika
    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/ AMQP_PREFIX=gdpr PARTICIPANT_NAME=newsletter python3 participant.py

Register it in the canceller's configuration as {name: newsletter, kind: amqp},
and check it with `gdpr participant check newsletter` (app/cmd_participant_check_test.go does).
"""
import json
import os
import secrets
import sys
import time
import uuid
from datetime import datetime, timezone

import pika
import pika.exceptions

NAME = os.environ.get("PARTICIPANT_NAME", "newsletter")
PREFIX = os.environ.get("AMQP_PREFIX", "gdpr")
EXCHANGE = PREFIX
DLX = f"{PREFIX}.dlx"
QUEUE = f"{PREFIX}.participant.{NAME}"
# The namespace the Go SDK derives confirmation ids with: confirming one
# command twice yields one id, which the canceller deduplicates.
NAMESPACE = uuid.UUID("5b0f2c1e-7f4a-4c57-9a55-6a8f0f3c2d10")

subscribers = {"user-1": "jane@example.com"}  # stands in for the service's data


def erase(subject):
    """Idempotent: a second call for the same subject answers not_found.

    Subscribers are found by id: without one the answer is cannot_erase,
    never not_found (which would tell the person their data was deleted)."""
    if not subject.get("id"):
        return "cannot_erase"
    if subscribers.pop(subject.get("id"), None) is not None:
        return "erased"
    return "not_found"


def child_traceparent(parent):
    """Continue the command's trace: same trace id, a new span id."""
    parts = (parent or "").split("-")
    trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 and parts[1].strip("0") else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


def parse(props, body):
    """The command, or the reason it cannot be acted on."""
    if props.type != "erasure.command" or not props.message_id:
        return None, f"not an erasure command (type {props.type!r})"
    try:
        cmd = json.loads(body)
    except ValueError:
        return None, "body is not JSON"
    if not isinstance(cmd, dict):
        return None, "body is not a JSON object"
    if cmd.get("version") != 1:
        return None, f"protocol version {cmd.get('version')} is not supported (want 1)"
    if cmd.get("participant") != NAME:
        return None, f"command for participant {cmd.get('participant')!r} reached {NAME!r}"
    subject = cmd.get("subject")
    if not cmd.get("request_id") or not isinstance(subject, dict) or not (subject.get("id") or subject.get("email")):
        return None, "request_id or subject missing"
    return cmd, None


def dead_letter(ch, method, props, body, reason):
    """Dead-letter with a reason: a plain reject cannot add headers."""
    headers = dict(props.headers or {})
    headers.update({"x-gdpr-dead-letter-reason": reason, "x-gdpr-dead-letter-class": "poison",
                    "x-gdpr-dead-letter-queue": f"participant.{NAME}"})
    ch.basic_publish(DLX, method.routing_key, body, properties=pika.BasicProperties(
        message_id=props.message_id, type=props.type, correlation_id=props.correlation_id,
        content_type=props.content_type, delivery_mode=2, timestamp=props.timestamp, headers=headers))
    ch.basic_ack(method.delivery_tag)


def main():
    conn = pika.BlockingConnection(pika.URLParameters(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")))
    ch = conn.channel()
    # Exactly the arguments of docs/protocol.md ("The participant queue"), so either side may start first.
    ch.exchange_declare(EXCHANGE, "topic", durable=True)
    ch.exchange_declare(DLX, "fanout", durable=True)
    ch.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": DLX})
    ch.queue_bind(QUEUE, EXCHANGE, routing_key=f"erasure.command.{NAME}")
    ch.confirm_delivery()  # publisher confirms: basic_publish raises when not confirmed or returned
    ch.basic_qos(prefetch_count=8)

    def on_command(ch, method, props, body):
        cmd, reason = parse(props, body)
        if cmd is None:
            dead_letter(ch, method, props, body, reason)
            return
        outcome = erase(cmd["subject"])
        confirmation = {"version": 1, "request_id": cmd["request_id"], "participant": NAME,
                        "outcome": outcome, "attempt": cmd.get("attempt", 1)}
        properties = pika.BasicProperties(
            message_id=str(uuid.uuid5(NAMESPACE, NAME + "\x00" + props.message_id)),
            type="erasure.confirmed", correlation_id=cmd["request_id"],
            content_type="application/json", delivery_mode=2,
            timestamp=int(time.time()),  # AMQP timestamps are seconds
            headers={"causation_id": props.message_id,
                     "occurred_at": datetime.now(timezone.utc).isoformat(),
                     "traceparent": child_traceparent((props.headers or {}).get("traceparent"))})
        for pause in (1, 2, 4, 8):
            try:
                ch.basic_publish(EXCHANGE, "erasure.confirmed", json.dumps(confirmation).encode(),
                                 properties=properties, mandatory=True)
                ch.basic_ack(method.delivery_tag)  # only after the confirmation was confirmed
                return
            except pika.exceptions.UnroutableError:
                # No canceller queue on this prefix: keep the command and try again.
                print("confirmation unroutable; retrying", file=sys.stderr)
                conn.sleep(pause)
        ch.basic_nack(method.delivery_tag, requeue=True)

    ch.basic_consume(QUEUE, on_command)
    print("participant running", NAME, file=sys.stderr, flush=True)
    ch.start_consuming()


if __name__ == "__main__":
    main()
