"""Reading a customer's messages and a message's events from the event store.

These reads scan the store itself rather than a projection: they are the
authoritative record a compliance officer replays, and they need nothing but
the log. The projections in `projections/` serve the fast listings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from commands.access import require
from commands.application import Ledger
from commands.delivery import get_message
from ledger.directory import Customer
from ledger.message import Message
from ledger.values import Permission, Principal

SCAN_PAGE = 1000
CREATION_TOPICS = (get_topic(Message.Queued), get_topic(Message.Received))
# What the library keeps on every event, beside the event's own fields.
BOOKKEEPING = ("originator_id", "originator_version", "timestamp", "originator_topic")


@dataclass(frozen=True)
class HistoryEntry:
    """One event of a message, as a compliance officer reads it."""

    version: int
    event: str
    recorded_at: datetime
    occurred_at: datetime | None
    fields: dict[str, Any]


def customer_messages(
    ledger: Ledger, principal: Principal, customer_id: str
) -> list[Message]:
    """The customer's messages, newest first."""
    require(principal, Permission.VIEW)
    ledger.load_in_tenant(
        Customer,
        Customer.id_for(principal.tenant_id, customer_id),
        principal.tenant_id,
        "customer",
        customer_id,
    )
    found = [
        message
        for event in creation_events(ledger)
        if event.tenant_id == principal.tenant_id and event.customer_id == customer_id
        if (message := ledger.load(Message, event.originator_id)) is not None
    ]
    return sorted(found, key=lambda m: m.occurred_at, reverse=True)


def creation_events(ledger: Ledger, start: int = 1) -> Iterator[Any]:
    """Every Queued and Received event in the log from `start`, oldest first."""
    while True:
        page = ledger.recorder.select_notifications(
            start, SCAN_PAGE, topics=CREATION_TOPICS
        )
        for notification in page:
            yield ledger.mapper.to_domain_event(notification)
        if len(page) < SCAN_PAGE:
            return
        start = page[-1].id + 1


def message_history(
    ledger: Ledger, principal: Principal, message_key: str
) -> tuple[Message, list[HistoryEntry]]:
    """A message and every event in its history, in order."""
    message = get_message(ledger, principal, message_key)
    entries = [entry(event) for event in ledger.events.get(message.id)]
    return message, entries


def entry(event: Any) -> HistoryEntry:
    """The event as a compliance officer reads it: its own fields, with the
    library's bookkeeping shown apart or left out."""
    fields = dict(vars(event))
    for key in BOOKKEEPING:
        fields.pop(key, None)
    occurred_at = fields.pop("occurred_at", None)
    return HistoryEntry(
        event.originator_version,
        type(event).__name__,
        event.timestamp,
        occurred_at,
        fields,
    )
