"""The database the read models live in, beside the ledger's own event store.

On PostgreSQL the views share the events' database and schema, their tables
prefixed by the projection's name. On SQLite they live in a sibling file
(`ledger.sqlite` → `ledger.views.sqlite`): SQLite lets one writer at a time
into a file, and a projection catching up in big transactions would otherwise
hold up every send.

Statements are written once with `?` placeholders; the PostgreSQL connection
rewrites them to psycopg's `%s`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg

from ledger.errors import StoreUnavailable

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]

# Below this many rows COPY's setup costs more than it saves.
COPY_FROM = 50


class ViewCursor(Protocol):
    """The part of a DB-API cursor the projections use."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class ViewDatabase(ABC):
    """A connection to the views' database; one per process or thread."""

    dialect: str

    def __init__(self) -> None:
        self.prefixes: dict[str, tuple[float, str]] = {}

    @abstractmethod
    def execute(self, statement: str, params: Sequence[Any] = ()) -> ViewCursor:
        """Run one statement in the current transaction (or on its own)."""

    @abstractmethod
    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row."""

    def insert_many(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Insert rows; `types` are the columns' PostgreSQL types."""
        if rows:
            self.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})",
                rows,
            )

    def fetchall(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self.execute(statement, params).fetchall())

    def fetchone(self, statement: str, params: Sequence[Any] = ()) -> Row | None:
        row = self.execute(statement, params).fetchone()
        return None if row is None else tuple(row)

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Everything inside commits together, or not at all."""

    @abstractmethod
    def events_table(self, name: str) -> str:
        """How statements here name the event store's table `name`."""

    @abstractmethod
    def table_exists(self, table: str) -> bool:
        """Whether `table` exists in the views' database."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""


class SQLiteViews(ViewDatabase):
    """Views in a SQLite file beside the event store's file."""

    dialect = "sqlite"

    def __init__(self, path: str, events_path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.connection = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        if events_path is not None:
            self.connection.execute("ATTACH DATABASE ? AS log", [events_path])

    def events_table(self, name: str) -> str:
        return f"log.{name}"

    def execute(self, statement: str, params: Sequence[Any] = ()) -> ViewCursor:
        return self.connection.execute(statement, tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        self.connection.executemany(statement, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two runners of one view
        # queue instead of failing half-way with a lock upgrade error.
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def table_exists(self, table: str) -> bool:
        row = self.fetchone(
            "SELECT 1 FROM sqlite_master WHERE name = ? AND type = 'table'", [table]
        )
        return row is not None

    def close(self) -> None:
        self.connection.close()


class PostgresViews(ViewDatabase):
    """Views in the event store's PostgreSQL schema."""

    dialect = "postgres"

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__()
        self.schema = env.get("POSTGRES_SCHEMA") or "public"
        self.env = env
        self.connection = connect_postgres(env)
        # Rows and position commit together, so a crash that loses the
        # last commits loses both: the projection just takes them again.
        self.connection.execute("SET synchronous_commit = off")
        self.reading: psycopg.Connection[Row] | None = None
        # Staging tables this connection has created (one round trip a
        # chunk saved).
        self.staging: set[str] = set()

    def reading_connection(self) -> psycopg.Connection[Row]:
        """A second connection, for reading the log ahead while the first writes.

        Opened on first use (only a long catch-up needs it, so the many
        short-lived views of a web server never open one) and closed with
        the views.
        """
        if self.reading is None:
            self.reading = connect_postgres(self.env)
        return self.reading

    def events_table(self, name: str) -> str:
        return name

    def insert_many(
        self,
        table: str,
        columns: Sequence[str],
        types: Sequence[str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        if len(rows) < COPY_FROM:
            super().insert_many(table, columns, types, rows)
            return
        self.copy_rows(table, columns, rows)

    def copy_rows(
        self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> None:
        """Load rows with COPY: a sixth of the client's work of executemany."""
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def staging_table(
        self, name: str, columns: Sequence[str], types: Sequence[str]
    ) -> str:
        """A temporary table of this connection, emptied at every commit."""
        definition = ", ".join(
            f"{column} {kind}" for column, kind in zip(columns, types, strict=True)
        )
        if name not in self.staging:
            self.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} ({definition}) "
                "ON COMMIT DELETE ROWS"
            )
            self.staging.add(name)
        return name

    def execute(self, statement: str, params: Sequence[Any] = ()) -> ViewCursor:
        return self.connection.execute(statement.replace("?", "%s"), tuple(params))

    def executemany(self, statement: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(statement.replace("?", "%s"), list(rows))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self.connection.transaction():
                yield
        except BaseException:
            # A staging table created in a rolled-back transaction is gone.
            self.staging.clear()
            raise

    def table_exists(self, table: str) -> bool:
        row = self.fetchone(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [self.schema, table],
        )
        return row is not None

    def close(self) -> None:
        if self.reading is not None:
            self.reading.close()
        self.connection.close()


def connect_postgres(env: Mapping[str, str]) -> psycopg.Connection[Row]:
    """An autocommit connection to the ledger's database, in the ledger's schema."""
    schema = env.get("POSTGRES_SCHEMA") or "public"
    try:
        return psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env.get("POSTGRES_HOST", "127.0.0.1"),
            port=env.get("POSTGRES_PORT", "5432"),
            user=env.get("POSTGRES_USER", "postgres"),
            password=env.get("POSTGRES_PASSWORD") or None,
            options=f"-c search_path={schema}",
            autocommit=True,
        )
    except psycopg.Error as exc:
        raise StoreUnavailable(
            f"Cannot connect to the views' database ({exc}); check "
            "LEDGER_DATABASE_URL and that PostgreSQL is running."
        ) from exc


def views_path(events_path: str) -> str:
    """The views' SQLite file beside the event store's file."""
    path = Path(events_path)
    return str(path.with_name(f"{path.stem}.views{path.suffix or '.sqlite'}"))


def open_views(env: Mapping[str, str]) -> ViewDatabase:
    """The views' database for a ledger configured by `env`."""
    module = env.get("PERSISTENCE_MODULE", "")
    if module == "eventsourcing.postgres":
        return PostgresViews(env)
    if module == "eventsourcing.sqlite":
        dbname = env.get("SQLITE_DBNAME", "")
        if not dbname or ":memory:" in dbname or "mode=memory" in dbname:
            raise StoreUnavailable(
                "Projections need the event store in a file; set "
                "LEDGER_DATABASE_URL to sqlite:///path/ledger.sqlite."
            )
        return SQLiteViews(views_path(dbname), events_path=dbname)
    raise StoreUnavailable(
        f"Projections cannot run on the '{module}' store; use SQLite or PostgreSQL."
    )


class ViewsPerThread:
    """One connection to the views of the store at `env` per thread, opened on
    first use: the HTTP app and the inbound listeners read from several."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.local = threading.local()
        self.opened: list[ViewDatabase] = []
        self.lock = threading.Lock()

    def get(self) -> ViewDatabase:
        """This thread's connection."""
        found: ViewDatabase | None = getattr(self.local, "views", None)
        if found is None:
            found = open_views(self.env)
            self.local.views = found
            with self.lock:
                self.opened.append(found)
        return found

    def close(self) -> None:
        """Close every thread's connection."""
        with self.lock:
            opened, self.opened = self.opened, []
        for views in opened:
            views.close()
