"""Application recorders that insert and read batches of events faster.

`ArrayInsertRecorder` (PostgreSQL) and `ManyReadSQLiteRecorder` (SQLite) are the
library's recorders plus one method, `select_events_of`, which reads the
events of many aggregates in one query (only those after versions the caller
already holds, if it says which); the grouped committer decides a whole group
of commands on what that one query returns.

The library's recorder sends a batch as one array of a composite type, which
psycopg renders to text field by field in Python; at a few hundred events per
transaction that rendering costs more than the database does. It also takes
four round trips (BEGIN, the lock, the insert, COMMIT). In a busy process
every round trip costs more than the database's work: the thread waiting on
the socket must win the interpreter lock back from the threads deciding the
next commands, about a millisecond each time under load (see "Write path" in
docs/performance.md). So an application save here is ONE simple query: the
lock timeout, the table lock, the NOTIFY and a multi-row INSERT, which
PostgreSQL runs as one implicit transaction, committed (and durable) before
it answers, or rolled back whole on any error. Its values are written as
literals that cannot carry SQL: canonical UUIDs, integers, hex-encoded state
decoded by the server, and topics quoted by libpq. A consumer's save with a
tracking position still goes the library's way of one statement at a time,
with the lock and NOTIFY as one simple query and the events as four binary
arrays unnested server-side, and so does a batch whose state passes
ONE_QUERY_STATE_BYTES.

Everything else is the library's: the same table and columns, the same
`LOCK TABLE … IN EXCLUSIVE MODE` so notification order equals commit order,
the same NOTIFY for subscribers, the same returned notification ids, the same
retries of a lost connection and the same error types.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
from eventsourcing.sqlite import SQLiteApplicationRecorder
from eventsourcing.utils import retry
from psycopg import Connection, Cursor
from psycopg.pq import Escaping, ExecStatus
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composable, Identifier

CREATE_ATTEMPTS = 5
# Event state written into one query as hex, at most: a larger batch (a
# statement run of long HTML emails, say) goes as binary arrays instead, so a
# save never builds a query of hundreds of megabytes.
ONE_QUERY_STATE_BYTES = 4 * 1024 * 1024


class RenderedStatements(NamedTuple):
    lock_and_notify: bytes
    insert: bytes
    insert_values: bytes
    select: bytes
    select_after: bytes


class ArrayInsertRecorder(PostgresApplicationRecorder):
    """The library's application recorder, with a binary array insert."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        events_table_name: str = "stored_events",
        **table_names: str,
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name, **table_names)
        names = {
            "schema": Identifier(self.datastore.schema),
            "table": Identifier(self.events_table_name),
        }
        self.array_insert_statement = SQL(
            "INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest("
            "%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id"
        ).format(**names)
        self.select_statement = SQL(
            "SELECT originator_id, originator_version, topic, state "
            "FROM {schema}.{table} WHERE originator_id = ANY(%s) "
            "ORDER BY originator_id, originator_version"
        ).format(**names)
        self.values_insert_statement = SQL(
            "INSERT INTO {schema}.{table} "
            "(originator_id, originator_version, topic, state) VALUES "
        ).format(**names)
        self._statements: RenderedStatements | None = None
        self._quoted_topics: dict[str, bytes] = {}
        # One index probe per aggregate, whatever the table's statistics say:
        # as a plain join, a table never analysed (autovacuum off, or not yet
        # run) is hash-joined by a full scan, which grows with the log.
        # OFFSET 0 keeps PostgreSQL from flattening the lateral subquery.
        self.select_after_statement = SQL(
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) AS known(id, version) "
            "CROSS JOIN LATERAL (SELECT * FROM {schema}.{table} AS s "
            "WHERE s.originator_id = known.id "
            "AND s.originator_version > known.version OFFSET 0) AS e "
            "ORDER BY e.originator_id, e.originator_version"
        ).format(**names)

    def create_table(self) -> None:
        """The library's tables, created by one process at a time.

        Processes started together on one database (a server and its
        workers) all run the same `CREATE … IF NOT EXISTS` statements; when
        they meet, PostgreSQL fails all but one ("tuple concurrently
        updated", "relation … already exists", a duplicate catalog entry).
        `_create_table` makes them take turns. Should a race come from
        elsewhere (another tool's DDL), the statements are idempotent, so
        they are run again after a random pause; an error that is not such a
        race fails every attempt and is raised.
        """
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                super().create_table()
            except (InternalError, IntegrityError, ProgrammingError):
                if attempt == CREATE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * attempt)
            else:
                return

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        # A transaction-scoped advisory lock per schema, taken first in the
        # library's DDL transaction: creators of one schema queue here.
        key = zlib.crc32(f"ledger-ddl:{self.datastore.schema}".encode())
        curs.execute("SELECT pg_advisory_xact_lock(%s)", [key], prepare=False)
        super()._create_table(curs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert a batch in one transaction; returns its notification ids."""
        if not self._takes(kwargs) or not stored_events:
            inserted: Sequence[int] | None = super().insert_events(
                stored_events, **kwargs
            )
            return inserted
        with self.datastore.get_connection() as connection:
            statements = self._rendered(connection)
            if not given(kwargs) and fits_one_query(stored_events):
                return self._insert_in_one_query(connection, statements, stored_events)
            with connection.transaction():
                self._record_alongside(connection, kwargs)
                connection.execute(statements.lock_and_notify)
                rows = connection.execute(
                    statements.insert, self._columns(stored_events)
                ).fetchall()
        return [row["notification_id"] for row in rows]

    def _insert_in_one_query(
        self,
        connection: Connection[Any],
        statements: RenderedStatements,
        stored_events: Sequence[StoredEvent],
    ) -> list[int]:
        """Lock, notify and insert as one implicit transaction: one round trip."""
        rows = b", ".join(
            b"('%s', %d, %s, decode('%s', 'hex'))"
            % (
                str(event.originator_id).encode(),
                event.originator_version,
                self._quoted_topic(connection, event.topic),
                event.state.hex().encode(),
            )
            for event in stored_events
        )
        cursor = connection.cursor(row_factory=tuple_row)
        cursor.execute(
            b"%s; %s%s RETURNING notification_id"
            % (statements.lock_and_notify, statements.insert_values, rows)
        )
        while cursor.pgresult is None or cursor.pgresult.status != (
            ExecStatus.TUPLES_OK
        ):
            if not cursor.nextset():
                raise InternalError("the insert returned no notification ids")
        return [notification_id for (notification_id,) in cursor.fetchall()]

    def _quoted_topic(self, connection: Connection[Any], topic: str) -> bytes:
        """The topic as an SQL string literal, quoted by libpq once per topic."""
        quoted = self._quoted_topics.get(topic)
        if quoted is None:
            quoted = Escaping(connection.pgconn).escape_literal(topic.encode())
            self._quoted_topics[topic] = quoted
        return quoted

    def _takes(self, options: dict[str, Any]) -> bool:
        """Whether this insert handles these options itself (else the library does).

        The library's `save` always passes `tracking`, None unless a consumer
        of the log records its position; an option that is None asks nothing.
        """
        return not given(options)

    def _record_alongside(
        self, connection: Connection[Any], options: dict[str, Any]
    ) -> None:
        """Write what must commit with the events, before them; nothing here."""

    @staticmethod
    def _columns(stored_events: Sequence[StoredEvent]) -> list[list[Any]]:
        return [
            [event.originator_id for event in stored_events],
            [event.originator_version for event in stored_events],
            [event.topic for event in stored_events],
            [event.state for event in stored_events],
        ]

    def _rendered(self, connection: Connection[Any]) -> RenderedStatements:
        """The statements as bytes, composed once on first use."""
        if self._statements is None:
            lock_and_notify = b"; ".join(
                query_bytes(statement, connection)
                for statement in (
                    *self.lock_table_statements,
                    SQL("NOTIFY {0}").format(Identifier(self.channel_name)),
                )
            )
            self._statements = RenderedStatements(
                lock_and_notify,
                self.array_insert_statement.as_bytes(connection),
                self.values_insert_statement.as_bytes(connection),
                self.select_statement.as_bytes(connection),
                self.select_after_statement.as_bytes(connection),
            )
        return self._statements

    def select_events_of(
        self, aggregate_ids: Sequence[UUID], after: Sequence[int] | None = None
    ) -> list[StoredEvent]:
        """The events of the given aggregates, in one autocommit statement.

        With `after`, each aggregate's events up to that version are left out
        on the server, so events a caller holds already are not sent again.
        """
        params: list[Any] = [list(aggregate_ids)]
        if after:
            params.append(list(after))
        # A plain read needs no BEGIN/ROLLBACK round trips.
        with self.datastore.get_connection() as connection:
            statements = self._rendered(connection)
            statement = statements.select_after if after else statements.select
            cursor = connection.cursor(row_factory=tuple_row)
            rows = cursor.execute(statement, params, prepare=True).fetchall()
        return [
            StoredEvent(
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=state,
            )
            for originator_id, version, topic, state in rows
        ]


class ArrayInsertProcessRecorder(ArrayInsertRecorder, PostgresProcessRecorder):
    """The library's process recorder with the same faster insert.

    A consumer of the log (the dispatcher) records its outcomes and its
    tracking position in one transaction; the tracking row is written first,
    with the library's own statement and checks, as the library does.
    """

    def _takes(self, options: dict[str, Any]) -> bool:
        return given(options) <= {"tracking"}

    def _record_alongside(
        self, connection: Connection[Any], options: dict[str, Any]
    ) -> None:
        tracking: Tracking | None = options.get("tracking")
        if tracking is not None:
            with connection.cursor() as cursor:
                self._insert_tracking(cursor, tracking=tracking)


def fits_one_query(stored_events: Sequence[StoredEvent]) -> bool:
    """Whether the batch's state is small enough to be written out in one query."""
    return sum(len(event.state) for event in stored_events) <= ONE_QUERY_STATE_BYTES


def given(options: dict[str, Any]) -> set[str]:
    """The names of the options that carry a value."""
    return {name for name, value in options.items() if value is not None}


def query_bytes(statement: object, connection: Connection[Any]) -> bytes:
    """A statement of the library's, as the bytes psycopg would send."""
    if isinstance(statement, bytes):
        return statement
    if isinstance(statement, str):
        return statement.encode()
    if isinstance(statement, Composable):
        return statement.as_bytes(connection)
    raise TypeError(f"cannot render {type(statement).__name__} as a statement")


class ManyReadSQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder, reading many aggregates at once."""

    def select_events_of(
        self, aggregate_ids: Sequence[UUID], after: Sequence[int] | None = None
    ) -> list[StoredEvent]:
        """The events of the given aggregates, in one query.

        With `after`, each aggregate's events up to that version are left out
        (here in Python: the rows are read from a local file anyway).
        """
        marks = ",".join("?" * len(aggregate_ids))
        statement = (
            "SELECT originator_id, originator_version, topic, state "
            f"FROM {self.events_table_name} WHERE originator_id IN ({marks}) "
            "ORDER BY originator_id, originator_version"
        )
        known = {
            aggregate_id.hex: version
            for aggregate_id, version in zip(aggregate_ids, after or (), strict=False)
        }
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, [i.hex for i in aggregate_ids])
            return [
                StoredEvent(
                    originator_id=UUID(row["originator_id"]),
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=row["state"],
                )
                for row in cursor.fetchall()
                if row["originator_version"] > known.get(row["originator_id"], 0)
            ]
