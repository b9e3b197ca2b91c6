"""Reading the event log for projections: only the events a projection wants.

A projection lists the topics it applies; the log is read with that list as a
filter in the query itself, so the events it ignores never leave the
database, let alone get decoded. Each page says how far into the log it
*covers*, which is further than its last event when the page is short: the
runner moves its position to the end of what it covered, over ignored events
too.

On PostgreSQL the read is one prepared statement in binary, returning plain
tuples of only the columns needed (the library's reader returns every column
as a dict and builds a `Notification` per row). It runs on the views' own
connection, or on their second connection when the runner reads the next page
while the first writes the current one. On SQLite the library's reader is
used.

Reading up to a head taken beforehand is safe because the library's recorder
locks the events table for each insert, so ids become visible in order: no
id below the head can still appear later.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from commands.application import Ledger
from projections.database import PostgresViews, ViewDatabase

# (notification id, originator id as text, originator version, topic, state)
LoggedEvent = tuple[int, str, int, str, bytes]


@dataclass(frozen=True)
class LogPage:
    """Events of the wanted topics in (after, covered], in log order."""

    after: int
    events: list[LoggedEvent]
    covered: int


class LogReader(ABC):
    """Reads pages of a projection's events from the log."""

    def page(
        self,
        after: int,
        head: int,
        topics: Sequence[str],
        limit: int,
        *,
        ahead: bool = False,
    ) -> LogPage:
        """Up to `limit` wanted events after `after`, up to and including `head`.

        `ahead` says the read runs beside a write of the views, on another
        thread.
        """
        events = self.select(after, head, topics, limit, ahead)
        covered = events[-1][0] if len(events) == limit else head
        return LogPage(after, events, covered)

    @abstractmethod
    def select(
        self, after: int, head: int, topics: Sequence[str], limit: int, ahead: bool
    ) -> list[LoggedEvent]:
        """The wanted events in (after, head], at most `limit`, in log order."""

    @abstractmethod
    def head(self) -> int:
        """The last notification id in the log."""


class LibraryLogReader(LogReader):
    """The library recorder's own reader, with its topic filter."""

    def __init__(self, ledger: Ledger) -> None:
        self.recorder = ledger.recorder

    def select(
        self, after: int, head: int, topics: Sequence[str], limit: int, ahead: bool
    ) -> list[LoggedEvent]:
        return [
            (n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
            for n in self.recorder.select_notifications(
                after + 1, limit, stop=head, topics=list(topics)
            )
        ]

    def head(self) -> int:
        return self.recorder.max_notification_id() or 0


class PostgresLogReader(LogReader):
    """A lean read of the events table, on the views' connections."""

    def __init__(self, views: PostgresViews, table: str) -> None:
        self.views = views
        name = sql.Identifier(table)
        self.select_statement = sql.SQL(
            "SELECT notification_id, originator_id::text, originator_version, "
            "topic, state FROM {} WHERE notification_id > %s "
            "AND notification_id <= %s AND topic = ANY(%s) "
            "ORDER BY notification_id LIMIT %s"
        ).format(name)
        self.head_statement = sql.SQL("SELECT max(notification_id) FROM {}").format(
            name
        )

    def select(
        self, after: int, head: int, topics: Sequence[str], limit: int, ahead: bool
    ) -> list[LoggedEvent]:
        connection = self.views.reading_connection() if ahead else self.views.connection
        with connection.cursor(binary=True) as cursor:
            cursor.execute(
                self.select_statement, [after, head, list(topics), limit], prepare=True
            )
            rows: list[Any] = cursor.fetchall()
        return rows

    def head(self) -> int:
        row = self.views.connection.execute(self.head_statement).fetchone()
        return int(row[0] or 0) if row else 0


def open_log(ledger: Ledger, views: ViewDatabase) -> LogReader:
    """The leanest reader of the ledger's log that its store allows."""
    table = getattr(ledger.recorder, "events_table_name", None)
    if isinstance(views, PostgresViews) and table:
        return PostgresLogReader(views, table)
    return LibraryLogReader(ledger)
