"""Compliance replay: a customer's messages as they stood at one instant.

The replay is built from the event store alone. Each message's events are
read from the store and kept up to the cut-off, which is the time the ledger
*recorded* each event (its `timestamp`), not the time the provider says it
happened: the question a replay answers is "what did the ledger know then".
The message is then folded from exactly those events by the aggregate's own
rules.

Finding which messages belong to the customer is the only step a read model
may speed up: an index (the timeline view) names the message ids it holds and
the log position it is complete to; the tail of the log after that position
is scanned here, so a lagging view never hides a message. Without an index the
whole log's creation events are scanned.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from commands.access import require
from commands.application import Ledger
from commands.decoding import EventReader
from commands.history import HistoryEntry, creation_events, entry
from ledger.directory import Customer
from ledger.errors import InvalidCommand
from ledger.message import Message
from ledger.values import Permission, Principal

logger = logging.getLogger(__name__)


class MessageIndex(Protocol):
    """A read model that knows which messages a customer has."""

    def message_ids(
        self, principal: Principal, customer_id: str
    ) -> tuple[Iterable[str], int]:
        """The customer's message ids and the log position they are complete to."""
        ...

    def stored_events(self, message_ids: Sequence[UUID]) -> Iterable[StoredEvent]:
        """The stored events of these messages, each message's in version order."""
        ...


@dataclass(frozen=True)
class ReplayedMessage:
    """One message with the state and the events it had at the cut-off."""

    message: Message
    events: list[HistoryEntry]


@dataclass(frozen=True)
class Replay:
    """A customer's communication history as the ledger knew it at `as_of`."""

    customer_id: str
    as_of: datetime
    messages: list[ReplayedMessage]


def replay_customer(
    ledger: Ledger,
    principal: Principal,
    customer_id: str,
    as_of: datetime,
    index: MessageIndex | None = None,
) -> Replay:
    """Every message of the customer, newest first, as recorded up to `as_of`."""
    require(principal, Permission.VIEW)
    if as_of.tzinfo is None:
        raise InvalidCommand(
            "as_of",
            f"The time {as_of.isoformat()} has no time zone; add one, "
            "for example 2026-03-01T17:00:00Z.",
        )
    ledger.load_in_tenant(
        Customer,
        Customer.id_for(principal.tenant_id, customer_id),
        principal.tenant_id,
        "customer",
        customer_id,
    )

    candidates = message_ids(ledger, principal, customer_id, index)
    histories = stored_histories(ledger, candidates, index)
    read = EventReader(ledger.mapper)
    replayed = [
        found
        for stored in histories
        if (found := message_as_of(read, principal, customer_id, stored, as_of))
    ]

    replayed.sort(key=lambda r: r.message.occurred_at, reverse=True)
    return Replay(customer_id, as_of, replayed)


def message_ids(
    ledger: Ledger,
    principal: Principal,
    customer_id: str,
    index: MessageIndex | None,
) -> list[UUID]:
    """The customer's message ids: the index's, plus the log it has not read."""
    known: list[UUID] = []
    start = 1
    if index is not None:
        ids, position = index.message_ids(principal, customer_id)
        known = [UUID(i) for i in ids]
        start = position + 1
    for event in creation_events(ledger, start):
        if event.tenant_id == principal.tenant_id and event.customer_id == customer_id:
            known.append(event.originator_id)
    return list(dict.fromkeys(known))


def stored_histories(
    ledger: Ledger, message_ids: list[UUID], index: MessageIndex | None
) -> Iterator[list[StoredEvent]]:
    """Each message's stored events, read in bulk when the index can.

    Histories are handed on as they arrive, so folding overlaps reading.
    """
    if index is None:
        for message_id in message_ids:
            yield list(ledger.recorder.select_events(message_id))
        return
    history: list[StoredEvent] = []
    for stored in index.stored_events(message_ids):
        if history and history[0].originator_id != stored.originator_id:
            yield history
            history = []
        history.append(stored)
    if history:
        yield history


def message_as_of(
    read: EventReader,
    principal: Principal,
    customer_id: str,
    history: list[StoredEvent],
    as_of: datetime,
) -> ReplayedMessage | None:
    """The message folded from the events recorded by `as_of`, if it existed.

    Each event is folded as soon as it is decoded, by the aggregate's own
    `mutate`, in version order as the library's repository folds it.
    """
    message: Message | None = None
    entries: list[HistoryEntry] = []
    for stored in history:
        event: Any = read(stored)
        if event.timestamp > as_of:
            break
        message = event.mutate(message)
        entries.append(entry(event))
    if (
        not isinstance(message, Message)
        or message.tenant_id != principal.tenant_id
        or message.customer_id != customer_id
    ):
        return None
    return ReplayedMessage(message, entries)
