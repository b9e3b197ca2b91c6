"""The customer timeline: every message of a customer, newest first, searchable.

One row per message with the listing's columns, the message's thread and the
facts of each attempt, from which the status is read by the domain's own fold
(`ledger.status.AttemptFacts`), so the view agrees with the aggregate whatever
order provider events came in. Full-text search covers subject, body and
addresses: a `tsvector` column on PostgreSQL, a contentless FTS5 table keyed
by the row's `seq` on SQLite. Every search is within one customer, so it
walks that customer's rows (index `by_customer`) and matches each; an index
of every word in the store would cost each insert more than it saves a
search (see docs/projections.md, "Search").

Times are stored as fixed-width ISO-8601 UTC text, which sorts correctly on
both databases; pages are keyed on (occurred_at, seq), where `seq` is the log
position of the message's creation and breaks ties.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from eventsourcing.utils import get_topic

from ledger.errors import ProjectionError
from ledger.message import Message
from ledger.status import AttemptFacts
from ledger.values import SYSTEM, Direction, Status
from projections.database import COPY_FROM, PostgresViews, ViewDatabase
from projections.runtime import Projection, RecordedEvent, instant

CREATED = {get_topic(Message.Queued), get_topic(Message.Received)}
FACT_SETTERS: dict[str, Message.ProviderEvent] = {
    get_topic(cls): object.__new__(cls)
    for cls in (
        Message.Sent,
        Message.Delivered,
        Message.Opened,
        Message.Bounced,
        Message.Failed,
    )
}
RETRIED = get_topic(Message.Retried)
REPLY_RECEIVED = get_topic(Message.ReplyReceived)
LOOKUP_CHUNK = 500
# Plain text of each status and direction: an enum's `.value` is a descriptor
# call, and the timeline reads one per row.
STATUS_TEXT = {status: status.value for status in Status}
RECEIVED = Status.RECEIVED.value
INBOUND = Direction.INBOUND.value


def stored_time(moment: datetime) -> str:
    """A UTC time as fixed-width text, so that text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def recorded_time(value: Any) -> str:
    """`stored_time` of a time in event fields, skipping work when it is one."""
    if isinstance(value, dict):
        text = value.get("_data_")
        if isinstance(text, str) and len(text) == 32 and text.endswith("+00:00"):
            return text
    return stored_time(instant(value))


@dataclass
class MessageFacts:
    """What the timeline keeps about a message to fold its status."""

    direction: str
    current: int = 1
    attempts: dict[int, AttemptFacts] = field(default_factory=dict)
    replied: bool = False

    @property
    def status(self) -> str:
        """The status the domain's fold gives these facts."""
        if self.direction == INBOUND:
            return RECEIVED
        return STATUS_TEXT[self.attempt(self.current).status]

    def attempt(self, number: int) -> AttemptFacts:
        """The facts of attempt `number`, created if reported first."""
        facts = self.attempts.get(number)
        if facts is None:
            facts = self.attempts[number] = AttemptFacts(number)
        return facts

    def apply(self, event: RecordedEvent) -> None:
        """Set the facts one event of the message records."""
        setter = FACT_SETTERS.get(event.topic)
        if setter is not None:
            setter.set_fact(self.attempt(int(event.state["attempt"])))
        elif event.topic == RETRIED:
            number = int(event.state["attempt"])
            self.attempts[number] = AttemptFacts(number)
            self.current = number
        elif event.topic == REPLY_RECEIVED:
            self.replied = True

    def dumps(self) -> str:
        """The facts as JSON text for the row's `facts` column: each attempt's
        as [sent, delivered, opened, bounced, failed], the order `loads`
        gives them back to AttemptFacts in."""
        return orjson.dumps(
            {
                "direction": self.direction,
                "current": self.current,
                "attempts": {
                    str(n): [a.sent, a.delivered, a.opened, a.bounced, a.failed]
                    for n, a in self.attempts.items()
                },
                "replied": self.replied,
            }
        ).decode()

    @classmethod
    def loads(cls, text: str) -> MessageFacts:
        """Facts from the JSON text `dumps` wrote."""
        raw = orjson.loads(text)
        attempts = {
            int(n): AttemptFacts(int(n), *flags) for n, flags in raw["attempts"].items()
        }
        return cls(raw["direction"], raw["current"], attempts, raw["replied"])


def first_line(text: str) -> str:
    """The first non-blank line of a text body."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


@dataclass
class NewRow:
    """A message created in the batch being projected."""

    event: RecordedEvent
    facts: MessageFacts

    def values(self) -> list[Any]:
        """The row's column values, in ROW_COLUMNS order.

        The status is read before the facts are written out: reading it
        adds the current attempt's (empty) facts if no event reported it.
        """
        event, facts = self.event, self.facts
        state = event.state
        get = state.get
        sent_by = get("sent_by") or {}
        return [
            event.position,
            event.originator_id,
            state["tenant_id"],
            state["customer_id"],
            recorded_time(state["occurred_at"]),
            facts.direction,
            state["channel"],
            get("subject"),
            first_line(get("text") or ""),
            state["sender"],
            orjson.dumps(get("to") or []).decode(),
            "Customer"
            if facts.direction == INBOUND
            else (sent_by.get("user_id") or SYSTEM),
            sent_by.get("trigger"),
            facts.status,
            int(facts.replied),
            len(get("attachments") or []),
            get("template_id"),
            get("template_version"),
            get("in_reply_to") or get("resend_of") or event.originator_id,
            facts.dumps(),
        ]

    def search_text(self) -> tuple[str, str, str]:
        """Subject, body and every address, for full-text search."""
        state = self.event.state
        addresses = [
            state["sender"],
            *(state.get("to") or []),
            *(state.get("cc") or []),
        ]
        addresses += state.get("bcc") or []
        return (
            state.get("subject") or "",
            state.get("text") or "",
            " ".join(addresses),
        )


# A new row's column values (ROW_COLUMNS order) and its searchable words.
NewValues = tuple[list[Any], tuple[str, str, str]]


@dataclass
class TimelineChanges:
    """A batch made ready to write: the rows of messages it creates, complete,
    and the events of older messages, by message, in log order."""

    new_rows: list[NewValues]
    later: dict[str, list[RecordedEvent]]


ROW_COLUMNS = (
    "seq, message_id, tenant_id, customer_id, occurred_at, direction, channel, "
    "subject, preview, sender, recipients, sent_by, trigger, status, replied, "
    "attachments, template_id, template_version, thread_id, facts"
)


# PostgreSQL types of ROW_COLUMNS, then of the searchable words.
ROW_TYPES = ("bigint", *["text"] * 13, "int", "int", "text", "int", *["text"] * 3)


class TimelineProjection(Projection[TimelineChanges]):
    """Each customer's messages with their current status, for listing and search."""

    name = "timeline"
    topics = frozenset({*CREATED, *FACT_SETTERS, RETRIED, REPLY_RECEIVED})
    attempt_only = frozenset({*FACT_SETTERS, RETRIED})

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}search", f"{prefix}messages"]

    def create_tables(self, views: ViewDatabase, prefix: str) -> None:
        postgres = views.dialect == "postgres"
        views.execute(
            f"""CREATE TABLE {prefix}messages (
                seq BIGINT NOT NULL UNIQUE,
                message_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                occurred_at TEXT NOT NULL,
                direction TEXT NOT NULL,
                channel TEXT NOT NULL,
                subject TEXT,
                preview TEXT NOT NULL,
                sender TEXT NOT NULL,
                recipients TEXT NOT NULL,
                sent_by TEXT NOT NULL,
                trigger TEXT,
                status TEXT NOT NULL,
                replied INTEGER NOT NULL,
                attachments INTEGER NOT NULL,
                template_id TEXT,
                template_version INTEGER,
                thread_id TEXT NOT NULL,
                facts TEXT NOT NULL
                {", search TSVECTOR NOT NULL" if postgres else ""})"""
        )
        if not postgres:
            views.execute(
                f"CREATE VIRTUAL TABLE {prefix}search USING fts5("
                "subject, body, addresses, content='')"
            )

    def create_indexes(self, views: ViewDatabase, prefix: str) -> None:
        views.execute(
            f"CREATE INDEX {prefix}by_customer ON {prefix}messages "
            "(tenant_id, customer_id, occurred_at, seq)"
        )
        # Only replies and resends: a message that starts its own thread is
        # found by its id (see projections.detail.thread_of). Most messages
        # start their own, and this index took a third of an insert's time.
        views.execute(
            f"CREATE INDEX {prefix}by_thread ON {prefix}messages "
            "(tenant_id, thread_id) WHERE thread_id <> message_id"
        )

    def prepare(self, events: Sequence[RecordedEvent]) -> TimelineChanges:
        # Messages created in the batch are folded here in full; events of
        # older messages wait for `write`, which loads their stored facts.
        new: dict[str, NewRow] = {}
        later: dict[str, list[RecordedEvent]] = {}
        for event in events:
            if event.topic in CREATED:
                direction = event.state.get("direction", Direction.INBOUND.value)
                new[event.originator_id] = NewRow(event, MessageFacts(direction))
            elif event.originator_id in new:
                new[event.originator_id].facts.apply(event)
            else:
                later.setdefault(event.originator_id, []).append(event)
        return TimelineChanges(
            [(row.values(), row.search_text()) for row in new.values()], later
        )

    def write(
        self, views: ViewDatabase, prefix: str, prepared: TimelineChanges
    ) -> None:
        known = load_facts(views, prefix, prepared.later)
        for message_id, events in prepared.later.items():
            facts = known.get(message_id)
            if facts is None:
                raise ProjectionError(
                    f"Message {message_id} has no row in the timeline; "
                    "its creation was skipped or never recorded."
                )
            for event in events:
                facts.apply(event)

        insert_rows(views, prefix, prepared.new_rows)
        update_rows(views, prefix, known)


def update_rows(
    views: ViewDatabase, prefix: str, known: dict[str, MessageFacts]
) -> None:
    """Write the new status and facts of messages created earlier."""
    rows = [
        (facts.status, int(facts.replied), facts.dumps(), message_id)
        for message_id, facts in known.items()
    ]
    if not rows:
        return
    if isinstance(views, PostgresViews) and len(rows) >= COPY_FROM:
        columns = ("status", "replied", "facts", "message_id")
        staging = views.staging_table(
            "timeline_changed_rows", columns, ("text", "int", "text", "text")
        )
        views.copy_rows(staging, columns, rows)
        views.execute(
            f"UPDATE {prefix}messages AS m SET status = given.status, "
            f"replied = given.replied, facts = given.facts FROM {staging} AS given "
            "WHERE m.message_id = given.message_id"
        )
        return
    views.executemany(
        f"UPDATE {prefix}messages SET status = ?, replied = ?, facts = ? "
        "WHERE message_id = ?",
        rows,
    )


def load_facts(
    views: ViewDatabase, prefix: str, message_ids: Iterable[str]
) -> dict[str, MessageFacts]:
    """The stored facts of messages the batch changes but did not create."""
    wanted = list(message_ids)
    found: dict[str, MessageFacts] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        marks = ", ".join("?" * len(chunk))
        for message_id, facts in views.fetchall(
            f"SELECT message_id, facts FROM {prefix}messages "
            f"WHERE message_id IN ({marks})",
            chunk,
        ):
            found[message_id] = MessageFacts.loads(facts)
    return found


def insert_rows(views: ViewDatabase, prefix: str, rows: list[NewValues]) -> None:
    """Insert the rows (and search entries) of messages created in a batch."""
    if not rows:
        return
    if isinstance(views, PostgresViews) and len(rows) < COPY_FROM:
        views.executemany(
            f"INSERT INTO {prefix}messages ({ROW_COLUMNS}, search) VALUES "
            f"({', '.join('?' * 20)}, to_tsvector('simple', ?))",
            [[*values, " ".join(words)] for values, words in rows],
        )
        return
    if isinstance(views, PostgresViews):
        # COPY into a staging table, then one INSERT … SELECT that computes
        # the search vectors on the server.
        names = [*ROW_COLUMNS.split(", "), "words"]
        staging = views.staging_table("timeline_new_rows", names, ROW_TYPES)
        views.copy_rows(
            staging, names, ([*values, " ".join(words)] for values, words in rows)
        )
        views.execute(
            f"INSERT INTO {prefix}messages ({ROW_COLUMNS}, search) "
            f"SELECT {ROW_COLUMNS}, to_tsvector('simple', words) FROM {staging}"
        )
        return
    views.executemany(
        f"INSERT INTO {prefix}messages ({ROW_COLUMNS}) VALUES ({', '.join('?' * 20)})",
        [values for values, _ in rows],
    )
    views.executemany(
        f"INSERT INTO {prefix}search (rowid, subject, body, addresses) "
        "VALUES (?, ?, ?, ?)",
        [(values[0], *words) for values, words in rows],
    )
