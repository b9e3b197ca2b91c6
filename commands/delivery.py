"""Use cases after a message is queued: provider outcomes and retries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from commands.access import require
from commands.application import Decision, Ledger
from commands.models import RecordDeliveryEvent, RetryMessage
from commands.ports import now
from ledger.errors import NotFound
from ledger.message import Message
from ledger.values import Attribution, Permission, Principal, Status

OUTCOME_EVENTS: dict[str, type[Message.ProviderEvent]] = {
    "sent": Message.Sent,
    "delivered": Message.Delivered,
    "opened": Message.Opened,
    "bounced": Message.Bounced,
    "failed": Message.Failed,
}


@dataclass(frozen=True)
class Outcome:
    """The message's status after a command, and whether anything was appended."""

    message_id: uuid.UUID
    status: Status
    recorded: bool
    attempt: int


def message_id_of(key: str) -> uuid.UUID:
    try:
        return uuid.UUID(key)
    except ValueError:
        raise NotFound("message", key) from None


def get_message(ledger: Ledger, principal: Principal, key: str) -> Message:
    """A message of the principal's company."""
    require(principal, Permission.VIEW)
    return ledger.load_in_tenant(
        Message, message_id_of(key), principal.tenant_id, "message", key
    )


def retry_message(
    ledger: Ledger, principal: Principal, command: RetryMessage
) -> Outcome:
    """Start a new attempt at a failed or bounced message, once per idempotency key.

    A repeat (a broker redelivery after a crash between commit and ack, say)
    answers with the attempt the first one started and records nothing.
    """
    require(principal, Permission.CREATE)

    def decide() -> Decision[Outcome]:
        message = get_message(ledger, principal, command.message_id)
        earlier = message.attempt_retried_by(command.idempotency_key)
        if earlier is not None:
            return Decision(Outcome(message.id, message.status, False, earlier))
        requested_by = Attribution(principal.user_id).as_dict()
        attempt = message.retry(requested_by, now(), command.idempotency_key)
        return Decision(Outcome(message.id, message.status, True, attempt), [message])

    return ledger.execute(decide)


def record_delivery_event(
    ledger: Ledger, principal: Principal, command: RecordDeliveryEvent
) -> Outcome:
    """Record one provider outcome once; a repeat of the same event appends nothing."""
    require(principal, Permission.CREATE)
    return ledger.execute(lambda: decide_delivery_event(ledger, principal, command))


def decide_delivery_event(
    ledger: Ledger, principal: Principal, command: RecordDeliveryEvent
) -> Decision[Outcome]:
    message = get_message(ledger, principal, command.message_id)
    attempt = command.attempt
    if attempt is None and command.provider_message_id:
        attempt = message.provider_message_ids.get(command.provider_message_id)
    fields: dict[str, object] = {
        "attempt": attempt,
        "occurred_at": command.occurred_at or now(),
        "provider": command.provider,
        "provider_event_id": command.provider_event_id,
        "detail": command.detail,
    }
    fields.update(outcome_fields(command))
    recorded = message.record_provider_event(OUTCOME_EVENTS[command.outcome], **fields)
    outcome = Outcome(
        message.id, message.status, recorded, attempt or message.current_attempt
    )
    return Decision(outcome, [message])


def outcome_fields(command: RecordDeliveryEvent) -> dict[str, object]:
    """The fields that only one kind of outcome carries."""
    if command.outcome == "sent":
        return {
            "provider_message_id": command.provider_message_id or "",
            "accepted": command.accepted,
            "refused": command.refused,
        }
    if command.outcome == "delivered":
        return {"recipient": command.recipient}
    if command.outcome == "opened":
        return {"recipient": command.recipient, "machine": command.machine_open}
    if command.outcome == "bounced":
        return {
            "recipient": command.recipient,
            "hard": command.hard_bounce,
            "status_code": command.status_code,
            "diagnostic": command.reason,
        }
    return {
        "reason": command.reason or "The provider reported a failure.",
        "permanent": command.permanent,
    }
