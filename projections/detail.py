"""Message detail: one message in full, each recipient's and attempt's outcome.

The detail of one message is read from that message's own events, which is
one indexed read of the store and always current; only its thread (the other
messages of the conversation) comes from the timeline view. Statuses are
folded by the domain's rules (`ledger.status.AttemptFacts`, through the
timeline's `MessageFacts`), per attempt and per recipient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventsourcing.utils import get_topic

from commands.application import Ledger
from commands.history import HistoryEntry, message_history
from ledger.message import Message
from ledger.status import AttemptFacts
from ledger.values import Direction, Principal
from projections.database import ViewDatabase
from projections.reading import ROW_FIELDS, row_json
from projections.runtime import RecordedEvent, active_generation, table_prefix
from projections.timeline import FACT_SETTERS, MessageFacts

PROVIDER_EVENTS = {"Sent", "Delivered", "Opened", "Bounced", "Failed"}
EVENT_TOPICS = {
    cls.__name__: get_topic(cls)
    for cls in (
        Message.Sent,
        Message.Delivered,
        Message.Opened,
        Message.Bounced,
        Message.Failed,
        Message.Retried,
        Message.ReplyReceived,
    )
}


@dataclass
class AttemptDetail:
    """One delivery attempt: its status and every provider report about it."""

    number: int
    status: str
    reports: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class MessageDetail:
    """Everything recorded about one message, arranged for reading."""

    message: Message
    recipients: dict[str, str]
    attempts: list[AttemptDetail]
    status_history: list[dict[str, Any]]
    thread: list[dict[str, Any]]
    history: list[HistoryEntry]


def message_detail(
    ledger: Ledger, views: ViewDatabase, principal: Principal, message_key: str
) -> MessageDetail:
    """The message with its recipients' outcomes, attempts, history and thread."""
    message, history = message_history(ledger, principal, message_key)
    return MessageDetail(
        message=message,
        recipients=recipient_outcomes(message, history),
        attempts=attempts_of(message, history),
        status_history=status_history(message, history),
        thread=thread_of(views, principal, message),
        history=history,
    )


def recipient_outcomes(message: Message, history: list[HistoryEntry]) -> dict[str, str]:
    """Each recipient's status on the current attempt.

    A report that names a recipient counts for that recipient only; one that
    names none (most SMS and many webhook events) counts for all of them. A
    recipient the provider refused when it accepted the send is `refused`.
    """
    if message.direction == Direction.INBOUND:
        return {message.sender: "received"}
    everyone = [*message.to, *message.cc, *message.bcc]
    facts = {address: AttemptFacts(message.current_attempt) for address in everyone}
    refused: dict[str, str] = {}
    for item in history:
        if item.event not in PROVIDER_EVENTS:
            continue
        if item.fields.get("attempt") != message.current_attempt:
            continue
        if item.event == "Sent":
            refused.update(item.fields.get("refused") or {})
        named = item.fields.get("recipient")
        setter = FACT_SETTERS[EVENT_TOPICS[item.event]]
        for address in [named] if named in facts else everyone:
            setter.set_fact(facts[address])
    return {
        address: "refused" if address in refused else facts[address].status.value
        for address in everyone
    }


def attempts_of(message: Message, history: list[HistoryEntry]) -> list[AttemptDetail]:
    """Every attempt, oldest first, with its provider reports verbatim."""
    if message.direction == Direction.INBOUND:
        return []
    attempts = {
        number: AttemptDetail(number, facts.status.value)
        for number, facts in sorted(message.attempts.items())
    }
    for item in history:
        if item.event in PROVIDER_EVENTS:
            number = int(item.fields["attempt"])
            attempts.setdefault(number, AttemptDetail(number, "queued"))
            attempts[number].reports.append(
                {
                    "event": item.event,
                    "occurred_at": item.occurred_at,
                    "recorded_at": item.recorded_at,
                    "provider": item.fields.get("provider"),
                    "provider_event_id": item.fields.get("provider_event_id"),
                    "detail": item.fields.get("detail"),
                }
            )
    return list(attempts.values())


def status_history(
    message: Message, history: list[HistoryEntry]
) -> list[dict[str, Any]]:
    """The message's status after each of its events, in the order recorded."""
    facts = MessageFacts(message.direction.value)
    steps = []
    for item in history:
        topic = EVENT_TOPICS.get(item.event)
        if topic is not None:
            facts.apply(
                RecordedEvent(0, str(message.id), item.version, topic, item.fields)
            )
        steps.append(
            {
                "version": item.version,
                "event": item.event,
                "recorded_at": item.recorded_at,
                "status": facts.status,
            }
        )
    return steps


def thread_of(
    views: ViewDatabase, principal: Principal, message: Message
) -> list[dict[str, Any]]:
    """The conversation the message belongs to, oldest first, from the timeline."""
    if not views.table_exists("projection_generations"):
        return []
    generation = active_generation(views, "timeline")
    if generation is None:
        return []
    prefix = table_prefix("timeline", generation)
    thread_id = message.in_reply_to or message.resend_of or str(message.id)
    # The message that started the thread, by its id, then the replies and
    # resends the partial index `by_thread` holds.
    rows = views.fetchall(
        f"SELECT {ROW_FIELDS} FROM {prefix}messages "
        "WHERE message_id = ? AND tenant_id = ? AND thread_id = ? "
        f"UNION ALL SELECT {ROW_FIELDS} FROM {prefix}messages "
        "WHERE tenant_id = ? AND thread_id = ? AND thread_id <> message_id "
        "ORDER BY occurred_at, seq",
        [thread_id, principal.tenant_id, thread_id, principal.tenant_id, thread_id],
    )
    return [row_json(row) for row in rows]
