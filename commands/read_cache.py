"""What a group committer remembers of the aggregates its groups have read.

A busy committer reads the same company, templates and customers group after
group. Every round still asks the store for the events of each aggregate it
names, so no decision is ever taken on state older than that round's read;
what this cache spares is the rest of the work: decoding events it has decoded
before, and projecting again an aggregate whose version has not moved since.

It belongs to one committer thread and is never shared, so it takes no locks.
It holds at most `limit` aggregates and forgets the least recently used first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import UUID

from commands.application import History

DEFAULT_LIMIT = 10_000


class ReadCache:
    """Decoded events and read-only projections of recently read aggregates."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"limit is {limit}; set it to 1 or more.")
        self.limit = limit
        self._events: dict[UUID, list[Any]] = {}
        self._projections: dict[UUID, tuple[int, object]] = {}

    def known_versions(self, aggregate_ids: Iterable[UUID]) -> dict[UUID, int]:
        """The version decoded so far of each of these aggregates the cache holds."""
        events = self._events
        return {
            aggregate_id: events[aggregate_id][-1].originator_version
            for aggregate_id in aggregate_ids
            if aggregate_id in events
        }

    def events_of(self, aggregate_id: UUID) -> list[Any] | None:
        """The aggregate's cached history, or None if it is not held."""
        return self._events.get(aggregate_id)

    def projection_of(self, aggregate_id: UUID) -> object | None:
        """A read-only projection still current for the cached history, if any."""
        remembered = self._projections.get(aggregate_id)
        events = self._events.get(aggregate_id)
        if remembered and events and remembered[0] == events[-1].originator_version:
            return remembered[1]
        return None

    def complete(self, fresh: History) -> dict[UUID, list[Any]]:
        """Each aggregate's whole history: what was cached, then what is new.

        `fresh` is what the store returned beyond the known versions. An
        aggregate that the store has no events for is not remembered.
        """
        history: dict[UUID, list[Any]] = {}
        for aggregate_id, newer in fresh.items():
            cached = self._events.pop(aggregate_id, None)
            events = cached + list(newer) if cached and newer else cached or list(newer)
            history[aggregate_id] = events
            if events:
                self._events[aggregate_id] = events
        self._forget_oldest()
        return history

    def projections(self, history: History) -> dict[UUID, object]:
        """Read-only projections still current for this history."""
        current: dict[UUID, object] = {}
        for aggregate_id, events in history.items():
            remembered = self._projections.get(aggregate_id)
            if remembered and events and remembered[0] == events[-1].originator_version:
                current[aggregate_id] = remembered[1]
        return current

    def keep_projections(
        self, projections: dict[UUID, object], history: History
    ) -> None:
        """Remember read-only projections made from `history` for later groups."""
        for aggregate_id, projection in projections.items():
            events = history.get(aggregate_id)
            if projection is not None and events:
                self._projections[aggregate_id] = (
                    events[-1].originator_version,
                    projection,
                )
        while len(self._projections) > self.limit:
            del self._projections[next(iter(self._projections))]

    def remember_written(self, events: Iterable[Any]) -> None:
        """Add events this committer has just committed, in version order.

        They extend what is cached when they follow on from it; a new
        aggregate starts its history with them. Anything that does not follow
        on (another writer got in between) drops the aggregate instead.
        """
        for event in events:
            aggregate_id = event.originator_id
            version = event.originator_version
            cached = self._events.get(aggregate_id)
            if cached is not None and cached[-1].originator_version == version - 1:
                self._events[aggregate_id] = [*cached, event]
            elif cached is None and version == 1:
                self._events[aggregate_id] = [event]
            else:
                self._events.pop(aggregate_id, None)
        self._forget_oldest()

    def _forget_oldest(self) -> None:
        events = self._events
        while len(events) > self.limit:
            oldest = next(iter(events))
            del events[oldest]
            self._projections.pop(oldest, None)
