"""The ledger application: every write goes through here.

Each use case is split into a *decision* and a *commit*. A decision function
loads what it needs, applies the rules and returns the aggregates with pending
events plus the answer for the caller; it writes nothing. The commit saves the
pending events of one decision in one transaction. Keeping the two apart is
what lets many concurrent decisions share one transaction (see
commands.grouping) without any change to the rules.

An `IntegrityError` on commit means another writer got there first (the same
idempotency key, or a concurrent write to the same aggregate): the decision is
taken again on fresh state, which either finds the original message or
decides afresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
)
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    PersistenceError,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import EnvType

from commands.encoding import LedgerTranscoder
from commands.ports import (
    BatchReader,
    BlobStore,
    MemoryBlobStore,
    SendPolicy,
    ThreadingIndex,
)
from ledger.errors import InvalidTransition, NotFound, StoreUnavailable

logger = logging.getLogger(__name__)

R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)

CONFLICT_RETRIES = 3
# Ids per batched read: well inside SQLite's limit on bound parameters.
READ_CHUNK = 500


class Creation:
    """A new aggregate's first event, to be saved without building the aggregate.

    It offers the part of an aggregate that saving uses (`id`, the pending
    events, `collect_events`), for decisions that create an aggregate and never
    look at it again.
    """

    def __init__(self, created: Aggregate.Created) -> None:
        self.id: UUID = created.originator_id
        self.pending_events: list[Aggregate.Created] = [created]

    def collect_events(self) -> list[Aggregate.Created]:
        collected, self.pending_events = self.pending_events, []
        return collected


Recordable = Aggregate | Creation


@dataclass
class Decision(Generic[R]):
    """What one command decided: events to save and the caller's answer."""

    result: R
    aggregates: Sequence[Recordable] = field(default_factory=tuple)

    @property
    def writes(self) -> bool:
        return any(a.pending_events for a in self.aggregates)


Decide = Callable[[], Decision[R]]
History = Mapping[UUID, Sequence[Any]]


class Ledger(Application[UUID]):
    """The event-sourced application holding messages, the directory and templates."""

    name = "ledger"
    is_snapshotting_enabled = False

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        policy: SendPolicy | None = None,
        blobs: BlobStore | None = None,
        threading_index: ThreadingIndex | None = None,
    ) -> None:
        super().__init__(env)
        self.policy = policy or SendPolicy()
        self.blobs = blobs or MemoryBlobStore()
        self.threading_index = threading_index
        self._read_scope = threading.local()

    def close(self) -> None:
        if self.threading_index is not None:
            self.threading_index.close()
        super().close()

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON format, written faster (see commands.encoding)."""
        transcoder = LedgerTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def execute(self, decide: Decide[R]) -> R:
        """Take a decision and commit it, deciding again after a write conflict."""
        for _ in range(CONFLICT_RETRIES):
            decision = decide()
            if not decision.writes:
                return decision.result
            try:
                self.commit(decision.aggregates)
            except IntegrityError:
                logger.info("write conflict; deciding again on fresh state")
                continue
            return decision.result
        raise InvalidTransition(
            "The record changed repeatedly while this command ran; try again."
        )

    def commit(self, aggregates: Sequence[Recordable]) -> None:
        """Save the pending events of `aggregates` in one transaction."""
        try:
            self.save_aggregates(aggregates)
        except IntegrityError:
            raise
        except PersistenceError as exc:
            raise StoreUnavailable(
                f"The event store refused the write ({exc}); nothing was recorded."
            ) from exc

    def save_aggregates(self, aggregates: Sequence[Recordable]) -> None:
        """`save(*aggregates)` without the library's per-object protocol checks.

        `Application.save` tests every object against runtime-checkable
        protocols, which costs more than encoding the event; the objects here
        are known to be aggregates or creations, so their events are collected
        directly and the rest of `save` follows unchanged. Creations are not
        aggregates the library could snapshot, so only aggregates are listed.
        """
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for aggregate in aggregates:
            processing_event.events.extend(aggregate.collect_events())
            if isinstance(aggregate, Aggregate):
                processing_event.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)

    def load(self, kind: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, or None when it does not exist."""
        history: History | None = getattr(self._read_scope, "history", None)
        shared: dict[UUID, object] | None = getattr(self._read_scope, "shared", None)
        aggregate: object
        if shared is not None and aggregate_id in shared:
            aggregate = shared[aggregate_id]
        elif history is not None and aggregate_id in history:
            # Each load projects a fresh object, so two decisions in one group
            # never share (and mutate) the same aggregate.
            aggregate = None
            for event in history[aggregate_id]:
                aggregate = event.mutate(aggregate)
            if shared is not None:
                shared[aggregate_id] = aggregate
        else:
            try:
                aggregate = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
        if not isinstance(aggregate, kind):
            return None
        return aggregate

    def read_history(
        self,
        aggregate_ids: Iterable[UUID],
        known: Mapping[UUID, int] | None = None,
    ) -> dict[UUID, list[Any]]:
        """The events of many aggregates in one query; missing ones map to [].

        `known` maps aggregates to a version the caller has already decoded:
        their events up to it are left out of the answer (by the database,
        when the recorder can do that, else before decoding).
        """
        wanted = list(dict.fromkeys(aggregate_ids))
        history: dict[UUID, list[Any]] = {aggregate_id: [] for aggregate_id in wanted}
        known = known or {}
        try:
            stored = [
                stored_event
                for start in range(0, len(wanted), READ_CHUNK)
                for stored_event in self._select_stored_events(
                    wanted[start : start + READ_CHUNK], known
                )
            ]
        except PersistenceError as exc:
            raise StoreUnavailable(
                f"The event store could not be read ({exc}); try again."
            ) from exc
        for stored_event in stored:
            originator_id = stored_event.originator_id
            if type(originator_id) is not UUID:
                originator_id = UUID(str(originator_id))
            if stored_event.originator_version <= known.get(originator_id, 0):
                continue
            history[originator_id].append(self.mapper.to_domain_event(stored_event))
        return history

    def _select_stored_events(
        self, aggregate_ids: list[UUID], known: Mapping[UUID, int]
    ) -> list[StoredEvent]:
        recorder = self.recorder
        if isinstance(recorder, BatchReader):
            if not known:
                return list(recorder.select_events_of(aggregate_ids))
            after = [known.get(aggregate_id, 0) for aggregate_id in aggregate_ids]
            return list(recorder.select_events_of(aggregate_ids, after))
        return [
            stored_event
            for aggregate_id in aggregate_ids
            for stored_event in recorder.select_events(aggregate_id)
        ]

    @contextmanager
    def reading_from(
        self, history: History, shared: dict[UUID, object] | None = None
    ) -> Iterator[None]:
        """Serve `load` from `history` (already read) on this thread for a while.

        Given a `shared` dict, each aggregate is projected once into it and the
        same object is returned to every load: only for readers that never
        change what they load.
        """
        previous = (
            getattr(self._read_scope, "history", None),
            getattr(self._read_scope, "shared", None),
        )
        self._read_scope.history = history
        self._read_scope.shared = shared
        try:
            yield
        finally:
            self._read_scope.history, self._read_scope.shared = previous

    def load_in_tenant(
        self, kind: type[A], aggregate_id: UUID, tenant_id: str, label: str, key: Any
    ) -> A:
        """The tenant's aggregate; another tenant's looks exactly like a missing one."""
        aggregate = self.load(kind, aggregate_id)
        if aggregate is None or getattr(aggregate, "tenant_id", None) != tenant_id:
            raise NotFound(label, key)
        return aggregate
