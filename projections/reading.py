"""Reading the timeline view: a customer's messages, their threads and search.

Every read checks the principal's permission and that the customer exists in
the principal's company (one read of the Customer aggregate), so another
tenant's customer looks exactly like a missing one, as everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from commands.access import require
from commands.application import Ledger
from ledger.directory import Customer
from ledger.errors import InvalidCommand
from ledger.values import Channel, Direction, Permission, Principal, Status
from projections.database import PostgresViews, ViewDatabase
from projections.runtime import active_generation, require_active, tuned_for_overlap
from projections.timeline import stored_time

MAX_PAGE = 500
# Messages per read of the store in a replay: small enough that the fold of
# one chunk overlaps the read of the next, big enough to keep round trips few.
EVENTS_CHUNK = 250
ROW_FIELDS = (
    "seq, message_id, occurred_at, direction, channel, subject, preview, sender, "
    "recipients, sent_by, trigger, status, replied, attachments, thread_id, "
    "template_id, template_version"
)


@dataclass(frozen=True)
class TimelineFilter:
    """What a reader narrows a customer's timeline to; all optional."""

    channel: Channel | None = None
    direction: Direction | None = None
    status: Status | None = None
    since: datetime | None = None
    until: datetime | None = None
    sent_by: str | None = None
    template: str | None = None
    search: str | None = None
    limit: int = 50
    after: str | None = None

    def check(self) -> None:
        """Refuse filters that cannot select anything sensible."""
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidCommand(
                "limit", f"Limit is {self.limit}; give a number from 1 to {MAX_PAGE}."
            )
        if self.since and self.until and self.since > self.until:
            raise InvalidCommand(
                "since", "The start of the date range is after its end; swap them."
            )
        if self.search is not None and not self.search.split():
            raise InvalidCommand("search", "The search is empty; give a word to find.")


@dataclass
class TimelinePage:
    """One page of a customer's timeline and how to ask for the next."""

    customer_id: str
    count: int
    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass
class Thread:
    """One conversation: an outbound message and the replies to it, in order."""

    thread_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_at(self) -> str:
        """When the latest message of the thread occurred."""
        return str(self.messages[-1]["time"])


def check_customer(ledger: Ledger, principal: Principal, customer_id: str) -> None:
    """Refuse unless the principal may read and the customer is theirs."""
    require(principal, Permission.VIEW)
    ledger.load_in_tenant(
        Customer,
        Customer.id_for(principal.tenant_id, customer_id),
        principal.tenant_id,
        "customer",
        customer_id,
    )


def customer_timeline(
    ledger: Ledger,
    views: ViewDatabase,
    principal: Principal,
    customer_id: str,
    filters: TimelineFilter | None = None,
) -> TimelinePage:
    """A page of the customer's messages, newest first, with the matching count."""
    filters = filters or TimelineFilter()
    filters.check()
    check_customer(ledger, principal, customer_id)
    prefix = require_active(views, "timeline")

    where, params = conditions(views, prefix, principal, customer_id, filters)
    # The first page counts its matches in the same query; later pages, whose
    # rows the cursor narrows, count them apart.
    counted = "count(*) OVER ()"
    count = 0
    if filters.after:
        count_row = views.fetchone(
            f"SELECT count(*) FROM {prefix}messages WHERE {' AND '.join(where)}",
            params,
        )
        count = int(count_row[0]) if count_row else 0
        moment, seq = parse_cursor(filters.after)
        where.append("(occurred_at < ? OR (occurred_at = ? AND seq < ?))")
        params += [moment, moment, seq]
        counted = "0"
    found = views.fetchall(
        f"SELECT {ROW_FIELDS}, {counted} FROM {prefix}messages "
        f"WHERE {' AND '.join(where)} ORDER BY occurred_at DESC, seq DESC LIMIT ?",
        [*params, filters.limit + 1],
    )
    if found and not filters.after:
        count = int(found[0][-1])
    rows = [row_json(row[:-1]) for row in found[: filters.limit]]
    cursor = None
    if len(found) > filters.limit:
        last = found[filters.limit - 1]
        cursor = f"{last[2]}~{last[0]}"
    return TimelinePage(customer_id, count, rows, cursor)


def conditions(
    views: ViewDatabase,
    prefix: str,
    principal: Principal,
    customer_id: str,
    filters: TimelineFilter,
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses and parameters the filters make."""
    where = ["tenant_id = ?", "customer_id = ?"]
    params: list[Any] = [principal.tenant_id, customer_id]
    exact = {
        "channel": filters.channel and filters.channel.value,
        "direction": filters.direction and filters.direction.value,
        "status": filters.status and filters.status.value,
        "sent_by": filters.sent_by,
        "template_id": filters.template,
    }
    for column, value in exact.items():
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.since:
        where.append("occurred_at >= ?")
        params.append(stored_time(filters.since))
    if filters.until:
        where.append("occurred_at <= ?")
        params.append(stored_time(filters.until))
    if filters.search:
        if views.dialect == "postgres":
            where.append("search @@ plainto_tsquery('simple', ?)")
            params.append(filters.search)
        else:
            # Matching row by row within the customer's rows: an IN over every
            # match in the store costs ~100 ms for a common word at 200,000
            # rows, this under 1 ms.
            where.append(
                f"EXISTS (SELECT 1 FROM {prefix}search WHERE {prefix}search MATCH ? "
                f"AND {prefix}search.rowid = seq)"
            )
            params.append(fts_query(filters.search))
    return where, params


def fts_query(search: str) -> str:
    """Every word of the search as a quoted FTS5 phrase, so none is an operator."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in search.split())


def parse_cursor(cursor: str) -> tuple[str, int]:
    """The (occurred_at, seq) a next_cursor value stands for."""
    moment, _, seq = cursor.rpartition("~")
    try:
        datetime.fromisoformat(moment)
        return moment, int(seq)
    except ValueError:
        raise InvalidCommand(
            "after",
            f"Cursor '{cursor}' is not one this listing gave; pass the "
            "next_cursor value of the previous page.",
        ) from None


def row_json(row: Sequence[Any]) -> dict[str, Any]:
    """A timeline row with the same fields as the listing's JSON output."""
    (
        _seq,
        message_id,
        occurred_at,
        direction,
        channel,
        subject,
        preview,
        sender,
        recipients,
        sent_by,
        trigger,
        status,
        replied,
        attachments,
        thread_id,
        template_id,
        template_version,
    ) = row
    return {
        "message_id": message_id,
        "time": occurred_at,
        "direction": direction,
        "channel": channel,
        "subject": subject,
        "preview": preview,
        "from": sender,
        "to": json.loads(recipients),
        "sent_by": sent_by,
        "trigger": trigger,
        "status": status,
        "replied": bool(replied),
        "attachments": attachments,
        "thread_id": thread_id,
        "template": template_id and f"{template_id} v{template_version}",
    }


def customer_message_ids(
    views: ViewDatabase, principal: Principal, customer_id: str
) -> list[str]:
    """Ids of every message of the customer the timeline holds, oldest first."""
    prefix = require_active(views, "timeline")
    rows = views.fetchall(
        f"SELECT message_id FROM {prefix}messages WHERE tenant_id = ? "
        "AND customer_id = ? ORDER BY occurred_at, seq",
        [principal.tenant_id, customer_id],
    )
    return [str(r[0]) for r in rows]


def customer_threads(
    ledger: Ledger, views: ViewDatabase, principal: Principal, customer_id: str
) -> list[Thread]:
    """The customer's conversations, most recently active first."""
    check_customer(ledger, principal, customer_id)
    prefix = require_active(views, "timeline")
    found = views.fetchall(
        f"SELECT {ROW_FIELDS} FROM {prefix}messages "
        "WHERE tenant_id = ? AND customer_id = ? ORDER BY occurred_at, seq",
        [principal.tenant_id, customer_id],
    )
    threads: dict[str, Thread] = {}
    for row in found:
        message = row_json(row)
        thread = threads.setdefault(message["thread_id"], Thread(message["thread_id"]))
        thread.messages.append(message)
    return sorted(threads.values(), key=lambda t: t.last_at, reverse=True)


class TimelineIndex:
    """The timeline as an index of a customer's messages, for replay.

    It also reads those messages' stored events straight from the event
    store's table in one query per 500 messages, rather than one per message.
    """

    def __init__(self, views: ViewDatabase, ledger: Ledger) -> None:
        self.views = views
        name = getattr(ledger.recorder, "events_table_name", "stored_events")
        self.events_table = views.events_table(name)

    def stored_events(self, message_ids: Sequence[UUID]) -> Iterator[StoredEvent]:
        """The messages' stored events, each message's in version order.

        Read in chunks of messages; while the caller folds one chunk, the
        next is read on another thread, so the database and the fold overlap.
        """
        chunks = [
            message_ids[start : start + EVENTS_CHUNK]
            for start in range(0, len(message_ids), EVENTS_CHUNK)
        ]
        if not chunks:
            return
        with tuned_for_overlap(), ThreadPoolExecutor(1, "replay-reader") as reader:
            upcoming = reader.submit(self.chunk_events, chunks[0])
            for following in [*chunks[1:], None]:
                found = upcoming.result()
                if following is not None:
                    upcoming = reader.submit(self.chunk_events, following)
                yield from found

    def chunk_events(self, message_ids: Sequence[UUID]) -> list[StoredEvent]:
        """One chunk's stored events; on PostgreSQL in binary, so that states
        arrive as bytes rather than hex text."""
        if isinstance(self.views, PostgresViews):
            with self.views.connection.cursor(binary=True) as cursor:
                cursor.execute(
                    "SELECT originator_id, originator_version, topic, state "
                    f"FROM {self.events_table} WHERE originator_id = ANY(%s) "
                    "ORDER BY originator_id, originator_version",
                    [list(message_ids)],
                )
                return [StoredEvent(*row) for row in cursor.fetchall()]
        # The library's SQLite recorder stores ids as 32 hex digits.
        rows = self.views.fetchall(
            "SELECT originator_id, originator_version, topic, state "
            f"FROM {self.events_table} "
            f"WHERE originator_id IN ({', '.join('?' * len(message_ids))}) "
            "ORDER BY originator_id, originator_version",
            [m.hex for m in message_ids],
        )
        return [
            StoredEvent(UUID(str(r[0])), int(r[1]), str(r[2]), bytes(r[3]))
            for r in rows
        ]

    def message_ids(
        self, principal: Principal, customer_id: str
    ) -> tuple[list[str], int]:
        # The position is read first: ids committed after it are found again
        # by the replay's scan of the log's tail, never missed.
        """The customer's message ids and the position the view is complete to."""
        generation = active_generation(self.views, "timeline")
        row = self.views.fetchone(
            "SELECT position FROM projection_generations "
            "WHERE name = 'timeline' AND generation = ?",
            [generation],
        )
        if row is None:
            return [], 0
        return customer_message_ids(self.views, principal, customer_id), int(row[0])
