"""The projection runtime: read models as exactly-once consumers of the event log.

Each projection keeps its rows in a *generation* of tables
(`timeline_g3_messages`, …) and its tracking position in the
`projection_generations` row of that generation. A batch of events changes the
rows and moves the position in one transaction, so a crash replays nothing
twice and skips nothing. The position moves by compare-and-set: a second
runner of the same projection loses the race, rolls back and reads again.

Catch-up reads the log in pages and commits `events_per_transaction` events at
a time; the library's own runner commits one event per transaction, which is
what caps it near a thousand events a second.

A batch that fails is taken again one event per transaction; the event that
still fails is a *poison event*: it is written to `projection_skipped` with
its error, in the same transaction that moves the position past it. It is
never retried in a loop and never lost without a trace.

A rebuild fills a new generation from zero while readers keep using the
active one, then switches readers over in one transaction. The retired
generation's tables are dropped by the next rebuild, so no reader that looked
up the old generation a moment before the switch finds its tables gone.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar
from uuid import UUID

import orjson
import psycopg
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.utils import resolve_topic

from commands.application import Ledger
from commands.encoding import LedgerTranscoder
from ledger.errors import ProjectionError
from projections.database import ViewDatabase
from projections.log import LoggedEvent, LogPage, open_log

# Transcoders whose bytes are the library's plain JSON format.
PLAIN_JSON_TRANSCODERS = (JSONTranscoder, LedgerTranscoder)

logger = logging.getLogger(__name__)

READ_PAGE = 1000
EVENTS_PER_TRANSACTION = 1000
POLL_SECONDS = 0.5
PREFIX_SECONDS = 1.0
SWITCH_SECONDS = 0.0001
COLLECT_EVERY = 20_000

# Errors of the connection itself say nothing about the event being projected:
# they stop the runner rather than mark an event as poison.
TRANSIENT_ERRORS = (psycopg.OperationalError, sqlite3.OperationalError)

Prepared = TypeVar("Prepared")

REGISTRY_TABLES = (
    """CREATE TABLE IF NOT EXISTS projection_generations (
        name TEXT NOT NULL,
        generation INTEGER NOT NULL,
        position BIGINT NOT NULL DEFAULT 0,
        active INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        PRIMARY KEY (name, generation))""",
    """CREATE TABLE IF NOT EXISTS projection_skipped (
        name TEXT NOT NULL,
        generation INTEGER NOT NULL,
        position BIGINT NOT NULL,
        topic TEXT NOT NULL,
        originator_id TEXT NOT NULL,
        error TEXT NOT NULL,
        skipped_at TEXT NOT NULL,
        PRIMARY KEY (name, generation, position))""",
)


class RecordedEvent(NamedTuple):
    """One stored event as a projection sees it: its place in the log and fields.

    `originator_id` is the aggregate id as canonical UUID text (what the
    views store). `state` is the event's JSON state; a typed value such as a
    time may still be in the transcoder's form, which `instant` reads. For a
    topic in the projection's `attempt_only`, `state` may hold nothing but
    `attempt`.
    """

    position: int
    originator_id: str
    version: int
    topic: str
    state: dict[str, Any]


class Projection(ABC, Generic[Prepared]):
    """A read model: the tables it owns and how a batch of events changes them.

    A batch is applied in two steps. `prepare` does the work that needs no
    stored rows (decoding fields, folding the events of messages the batch
    creates, building their rows); `write` reads what it needs and writes,
    inside the transaction that moves the position. A runner prepares the
    next batch while the previous one is written.
    """

    name: str
    topics: frozenset[str]
    # Topics of which the projection reads nothing but the events' top-level
    # integer `attempt`: the runner may decode only that (EventDecoder).
    attempt_only: frozenset[str] = frozenset()

    @abstractmethod
    def table_names(self, prefix: str) -> list[str]:
        """The tables of one generation, in the order they can be dropped."""

    @abstractmethod
    def create_tables(self, views: ViewDatabase, prefix: str) -> None:
        """Create one generation's tables, all names starting with `prefix`."""

    @abstractmethod
    def create_indexes(self, views: ViewDatabase, prefix: str) -> None:
        """Create the indexes readers need; a rebuild adds them after its bulk load."""

    @abstractmethod
    def prepare(self, events: Sequence[RecordedEvent]) -> Prepared:
        """Make a batch of events (in log order) ready to write, reading nothing."""

    @abstractmethod
    def write(self, views: ViewDatabase, prefix: str, prepared: Prepared) -> None:
        """Apply a prepared batch to the rows, inside the caller's transaction."""

    def project(
        self, views: ViewDatabase, prefix: str, events: Sequence[RecordedEvent]
    ) -> None:
        """Apply events (in log order) to the rows, inside the caller's transaction."""
        self.write(views, prefix, self.prepare(events))


@dataclass(frozen=True)
class ProjectionStatus:
    """Where one projection stands against the head of the event log."""

    name: str
    generation: int | None
    position: int
    head: int
    skipped: int
    rebuilding_at: int | None

    @property
    def lag(self) -> int:
        """Notification ids still to process (ids can have gaps: an upper bound)."""
        return max(self.head - self.position, 0)


@dataclass(frozen=True)
class SkippedEvent:
    """A poison event a projection recorded and stepped over."""

    position: int
    topic: str
    originator_id: str
    error: str
    skipped_at: str


class PositionMoved(Exception):
    """Another runner moved the position first; read it again and carry on."""


def instant(value: Any) -> datetime:
    """A time from event fields, parsed by `json` alone or by the transcoder."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, dict) and value.get("_type_") == "datetime_iso":
        return datetime.fromisoformat(value["_data_"])
    raise ValueError(f"{value!r} is not a recorded time.")


def table_prefix(name: str, generation: int) -> str:
    """The prefix of every table of one generation of a projection."""
    return f"{name}_g{generation}_"


def now_text() -> str:
    """The current UTC time as ISO-8601 text."""
    return datetime.now(UTC).isoformat()


def prepare_registry(views: ViewDatabase) -> None:
    """Create the tables that track every projection, if they do not exist."""
    for statement in REGISTRY_TABLES:
        try:
            views.execute(statement)
        except psycopg.errors.UniqueViolation:
            # Two processes creating the table at once: the other one won.
            continue


def active_generation(views: ViewDatabase, name: str) -> int | None:
    """The generation readers use, or None before the first run."""
    row = views.fetchone(
        "SELECT generation FROM projection_generations WHERE name = ? AND active = 1",
        [name],
    )
    return None if row is None else int(row[0])


def require_active(views: ViewDatabase, name: str) -> str:
    """The table prefix readers of projection `name` use now.

    The answer is kept for a second per connection: a switched rebuild leaves
    the retired tables in place, so a reader a moment late reads the old, full
    view rather than failing.
    """
    now = time.monotonic()
    cached = views.prefixes.get(name)
    if cached is not None and now - cached[0] < PREFIX_SECONDS:
        return cached[1]
    generation = active_generation(views, name)
    if generation is None:
        raise ProjectionError(
            f"The {name} projection has not been built yet; run "
            f"'ledger worker project {name}' or 'ledger projections rebuild {name}'."
        )
    prefix = table_prefix(name, generation)
    views.prefixes[name] = (now, prefix)
    return prefix


def start_generation(
    views: ViewDatabase, projection: Projection[Any], *, active: bool
) -> int:
    """Create a new, empty generation of the projection's tables."""
    with views.transaction():
        row = views.fetchone(
            "SELECT max(generation) FROM projection_generations WHERE name = ?",
            [projection.name],
        )
        generation = int(row[0] or 0) + 1 if row else 1
        prefix = table_prefix(projection.name, generation)
        projection.create_tables(views, prefix)
        if active:
            projection.create_indexes(views, prefix)
        views.execute(
            "INSERT INTO projection_generations "
            "(name, generation, position, active, created_at) VALUES (?, ?, 0, ?, ?)",
            [projection.name, generation, int(active), now_text()],
        )
    logger.info("started generation %s of projection %s", generation, projection.name)
    return generation


def ensure_active(views: ViewDatabase, projection: Projection[Any]) -> int:
    """The active generation, creating the first one if there is none."""
    prepare_registry(views)
    generation = active_generation(views, projection.name)
    if generation is None:
        generation = start_generation(views, projection, active=True)
    return generation


def parse_json(state: bytes) -> dict[str, Any]:
    """A state's JSON as orjson reads it, or as the standard library reads the
    few states orjson refuses that the library's own encoder can write
    (`Infinity` or `NaN` for a float, a lone surrogate in a string)."""
    try:
        parsed: dict[str, Any] = orjson.loads(state)
    except orjson.JSONDecodeError:
        parsed = json.loads(state)
    return parsed


class EventDecoder:
    """Turns stored events into fields without building domain objects.

    With the library's plain JSON transcoder the state is parsed by orjson
    alone, without the transcoder's per-object hook (which costs more than the
    rest of a projection's work); projections convert the few typed values
    they read themselves (see `instant`). Any other transcoder, a cipher or
    a compressor is used as configured. An event stored under an older
    `class_version` takes the library's full path, so that its upcasts run.

    Of the `attempt_only` topics a chunk's events are given as `{"attempt":
    n}`, read straight from the bytes where that is exact (`attempt_state`):
    a status event is parsed in full only for that one number otherwise, and
    status events are two thirds of a message's.
    """

    def __init__(
        self, ledger: Ledger, attempt_only: frozenset[str] = frozenset()
    ) -> None:
        self.mapper = ledger.mapper
        self.versions: dict[str, int] = {}
        plain = type(self.mapper.transcoder) in PLAIN_JSON_TRANSCODERS
        self.parse = parse_json if plain else self.mapper.transcoder.decode
        self.attempt_only = attempt_only if plain else frozenset()

    def __call__(self, logged: LoggedEvent) -> RecordedEvent:
        position, originator_id, version, topic, state = logged
        if self.mapper.cipher:
            state = self.mapper.cipher.decrypt(state)
        if self.mapper.compressor:
            state = self.mapper.compressor.decompress(state)
        fields: dict[str, Any] = self.parse(state)
        if "class_version" in fields or self.class_version(topic) != 1:
            fields = self.upcast(logged, fields)
        return RecordedEvent(position, originator_id, version, topic, fields)

    def decode_all(self, chunk: Sequence[LoggedEvent]) -> list[RecordedEvent]:
        """A chunk's events, as `__call__` gives each (but only `attempt` of
        the `attempt_only` topics' where it can be read exactly), with the
        per-event checks hoisted out of the loop."""
        if self.mapper.cipher or self.mapper.compressor:
            return [self(logged) for logged in chunk]
        parse, versions, attempt_only = self.parse, self.versions, self.attempt_only
        decoded = []
        for logged in chunk:
            position, originator_id, version, topic, state = logged
            current = versions.get(topic) or self.class_version(topic)
            fields = None
            if current == 1 and topic in attempt_only:
                fields = attempt_state(state)
            if fields is None:
                fields = parse(state)
                if current != 1 or "class_version" in fields:
                    fields = self.upcast(logged, fields)
            decoded.append(
                RecordedEvent(position, originator_id, version, topic, fields)
            )
        return decoded

    def upcast(self, logged: LoggedEvent, fields: dict[str, Any]) -> dict[str, Any]:
        """The fields after the library's mapper ran the event class's upcasts."""
        if fields.get("class_version", 1) == self.class_version(logged[3]):
            return fields
        stored = StoredEvent(UUID(logged[1]), logged[2], logged[3], logged[4])
        return dict(vars(self.mapper.to_domain_event(stored)))

    def class_version(self, topic: str) -> int:
        """The class_version the topic's event class is at now."""
        if topic not in self.versions:
            self.versions[topic] = getattr(resolve_topic(topic), "class_version", 1)
        return self.versions[topic]


ATTEMPT_KEY = b'"attempt":'
ATTEMPT_VALUE = re.compile(rb'"attempt":(0|[1-9][0-9]{0,8})[,}]')
CLASS_VERSION_KEY = b'"class_version":'


def attempt_state(state: bytes) -> dict[str, Any] | None:
    """`{"attempt": n}` of a status event's JSON state, read from the bytes,
    or None where only a full parse is exact.

    The event classes that carry `attempt` always write it at the top level,
    and neither of the ledger's encoders (orjson, the library's JSON encoder)
    escapes an ASCII character or writes a space after a colon. So when
    `"attempt":` occurs once in the bytes, it is that key: a nested key
    named `attempt`, or one ending in it, would occur as well, and inside a
    string a quote is escaped. Its value is taken only when it is a plain
    non-negative integer of up to 9 digits, which orjson reads as the same
    int; a state naming a `class_version` is parsed in full, for its upcasts.
    """
    if state.count(ATTEMPT_KEY) != 1 or CLASS_VERSION_KEY in state:
        return None
    found = ATTEMPT_VALUE.search(state)
    return None if found is None else {"attempt": int(found[1])}


Progress = Callable[[int, int], None]


class ProjectionRunner:
    """Keeps one generation of a projection in step with the event log.

    Only events of the projection's topics are read (see projections.log).
    When more than one chunk is behind, each chunk is written on a writer
    thread while the calling thread reads and prepares the next, so that
    PostgreSQL writes while Python works.
    """

    def __init__(
        self,
        ledger: Ledger,
        views: ViewDatabase,
        projection: Projection[Any],
        *,
        generation: int | None = None,
        events_per_transaction: int = EVENTS_PER_TRANSACTION,
    ) -> None:
        if events_per_transaction < 1:
            raise ProjectionError(
                f"events_per_transaction is {events_per_transaction}; "
                "give a whole number of at least 1."
            )
        self.ledger = ledger
        self.views = views
        self.projection = projection
        self.topics = sorted(projection.topics)
        self.events_per_transaction = events_per_transaction
        self.page_size = max(READ_PAGE, events_per_transaction)
        self.decode = EventDecoder(ledger, projection.attempt_only)
        self.log = open_log(ledger, views)
        self.follows_active = generation is None
        self.generation = generation or ensure_active(views, projection)
        self.position = self.read_position()

    @property
    def prefix(self) -> str:
        """The table prefix of the generation this runner keeps."""
        return table_prefix(self.projection.name, self.generation)

    def read_position(self) -> int:
        """The generation's stored position (PositionMoved if it is gone)."""
        row = self.views.fetchone(
            "SELECT position FROM projection_generations "
            "WHERE name = ? AND generation = ?",
            [self.projection.name, self.generation],
        )
        if row is None:
            raise PositionMoved(
                f"Generation {self.generation} of {self.projection.name} is gone."
            )
        return int(row[0])

    def follow_active(self) -> None:
        """Read the position again, moving to the generation readers now use."""
        if self.follows_active:
            generation = active_generation(
                self.views, self.projection.name
            ) or ensure_active(self.views, self.projection)
            if generation != self.generation:
                logger.info(
                    "projection %s follows generation %s",
                    self.projection.name,
                    generation,
                )
                self.generation = generation
        self.position = self.read_position()

    def head(self) -> int:
        """The last notification id in the log."""
        return self.log.head()

    def catch_up(
        self, progress: Progress | None = None, until: int | None = None
    ) -> int:
        """Process every event recorded so far; returns how many were processed
        (applied, or skipped as poison).

        `until` stops at that log position instead of the head.
        """
        head = self.head() if until is None else min(until, self.head())
        processed = 0
        while self.position < head:
            if head - self.position <= self.events_per_transaction:
                # One transaction at most: nothing to overlap, no second
                # connection.
                page = self.read_page(self.position, head, ahead=False)
                processed += self.apply(page)
                continue
            with (
                tuned_for_overlap(),
                ThreadPoolExecutor(1, "projection-writer") as writer,
            ):
                processed += self.catch_up_overlapped(head, writer, progress)
        if progress is not None:
            progress(self.position, head)
        logger.debug(
            "projection %s at %s of %s", self.projection.name, self.position, head
        )
        return processed

    def catch_up_overlapped(
        self, head: int, writer: ThreadPoolExecutor, progress: Progress | None
    ) -> int:
        """Catch up to `head`, preparing each chunk while the previous is written.

        Chunks are written one after the other on the writer thread, each in
        its own transaction with the position; this thread reads the log on
        the views' second connection and prepares. Returns early (position
        read again) when another runner moved the position.
        """
        processed = 0
        writing: Future[int] | None = None
        after = self.position
        try:
            while after < head:
                page = self.read_page(after, head)
                for chunk, end in self.chunks(page):
                    prepared = self.prepare(chunk)
                    if writing is not None:
                        processed += writing.result()
                        if progress is not None:
                            progress(self.position, head)
                    writing = writer.submit(self.commit, chunk, end, prepared)
                after = page.covered
            if writing is not None:
                processed += writing.result()
                writing = None
        except PositionMoved:
            writing = None
            self.follow_active()
        finally:
            if writing is not None:
                wait([writing])
        return processed

    def read_page(self, after: int, head: int, ahead: bool = True) -> LogPage:
        """The projection's events after `after`, one page of them at most."""
        return self.log.page(after, head, self.topics, self.page_size, ahead=ahead)

    def chunks(self, page: LogPage) -> Iterator[tuple[list[LoggedEvent], int]]:
        """The page in transactions: each chunk and the position it moves to.

        The last chunk moves to the end of what the page covered, past the
        events of other topics after it.
        """
        events = page.events
        size = self.events_per_transaction
        for start in range(0, max(len(events), 1), size):
            chunk = events[start : start + size]
            yield chunk, page.covered if start + size >= len(events) else chunk[-1][0]

    def apply(self, page: LogPage) -> int:
        """Commit a page chunk by chunk; returns how many events were processed."""
        applied = 0
        for chunk, end in self.chunks(page):
            try:
                applied += self.commit(chunk, end)
            except PositionMoved:
                self.follow_active()
                break
        return applied

    def prepare(self, chunk: Sequence[LoggedEvent]) -> Any:
        """The chunk decoded and prepared, or None if that failed.

        A failure here is left for `commit`, which prepares the chunk again
        inside its transaction and so finds the poison event.
        """
        if not chunk:
            return None
        try:
            return self.projection.prepare(self.decode.decode_all(chunk))
        except Exception:
            return None

    def commit(
        self, chunk: Sequence[LoggedEvent], end: int, prepared: Any = None
    ) -> int:
        """Apply a chunk and move the position to `end`, in one transaction.

        `end` is at least the chunk's last event: the log between them holds
        only events of other topics. Returns how many events were processed.
        """
        try:
            with self.views.transaction():
                self.advance(end)
                if chunk:
                    if prepared is None:
                        prepared = self.projection.prepare(
                            self.decode.decode_all(chunk)
                        )
                    self.projection.write(self.views, self.prefix, prepared)
        except (PositionMoved, *TRANSIENT_ERRORS):
            raise
        except Exception as exc:
            if len(chunk) > 1:
                for logged in chunk:
                    self.commit([logged], logged[0])
                if self.position < end:
                    self.commit([], end)
                return len(chunk)
            self.skip(chunk[0], end, exc)
            return 1
        self.position = end
        return len(chunk)

    def advance(self, position: int) -> None:
        """Move the stored position past the chunk, or raise PositionMoved."""
        moved = self.views.execute(
            "UPDATE projection_generations SET position = ? "
            "WHERE name = ? AND generation = ? AND position = ?",
            [position, self.projection.name, self.generation, self.position],
        )
        if moved.rowcount != 1:
            raise PositionMoved(
                f"Another runner moved {self.projection.name} past {self.position}."
            )

    def skip(self, logged: LoggedEvent, end: int, error: Exception) -> None:
        """Record a poison event with its error and step over it (to `end`)."""
        position, originator_id, _, topic, _ = logged
        logger.exception(
            "projection %s skipped event %s (%s)",
            self.projection.name,
            position,
            topic,
            exc_info=error,
        )
        with self.views.transaction():
            self.advance(end)
            self.views.execute(
                "INSERT INTO projection_skipped (name, generation, position, topic, "
                "originator_id, error, skipped_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    self.projection.name,
                    self.generation,
                    position,
                    topic,
                    originator_id,
                    f"{type(error).__name__}: {error}",
                    now_text(),
                ],
            )
        self.position = end

    def run(self, stop: threading.Event, poll_seconds: float = POLL_SECONDS) -> None:
        """Keep up with the log until `stop` is set; waits are woken by NOTIFY."""
        waiter = LogWaiter(self.ledger, poll_seconds)
        try:
            while not stop.is_set():
                self.follow_active()
                if self.catch_up() == 0:
                    waiter.wait(stop)
        finally:
            waiter.close()


class InterpreterTuning:
    """Interpreter settings for as long as one thread talks to the database
    while another decodes events in Python (a runner's writer and preparer,
    a replay's reader and fold).

    - Thread switch interval 0.1 ms instead of 5 ms. The database thread
      wakes for every answer from PostgreSQL and must then take the GIL back
      from the busy one; at 5 ms it waited up to that long each time, which
      measured as most of a runner's writer's wall time.
    - The cyclic collector's youngest generation examined every 20,000
      allocations instead of 700. Decoded events are acyclic and freed by
      reference counting, but each batch's live a few collections, get
      promoted and keep triggering full passes over the heap: about a fifth
      of the CPU of a catch-up or a replay.

    Both are restored when the last user leaves; concurrent users (one
    thread per projection, say) share one setting.
    """

    def __init__(self, switch_seconds: float, collect_every: int) -> None:
        self.switch_seconds = switch_seconds
        self.collect_every = collect_every
        self.lock = threading.Lock()
        self.users = 0
        self.switching = 0.0
        self.collecting: tuple[int, int, int] = (0, 0, 0)

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.switching = sys.getswitchinterval()
                self.collecting = gc.get_threshold()
                sys.setswitchinterval(min(self.switching, self.switch_seconds))
                young, *older = self.collecting
                gc.set_threshold(max(young, self.collect_every), *older)
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    sys.setswitchinterval(self.switching)
                    gc.set_threshold(*self.collecting)


tuned_for_overlap = InterpreterTuning(SWITCH_SECONDS, COLLECT_EVERY)


class LogWaiter:
    """Waits for new events: LISTEN on PostgreSQL, a plain poll on SQLite."""

    def __init__(self, ledger: Ledger, poll_seconds: float) -> None:
        self.poll_seconds = poll_seconds
        self.connection: psycopg.Connection[Any] | None = None
        channel = getattr(ledger.recorder, "channel_name", None)
        if channel is None:
            return
        env = ledger.env
        self.connection = psycopg.connect(
            dbname=env.get("POSTGRES_DBNAME"),
            host=env.get("POSTGRES_HOST", "127.0.0.1"),
            port=env.get("POSTGRES_PORT", "5432"),
            user=env.get("POSTGRES_USER", "postgres"),
            password=env.get("POSTGRES_PASSWORD") or None,
            autocommit=True,
        )
        self.connection.execute(
            psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
        )

    def wait(self, stop: threading.Event) -> None:
        """Return when new events may have arrived, or after the poll interval."""
        if self.connection is None:
            stop.wait(self.poll_seconds)
            return
        for _ in self.connection.notifies(timeout=self.poll_seconds, stop_after=1):
            break

    def close(self) -> None:
        """Close the LISTEN connection, if there is one."""
        if self.connection is not None:
            self.connection.close()


def rebuild(
    ledger: Ledger,
    views: ViewDatabase,
    projection: Projection[Any],
    progress: Progress | None = None,
    events_per_transaction: int = EVENTS_PER_TRANSACTION,
) -> int:
    """Build a new generation from zero, then switch readers over to it."""
    prepare_registry(views)
    drop_retired(views, projection)
    generation = start_generation(views, projection, active=False)
    runner = ProjectionRunner(
        ledger,
        views,
        projection,
        generation=generation,
        events_per_transaction=events_per_transaction,
    )
    runner.catch_up(progress)
    # Indexes built once over the loaded rows cost far less than keeping
    # them up to date row by row; the second catch-up takes what came since.
    with views.transaction():
        projection.create_indexes(views, runner.prefix)
    refresh_statistics(views, projection, runner.prefix)
    runner.catch_up(progress)
    with views.transaction():
        views.execute(
            "UPDATE projection_generations SET active = "
            "CASE WHEN generation = ? THEN 1 ELSE 0 END WHERE name = ?",
            [generation, projection.name],
        )
    views.prefixes.pop(projection.name, None)
    logger.info("projection %s now serves generation %s", projection.name, generation)
    return generation


def refresh_statistics(
    views: ViewDatabase, projection: Projection[Any], prefix: str
) -> None:
    """Give PostgreSQL's planner row counts for the freshly loaded tables.

    Without them it may plan for a different size than a bulk load left, and
    autovacuum comes round late on a busy server.
    """
    if views.dialect != "postgres":
        return
    for table in projection.table_names(prefix):
        if views.table_exists(table):
            views.execute(f"ANALYZE {table}")


def drop_retired(views: ViewDatabase, projection: Projection[Any]) -> None:
    """Drop the tables of generations that readers no longer use."""
    rows = views.fetchall(
        "SELECT generation FROM projection_generations WHERE name = ? AND active = 0",
        [projection.name],
    )
    for (generation,) in rows:
        with views.transaction():
            for table in projection.table_names(
                table_prefix(projection.name, generation)
            ):
                views.execute(f"DROP TABLE IF EXISTS {table}")
            views.execute(
                "DELETE FROM projection_generations WHERE name = ? AND generation = ?",
                [projection.name, generation],
            )
            views.execute(
                "DELETE FROM projection_skipped WHERE name = ? AND generation = ?",
                [projection.name, generation],
            )
        logger.info(
            "dropped generation %s of projection %s", generation, projection.name
        )


def projection_status(
    ledger: Ledger, views: ViewDatabase, projection: Projection[Any]
) -> ProjectionStatus:
    """The projection's active generation, position, lag and skipped events."""
    prepare_registry(views)
    head = ledger.recorder.max_notification_id() or 0
    rows = views.fetchall(
        "SELECT generation, position, active FROM projection_generations "
        "WHERE name = ? ORDER BY generation",
        [projection.name],
    )
    active = [(g, p) for g, p, is_active in rows if is_active]
    newer = [
        p for g, p, is_active in rows if not is_active and active and g > active[0][0]
    ]
    generation, position = active[0] if active else (None, 0)
    skipped = len(skipped_events(views, projection.name, generation)) if active else 0
    return ProjectionStatus(
        name=projection.name,
        generation=generation,
        position=int(position),
        head=int(head),
        skipped=skipped,
        rebuilding_at=int(newer[-1]) if newer else None,
    )


def skipped_events(
    views: ViewDatabase, name: str, generation: int | None
) -> list[SkippedEvent]:
    """The poison events one generation of a projection stepped over."""
    rows = views.fetchall(
        "SELECT position, topic, originator_id, error, skipped_at "
        "FROM projection_skipped WHERE name = ? AND generation = ? ORDER BY position",
        [name, generation],
    )
    return [SkippedEvent(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]
