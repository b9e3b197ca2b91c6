"""Event store configuration: one URL picks SQLite or PostgreSQL.

`sqlite:///relative/path.sqlite` or `sqlite:////absolute/path.sqlite` (the
embedded default, written the way SQLAlchemy writes it) or
`postgresql://user:password@host:port/dbname?schema=name`. The URL becomes the
eventsourcing library's environment settings for its recorders.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from psycopg import sql

from ledger.errors import LedgerError

# The library's recorder with a faster batch insert (see adapters.fast_store).
ARRAY_INSERT_RECORDER = "adapters.fast_store:ArrayInsertRecorder"
ARRAY_INSERT_PROCESS_RECORDER = "adapters.fast_store:ArrayInsertProcessRecorder"
MANY_READ_SQLITE_RECORDER = "adapters.fast_store:ManyReadSQLiteRecorder"


class BadDatabaseUrl(LedgerError):
    """Raised when LEDGER_DATABASE_URL cannot be understood."""


def store_environment(url: str) -> dict[str, str]:
    """The eventsourcing settings for the database at `url`."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return sqlite_environment(url)
    if parts.scheme in {"postgresql", "postgres"}:
        return postgres_environment(url)
    raise BadDatabaseUrl(
        f"LEDGER_DATABASE_URL '{url}' is neither sqlite:///path nor "
        "postgresql://host/dbname; set it to one of those."
    )


def sqlite_environment(url: str) -> dict[str, str]:
    path = url.removeprefix("sqlite:///")
    if path in {"", "/"} or path == url:
        raise BadDatabaseUrl(
            f"LEDGER_DATABASE_URL '{url}' names no file; write sqlite:///path/file."
        )
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": "10",
        "APPLICATION_RECORDER_TOPIC": MANY_READ_SQLITE_RECORDER,
    }


def postgres_environment(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/")
    if not dbname:
        raise BadDatabaseUrl(
            f"LEDGER_DATABASE_URL '{url}' names no database; "
            "write postgresql://host/dbname."
        )
    query = parse_qs(parts.query)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_ENABLE_DB_FUNCTIONS": "no",
        "POSTGRES_POOL_SIZE": query.get("pool_size", ["10"])[0],
        "POSTGRES_MAX_OVERFLOW": "20",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "APPLICATION_RECORDER_TOPIC": ARRAY_INSERT_RECORDER,
        "PROCESS_RECORDER_TOPIC": ARRAY_INSERT_PROCESS_RECORDER,
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"][0]
    return env


def prepare_store(url: str) -> None:
    """Create the PostgreSQL schema the URL names, if it does not exist yet."""
    env = store_environment(url)
    schema = env.get("POSTGRES_SCHEMA")
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres" or not schema:
        return
    try:
        with psycopg.connect(
            dbname=env["POSTGRES_DBNAME"],
            host=env["POSTGRES_HOST"],
            port=env["POSTGRES_PORT"],
            user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            autocommit=True,
        ) as connection:
            connection.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
            )
    except psycopg.Error as exc:
        raise BadDatabaseUrl(
            f"Could not prepare schema '{schema}' at {url}: {exc}"
        ) from exc
