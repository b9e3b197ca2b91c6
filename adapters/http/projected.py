"""Timelines, threads and reports served from the projections, not a log scan.

Rows come from the view alone, without loading the messages. Threads and the
status report read the timeline view, whose rows hold each message's status (by
the domain's fold) and thread; the reporting view keeps the delivery stages of
outbound messages, not statuses, and serves the delivery reports. Each read
first brings the projection up to the log's head, as the CLI's listing does, so
a page shown right after a send includes that send even when the projection
worker has not yet caught up. The worker and the reads share the
view safely: a runner that finds the position moved by another gives way, and
the rows it would have written are already there.

The view's connection is not shared between threads: each request thread opens
its own on first use, and `close` closes them all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from adapters.http.reading import (
    ThreadMember,
    TimelinePage,
    TimelineQuery,
    as_utc,
    summarise,
    thread_rows,
)
from adapters.http.schemas import MessageRow, ThreadOut
from commands.access import require
from commands.application import Ledger
from ledger.errors import InvalidCommand
from ledger.values import Channel, Direction, Permission, Principal, Status
from projections.catalog import projection_named
from projections.database import ViewDatabase, ViewsPerThread
from projections.reading import TimelineFilter, customer_threads, customer_timeline
from projections.reporting import ReportPeriod, delivery_report, stage_totals
from projections.runtime import (
    PositionMoved,
    ProjectionRunner,
    projection_status,
    require_active,
)
from projections.timeline import stored_time

logger = logging.getLogger(__name__)

# The projection names these filters as the CLI does; the API as its parameters.
API_FIELDS = {"after": "cursor", "search": "q"}


def projected_row(row: dict[str, Any]) -> MessageRow:
    """A timeline row of the projection as the API's MessageRow."""
    return MessageRow(
        message_id=row["message_id"],
        occurred_at=datetime.fromisoformat(row["time"]),
        direction=Direction(row["direction"]),
        channel=Channel(row["channel"]),
        subject=row["subject"],
        preview=row["preview"],
        sender=row["from"],
        to=row["to"],
        sent_by=row["sent_by"],
        trigger=row["trigger"],
        status=Status(row["status"]),
        replied=row["replied"],
        attachments=row["attachments"],
    )


def thread_member(row: dict[str, Any]) -> ThreadMember:
    """A timeline row as threading sees it.

    The view's thread of an inbound message is the message it answers (or the
    message itself). An outbound message answers none, though the view files a
    resend under its original.
    """
    message_id = row["message_id"]
    inbound = row["direction"] == Direction.INBOUND.value
    answers = row["thread_id"] if inbound and row["thread_id"] != message_id else None
    return ThreadMember(projected_row(row), answers)


def status_counts(
    views: ViewDatabase, principal: Principal, since: datetime | None
) -> list[tuple[tuple[str, str], int]]:
    """The company's messages per (channel, status) in the timeline view."""
    prefix = require_active(views, "timeline")
    where, params = "tenant_id = ?", [principal.tenant_id]
    if since is not None:
        where += " AND occurred_at >= ?"
        params.append(stored_time(since))
    rows = views.fetchall(
        f"SELECT channel, status, count(*) FROM {prefix}messages WHERE {where} "
        "GROUP BY channel, status ORDER BY channel, status",
        params,
    )
    return [((str(channel), str(status)), int(n)) for channel, status, n in rows]


class ProjectionReads:
    """Timelines, threads and reports from the projections of the store at `env`."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.connections = ViewsPerThread(self.env)

    def views(self) -> ViewDatabase:
        """This thread's connection to the views."""
        return self.connections.get()

    def timeline(
        self,
        ledger: Ledger,
        principal: Principal,
        customer_id: str,
        query: TimelineQuery,
    ) -> TimelinePage:
        """A TimelineReader: one page from the timeline view."""
        views = self.views()
        self.catch_up(ledger, views, "timeline")
        filters = TimelineFilter(
            channel=query.channel,
            direction=query.direction,
            status=query.status,
            search=query.search,
            limit=query.limit,
            after=query.cursor,
        )
        try:
            page = customer_timeline(ledger, views, principal, customer_id, filters)
        except InvalidCommand as exc:
            exc.field = API_FIELDS.get(exc.field, exc.field)
            raise
        rows = [projected_row(row) for row in page.rows]
        return TimelinePage(rows, page.count, page.next_cursor)

    def threads(
        self, ledger: Ledger, principal: Principal, customer_id: str
    ) -> list[ThreadOut]:
        """A ThreadReader: the customer's conversations from the timeline view."""
        views = self.views()
        self.catch_up(ledger, views, "timeline")
        found = customer_threads(ledger, views, principal, customer_id)
        return thread_rows(
            thread_member(row) for thread in found for row in thread.messages
        )

    def status_report(
        self, ledger: Ledger, principal: Principal, since: datetime | None
    ) -> dict[str, Any]:
        """A StatusReader: the company's messages by status, from the timeline."""
        require(principal, Permission.VIEW)
        views = self.views()
        self.catch_up(ledger, views, "timeline")
        return summarise(status_counts(views, principal, as_utc(since)))

    def delivery_report(
        self,
        ledger: Ledger,
        principal: Principal,
        report: str,
        since: datetime | None,
        until: datetime | None,
    ) -> list[dict[str, Any]]:
        """A ReportReader: one report's rows from the reporting view."""
        views = self.views()
        self.catch_up(ledger, views, "reporting")
        return delivery_report(views, principal, report, ReportPeriod(since, until))

    def catch_up(self, ledger: Ledger, views: ViewDatabase, name: str) -> None:
        """Bring projection `name` up to the head, unless another runner is at it."""
        try:
            ProjectionRunner(ledger, views, projection_named(name)).catch_up()
        except PositionMoved:
            logger.debug("%s moved on by another runner while catching up", name)

    def stage_count(self, ledger: Ledger, stage: str) -> float:
        """Messages of every company that reached `stage`, up to the log's head."""
        views = self.views()
        self.catch_up(ledger, views, "reporting")
        return float(stage_totals(views).get(stage, 0))

    def lag(self, ledger: Ledger, name: str) -> float:
        """Events recorded but not yet processed by projection `name`."""
        state = projection_status(ledger, self.views(), projection_named(name))
        return float(state.lag)

    def close(self) -> None:
        """Close every thread's connection to the views."""
        self.connections.close()
