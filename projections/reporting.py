"""Reporting: delivery and engagement counts per template, customer type, channel.

The view keeps one row per outbound message with the stages it reached, and
the customer type of every customer; reports are grouped from those rows when
asked for. A message's stages are read off its current attempt by the
domain's fold (through `MessageFacts`):

- sent: the provider accepted it; delivered: it reached the recipient (an
  open implies delivery; a bounce undoes it); opened; bounced (and not
  opened); failed; replied: the customer answered it.

Rates are shares of the messages recorded (queued) in the group.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eventsourcing.utils import get_topic

from commands.access import require
from ledger.directory import Customer
from ledger.errors import InvalidCommand, ProjectionError
from ledger.message import Message
from ledger.values import Direction, Permission, Principal, Status
from projections.database import COPY_FROM, PostgresViews, ViewDatabase
from projections.runtime import Projection, RecordedEvent, require_active
from projections.timeline import (
    FACT_SETTERS,
    REPLY_RECEIVED,
    RETRIED,
    MessageFacts,
    load_facts,
    recorded_time,
    stored_time,
)

QUEUED = get_topic(Message.Queued)
CUSTOMER_REGISTERED = get_topic(Customer.Registered)
CUSTOMER_TOPICS = {CUSTOMER_REGISTERED, get_topic(Customer.Updated)}
STAGES = ("sent", "delivered", "opened", "bounced", "failed", "replied")
REPORTS = ("templates", "customer-types", "funnel", "daily")
MESSAGE_COLUMNS = (
    "message_id",
    "tenant_id",
    "customer_id",
    "occurred_at",
    "channel",
    "provider",
    "template_id",
    "template_version",
    *STAGES,
    "facts",
)
MESSAGE_TYPES = (*["text"] * 7, "int", *["int"] * len(STAGES), "text")


def stages(facts: MessageFacts) -> list[int]:
    """Whether the message reached each of STAGES, as 0 or 1."""
    current = facts.attempt(facts.current)
    status = facts.status
    return [
        int(current.sent),
        int(current.reached_recipient),
        int(current.opened),
        int(status == Status.BOUNCED),
        int(status == Status.FAILED),
        int(facts.replied),
    ]


@dataclass
class ReportChanges:
    """A batch made ready to write.

    The rows of messages it queues, complete; the events of older messages by
    message, in log order; the last provider that reported on each of those;
    customers registered, and customer types changed.
    """

    new_rows: list[list[Any]]
    later: dict[str, list[RecordedEvent]]
    providers: dict[str, str]
    registered: dict[str, list[str]]
    retyped: dict[str, str]


class ReportingProjection(Projection[ReportChanges]):
    """Per-message delivery stages and customer types, for grouped reports."""

    name = "reporting"
    topics = frozenset(
        {QUEUED, *FACT_SETTERS, RETRIED, REPLY_RECEIVED, *CUSTOMER_TOPICS}
    )

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}messages", f"{prefix}customers"]

    def create_tables(self, views: ViewDatabase, prefix: str) -> None:
        views.execute(
            f"""CREATE TABLE {prefix}messages (
                message_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                occurred_at TEXT NOT NULL,
                channel TEXT NOT NULL,
                provider TEXT,
                template_id TEXT,
                template_version INTEGER,
                sent INTEGER NOT NULL,
                delivered INTEGER NOT NULL,
                opened INTEGER NOT NULL,
                bounced INTEGER NOT NULL,
                failed INTEGER NOT NULL,
                replied INTEGER NOT NULL,
                facts TEXT NOT NULL)"""
        )
        views.execute(
            f"""CREATE TABLE {prefix}customers (
                aggregate_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                customer_type TEXT NOT NULL)"""
        )

    def create_indexes(self, views: ViewDatabase, prefix: str) -> None:
        views.execute(
            f"CREATE INDEX {prefix}by_time ON {prefix}messages (tenant_id, occurred_at)"
        )
        views.execute(
            f"CREATE INDEX {prefix}by_customer ON {prefix}customers "
            "(tenant_id, customer_id)"
        )

    def prepare(self, events: Sequence[RecordedEvent]) -> ReportChanges:
        # Messages queued in the batch are folded here in full; events of
        # older messages wait for `write`, which loads their stored facts.
        new: dict[str, tuple[RecordedEvent, MessageFacts]] = {}
        changes = ReportChanges([], {}, {}, {}, {})
        for event in events:
            key = event.originator_id
            if event.topic == QUEUED:
                new[key] = (event, MessageFacts(Direction.OUTBOUND))
            elif event.topic == CUSTOMER_REGISTERED:
                changes.registered[key] = [
                    event.state["tenant_id"],
                    event.state["customer_id"],
                    event.state["customer_type"],
                ]
            elif key in changes.registered and event.topic in CUSTOMER_TOPICS:
                changes.registered[key][2] = event.state["customer_type"]
            elif event.topic in CUSTOMER_TOPICS:
                changes.retyped[key] = event.state["customer_type"]
            else:
                if event.topic in FACT_SETTERS:
                    changes.providers[key] = event.state["provider"]
                if key in new:
                    new[key][1].apply(event)
                else:
                    changes.later.setdefault(key, []).append(event)
        changes.new_rows = [
            new_row(event, facts, changes.providers.get(key))
            for key, (event, facts) in new.items()
        ]
        return changes

    def write(self, views: ViewDatabase, prefix: str, prepared: ReportChanges) -> None:
        known = load_facts(views, prefix, prepared.later)
        for message_id, events in prepared.later.items():
            facts = known.get(message_id)
            if facts is None:
                raise ProjectionError(
                    f"Message {message_id} has no row in the report; "
                    "its Queued event was skipped or never recorded."
                )
            for event in events:
                facts.apply(event)

        views.insert_many(
            f"{prefix}messages", MESSAGE_COLUMNS, MESSAGE_TYPES, prepared.new_rows
        )
        update_rows(views, prefix, known, prepared.providers)
        write_customers(views, prefix, prepared.registered, prepared.retyped)


def new_row(
    event: RecordedEvent, facts: MessageFacts, provider: str | None
) -> list[Any]:
    """The row of a message queued in the batch, in MESSAGE_COLUMNS order."""
    state = event.state
    return [
        event.originator_id,
        state["tenant_id"],
        state["customer_id"],
        recorded_time(state["occurred_at"]),
        state["channel"],
        provider,
        state.get("template_id"),
        state.get("template_version"),
        *stages(facts),
        facts.dumps(),
    ]


def update_rows(
    views: ViewDatabase,
    prefix: str,
    known: dict[str, MessageFacts],
    providers: dict[str, str],
) -> None:
    """Update the stages of messages queued before the batch."""
    changed = [
        [providers.get(message_id), *stages(facts), facts.dumps(), message_id]
        for message_id, facts in known.items()
    ]
    if not changed:
        return
    if isinstance(views, PostgresViews) and len(changed) >= COPY_FROM:
        columns = ("provider", *STAGES, "facts", "message_id")
        staging = views.staging_table(
            "reporting_changed_rows",
            columns,
            ("text", *["int"] * len(STAGES), "text", "text"),
        )
        views.copy_rows(staging, columns, changed)
        assignments = ", ".join(f"{stage} = given.{stage}" for stage in STAGES)
        views.execute(
            f"UPDATE {prefix}messages AS m SET provider = coalesce(given.provider, "
            f"m.provider), {assignments}, facts = given.facts FROM {staging} AS given "
            "WHERE m.message_id = given.message_id"
        )
        return
    views.executemany(
        f"UPDATE {prefix}messages SET provider = coalesce(?, provider), sent = ?, "
        "delivered = ?, opened = ?, bounced = ?, failed = ?, replied = ?, facts = ? "
        "WHERE message_id = ?",
        changed,
    )


def write_customers(
    views: ViewDatabase,
    prefix: str,
    registered: dict[str, list[str]],
    retyped: dict[str, str],
) -> None:
    """Record new customers and changes of customer type."""
    views.executemany(
        f"INSERT INTO {prefix}customers "
        "(aggregate_id, tenant_id, customer_id, customer_type) VALUES (?, ?, ?, ?)",
        [(key, *values) for key, values in registered.items()],
    )
    views.executemany(
        f"UPDATE {prefix}customers SET customer_type = ? WHERE aggregate_id = ?",
        [(kind, key) for key, kind in retyped.items()],
    )


@dataclass(frozen=True)
class ReportPeriod:
    """The messages a report counts: those that occurred in [since, until]."""

    since: datetime | None = None
    until: datetime | None = None


GROUPINGS = {
    "templates": (
        "m.template_id, m.template_version",
        ("template", "version"),
        "m.template_id IS NOT NULL",
    ),
    "customer-types": (
        "coalesce(c.customer_type, 'unknown')",
        ("customer_type",),
        "1 = 1",
    ),
    "funnel": (
        "m.channel, coalesce(m.provider, 'none')",
        ("channel", "provider"),
        "1 = 1",
    ),
    "daily": ("substr(m.occurred_at, 1, 10)", ("day",), "1 = 1"),
}


def delivery_report(
    views: ViewDatabase,
    principal: Principal,
    report: str,
    period: ReportPeriod | None = None,
) -> list[dict[str, Any]]:
    """One report's rows: the grouping columns, counts of each stage and rates."""
    require(principal, Permission.VIEW)
    if report not in GROUPINGS:
        raise InvalidCommand(
            "report",
            f"There is no report '{report}'; choose one of: {', '.join(REPORTS)}.",
        )
    period = period or ReportPeriod()
    prefix = require_active(views, "reporting")
    group, names, only = GROUPINGS[report]
    where = ["m.tenant_id = ?", only]
    params: list[Any] = [principal.tenant_id]
    if period.since:
        where.append("m.occurred_at >= ?")
        params.append(stored_time(period.since))
    if period.until:
        where.append("m.occurred_at <= ?")
        params.append(stored_time(period.until))
    sums = ", ".join(f"sum(m.{stage})" for stage in STAGES)
    rows = views.fetchall(
        f"SELECT {group}, count(*), {sums} FROM {prefix}messages m "
        f"LEFT JOIN {prefix}customers c "
        "ON c.tenant_id = m.tenant_id AND c.customer_id = m.customer_id "
        f"WHERE {' AND '.join(where)} GROUP BY {group} ORDER BY {group}",
        params,
    )
    return [report_row(names, row) for row in rows]


def stage_totals(views: ViewDatabase) -> dict[str, int]:
    """How many messages of every company have reached each stage, for metrics."""
    prefix = require_active(views, "reporting")
    sums = ", ".join(f"sum({stage})" for stage in STAGES)
    row = views.fetchone(f"SELECT {sums} FROM {prefix}messages") or ()
    return {stage: int(row[i] or 0) for i, stage in enumerate(STAGES) if row}


def report_row(names: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A grouped row as named counts and rates."""
    keys = dict(zip(names, row[: len(names)], strict=True))
    queued = int(row[len(names)])
    counts = dict(
        zip(STAGES, (int(v or 0) for v in row[len(names) + 1 :]), strict=True)
    )
    rates = {
        f"{stage}_rate": round(n / queued, 4) if queued else 0.0
        for stage, n in counts.items()
    }
    return {**keys, "queued": queued, **counts, **rates}


def report_csv(rows: list[dict[str, Any]]) -> str:
    """The report as CSV with a header line."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
