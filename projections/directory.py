"""The customer directory by address: who owns an email address or a cell phone.

Inbound threading asks which of a tenant's customers currently hold the
address a reply came from. The view keeps each customer's current email and
cell phone in lower case, indexed per tenant, so that question is one indexed
read instead of a scan of every customer's registration and updates. The
log's tail after the view's position is still scanned by the reader
(`commands.threading`), so a lagging view never hides a change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.utils import get_topic

from ledger.directory import Customer
from projections.database import ViewDatabase
from projections.runtime import Projection, RecordedEvent

REGISTERED = get_topic(Customer.Registered)
CUSTOMER_TOPICS = frozenset({REGISTERED, get_topic(Customer.Updated)})


def lowered(value: Any) -> str | None:
    """An address as threading compares it (`commands.threading.customers_owning`
    reading the log): lower case, or None when absent."""
    return value.lower() if isinstance(value, str) and value else None


@dataclass
class DirectoryChanges:
    """A batch made ready to write: customers it registers, in full, and the
    current addresses of customers registered before it."""

    registered: dict[str, list[str | None]] = field(default_factory=dict)
    updated: dict[str, list[str | None]] = field(default_factory=dict)


class DirectoryProjection(Projection[DirectoryChanges]):
    """Each customer's current addresses, looked up by address."""

    name = "directory"
    topics = CUSTOMER_TOPICS

    def table_names(self, prefix: str) -> list[str]:
        return [f"{prefix}customers"]

    def create_tables(self, views: ViewDatabase, prefix: str) -> None:
        views.execute(
            f"""CREATE TABLE {prefix}customers (
                aggregate_id TEXT PRIMARY KEY,
                tenant_id TEXT NOT NULL,
                customer_id TEXT NOT NULL,
                email TEXT,
                cell_phone TEXT)"""
        )

    def create_indexes(self, views: ViewDatabase, prefix: str) -> None:
        views.execute(
            f"CREATE INDEX {prefix}by_email ON {prefix}customers (tenant_id, email)"
        )
        views.execute(
            f"CREATE INDEX {prefix}by_phone ON {prefix}customers "
            "(tenant_id, cell_phone)"
        )

    def prepare(self, events: Sequence[RecordedEvent]) -> DirectoryChanges:
        # Registered and Updated both carry the whole contact record, so a
        # customer's last event in the batch sets its addresses.
        changes = DirectoryChanges()
        for event in events:
            addresses = [
                lowered(event.state.get("email")),
                lowered(event.state.get("cell_phone")),
            ]
            key = event.originator_id
            if event.topic == REGISTERED:
                tenant_id, customer_id = (
                    event.state["tenant_id"],
                    event.state["customer_id"],
                )
                changes.registered[key] = [tenant_id, customer_id, *addresses]
            elif key in changes.registered:
                changes.registered[key][2:] = addresses
            else:
                changes.updated[key] = addresses
        return changes

    def write(
        self, views: ViewDatabase, prefix: str, prepared: DirectoryChanges
    ) -> None:
        views.executemany(
            f"INSERT INTO {prefix}customers (aggregate_id, tenant_id, customer_id, "
            "email, cell_phone) VALUES (?, ?, ?, ?, ?)",
            [[key, *row] for key, row in prepared.registered.items()],
        )
        views.executemany(
            f"UPDATE {prefix}customers SET email = ?, cell_phone = ? "
            "WHERE aggregate_id = ?",
            [[*addresses, key] for key, addresses in prepared.updated.items()],
        )
