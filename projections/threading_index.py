"""The views as inbound threading's index: address owners and outbound messages.

`ThreadingViews` answers the two questions `commands.threading` asks of every
inbound message, from the directory view (who owns this address) and the
timeline view (this customer's outbound messages). Each answer carries the
position its view is complete to, read before the rows, so a row committed in
between is at worst read twice (once more from the log), never missed.

Each thread gets its own connection to the views, opened on first use, as
the inbound listeners and the HTTP app call it from several threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

import orjson

from commands.ports import OutboundSummary
from projections.database import ViewDatabase, ViewsPerThread
from projections.runtime import active_generation, table_prefix

POSITIONS_TABLE = "projection_generations"


class ThreadingViews:
    """A `ThreadingIndex` over the directory and timeline views of one store."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.connections = ViewsPerThread(env)

    def address_owners(
        self, tenant_id: str, channel: str, address: str
    ) -> tuple[dict[UUID, str], int] | None:
        views = self.views()
        found = complete_to(views, "directory")
        if found is None:
            return None
        prefix, position = found
        column = "email" if channel == "email" else "cell_phone"
        rows = views.fetchall(
            f"SELECT aggregate_id, customer_id FROM {prefix}customers "
            f"WHERE tenant_id = ? AND {column} = ?",
            [tenant_id, address],
        )
        return {UUID(str(aggregate)): str(key) for aggregate, key in rows}, position

    def outbound_messages(
        self, tenant_id: str, customer_id: str, channel: str
    ) -> tuple[list[OutboundSummary], int] | None:
        views = self.views()
        found = complete_to(views, "timeline")
        if found is None:
            return None
        prefix, position = found
        rows = views.fetchall(
            "SELECT message_id, occurred_at, channel, sender, recipients, subject "
            f"FROM {prefix}messages WHERE tenant_id = ? AND customer_id = ? "
            "AND direction = 'outbound' AND channel = ? ORDER BY occurred_at, seq",
            [tenant_id, customer_id, channel],
        )
        messages = [
            OutboundSummary(
                message_id=UUID(str(message_id)),
                occurred_at=datetime.fromisoformat(str(occurred_at)),
                channel=str(kind),
                sender=str(sender),
                to=list(orjson.loads(recipients)),
                subject=subject,
            )
            for message_id, occurred_at, kind, sender, recipients, subject in rows
        ]
        return messages, position

    def views(self) -> ViewDatabase:
        """This thread's connection to the views."""
        return self.connections.get()

    def close(self) -> None:
        self.connections.close()


def complete_to(views: ViewDatabase, name: str) -> tuple[str, int] | None:
    """The table prefix of projection `name` and the position it is complete to.

    None until the projection has run on this store.
    """
    if not views.table_exists(POSITIONS_TABLE):
        return None
    generation = active_generation(views, name)
    if generation is None:
        return None
    row = views.fetchone(
        f"SELECT position FROM {POSITIONS_TABLE} WHERE name = ? AND generation = ?",
        [name, generation],
    )
    if row is None:
        return None
    return table_prefix(name, generation), int(row[0])
