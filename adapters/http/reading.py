"""What the API and the page read: a customer's timeline, threads, reports, templates.

These read through commands/history.py, which scans the event store. The
timeline, the threads and the status report are each one function
(`TimelineReader`, `ThreadReader`, `StatusReader`) held by the application, so
serving them from the projections means passing other functions to create_app
(see projected.py); the scans here stay the readers of an app without views.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from adapters.http.schemas import MessageRow, ThreadOut, message_row
from commands.access import require
from commands.application import Ledger
from commands.history import creation_events, customer_messages
from ledger.directory import Customer
from ledger.errors import InvalidCommand
from ledger.message import Message
from ledger.template import Template
from ledger.values import Channel, Direction, Permission, Principal, Status

SCAN_PAGE = 1000
MAX_PAGE = 200


@dataclass(frozen=True)
class TimelineQuery:
    """Which of a customer's messages to list, and where the page starts."""

    search: str | None = None
    channel: Channel | None = None
    direction: Direction | None = None
    status: Status | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True)
class TimelinePage:
    """One page of a timeline, newest first, and the total that match."""

    rows: list[MessageRow]
    total: int
    next_cursor: str | None


TimelineReader = Callable[[Ledger, Principal, str, TimelineQuery], TimelinePage]
ReportReader = Callable[
    [Ledger, Principal, str, datetime | None, datetime | None], list[dict[str, Any]]
]
ThreadReader = Callable[[Ledger, Principal, str], list[ThreadOut]]
StatusReader = Callable[[Ledger, Principal, datetime | None], dict[str, Any]]


@dataclass(frozen=True)
class ThreadMember:
    """A message as threading sees it: its row, and the message it answers."""

    row: MessageRow
    answers: str | None


def read_timeline(
    ledger: Ledger, principal: Principal, customer_id: str, query: TimelineQuery
) -> TimelinePage:
    """The customer's messages matching `query`, by a scan of the event store."""
    matching = [
        m
        for m in customer_messages(ledger, principal, customer_id)
        if matches(m, query)
    ]
    matching.sort(key=sort_key, reverse=True)
    start = 0
    if query.cursor:
        after = decode_cursor(query.cursor)
        start = next(
            (n for n, m in enumerate(matching) if sort_key(m) < after), len(matching)
        )
    page = matching[start : start + query.limit]
    more = start + query.limit < len(matching)
    return TimelinePage(
        [message_row(m) for m in page],
        len(matching),
        encode_cursor(sort_key(page[-1])) if more else None,
    )


def matches(message: Message, query: TimelineQuery) -> bool:
    """Whether a message passes the query's filters and search."""
    if query.channel and message.channel != query.channel.value:
        return False
    if query.direction and message.direction != query.direction:
        return False
    if query.status and message.status != query.status:
        return False
    if query.search:
        needle = query.search.casefold()
        haystack = " ".join(
            [message.subject or "", message.text, message.sender, *message.to]
        )
        return needle in haystack.casefold()
    return True


def sort_key(message: Message) -> tuple[str, str]:
    """Newest-first order: time, then id to break ties."""
    return message.occurred_at.isoformat(), str(message.id)


def encode_cursor(key: tuple[str, str]) -> str:
    """An opaque cursor for the position after `key`."""
    return base64.urlsafe_b64encode("|".join(key).encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The position a cursor stands for; refuses one we did not give out."""
    try:
        moment, _, message_id = (
            base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        )
        datetime.fromisoformat(moment)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCommand(
            "cursor",
            "The cursor is not one this API gave out; pass next_cursor from the "
            "previous page unchanged, or leave it out for the first page.",
        ) from None
    return moment, message_id


def read_threads(
    ledger: Ledger, principal: Principal, customer_id: str
) -> list[ThreadOut]:
    """A ThreadReader: the customer's conversations, by a scan of the event store."""
    found = customer_messages(ledger, principal, customer_id)
    return thread_rows([ThreadMember(message_row(m), m.in_reply_to) for m in found])


def thread_rows(members: Iterable[ThreadMember]) -> list[ThreadOut]:
    """Each message with the replies it received, most recently active first.

    A message that answers none starts a thread. A reply joins the thread of
    the message it answers when that message is among `members`, and otherwise
    starts a thread of its own. Ties are broken by id, so every reader gives
    the same order.
    """
    members = list(members)
    replies: dict[str, list[MessageRow]] = {
        m.row.message_id: [] for m in members if not m.answers
    }
    roots = {m.row.message_id: m.row for m in members if not m.answers}
    for member in members:
        if member.answers and member.answers in roots:
            replies[member.answers].append(member.row)
        elif member.answers:
            roots[member.row.message_id] = member.row
            replies[member.row.message_id] = []
    threads = []
    for message_id, root in roots.items():
        answered = sorted(replies[message_id], key=row_order)
        last = max([root, *answered], key=row_order)
        threads.append(
            ThreadOut(root=root, replies=answered, last_activity=last.occurred_at)
        )
    return sorted(
        threads, key=lambda t: (t.last_activity, *row_order(t.root)), reverse=True
    )


def row_order(row: MessageRow) -> tuple[datetime, str]:
    """Oldest first: time, then id to break ties."""
    return row.occurred_at, row.message_id


def company_messages(ledger: Ledger, principal: Principal) -> Iterator[Message]:
    """Every message of the principal's company, by a scan of the log."""
    for event in creation_events(ledger):
        if event.tenant_id == principal.tenant_id:
            message = ledger.load(Message, event.originator_id)
            if message is not None:
                yield message


def read_report(
    ledger: Ledger, principal: Principal, since: datetime | None
) -> dict[str, Any]:
    """A StatusReader: the company's messages by status, by a scan of the log."""
    require(principal, Permission.VIEW)
    since = as_utc(since)
    counts: Counter[tuple[str, str]] = Counter()
    for message in company_messages(ledger, principal):
        if since is None or message.occurred_at >= since:
            counts[(message.channel, message.status.value)] += 1
    return summarise(counts.items())


def as_utc(moment: datetime | None) -> datetime | None:
    """A time without a zone read as UTC, so that it compares with the log's."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def summarise(counts: Iterable[tuple[tuple[str, str], int]]) -> dict[str, Any]:
    """Counts per (channel, status) as totals by status and by channel."""
    by_channel: dict[str, dict[str, int]] = {}
    by_status: Counter[str] = Counter()
    for (channel, status), number in counts:
        by_channel.setdefault(channel, {})[status] = number
        by_status[status] += number
    return {
        "total": sum(by_status.values()),
        "by_status": dict(by_status),
        "by_channel": by_channel,
    }


def company_templates(ledger: Ledger, principal: Principal) -> list[Template]:
    """The company's templates that have at least one version, by id."""
    require(principal, Permission.VIEW)
    found = [
        template
        for aggregate_id in created_in_tenant(ledger, principal, Template.Created)
        if (template := ledger.load(Template, aggregate_id)) is not None
        and template.versions
    ]
    return sorted(found, key=lambda t: t.template_id)


def company_customers(ledger: Ledger, principal: Principal) -> list[Customer]:
    """The company's customers, by name."""
    require(principal, Permission.VIEW)
    found = [
        customer
        for aggregate_id in created_in_tenant(ledger, principal, Customer.Registered)
        if (customer := ledger.load(Customer, aggregate_id)) is not None
    ]
    return sorted(found, key=lambda c: c.name.casefold())


def created_in_tenant(
    ledger: Ledger, principal: Principal, created: type[Any]
) -> Iterator[UUID]:
    """Ids of the tenant's aggregates made by the creation event `created`."""
    topics = (get_topic(created),)
    start = 1
    while True:
        page = ledger.recorder.select_notifications(start, SCAN_PAGE, topics=topics)
        for notification in page:
            event = ledger.mapper.to_domain_event(notification)
            if getattr(event, "tenant_id", None) == principal.tenant_id:
                yield event.originator_id
        if len(page) < SCAN_PAGE:
            return
        start = page[-1].id + 1
