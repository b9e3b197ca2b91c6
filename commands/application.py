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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, PersistenceError
from eventsourcing.utils import EnvType

from commands.ports import BlobStore, MemoryBlobStore, SendPolicy
from ledger.errors import InvalidTransition, NotFound, StoreUnavailable

logger = logging.getLogger(__name__)

R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)

CONFLICT_RETRIES = 3


@dataclass
class Decision(Generic[R]):
    """What one command decided: events to save and the caller's answer."""

    result: R
    aggregates: Sequence[Aggregate] = field(default_factory=tuple)

    @property
    def writes(self) -> bool:
        return any(a.pending_events for a in self.aggregates)


Decide = Callable[[], Decision[R]]


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
    ) -> None:
        super().__init__(env)
        self.policy = policy or SendPolicy()
        self.blobs = blobs or MemoryBlobStore()

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

    def commit(self, aggregates: Sequence[Aggregate]) -> None:
        """Save the pending events of `aggregates` in one transaction."""
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise
        except PersistenceError as exc:
            raise StoreUnavailable(
                f"The event store refused the write ({exc}); nothing was recorded."
            ) from exc

    def load(self, kind: type[A], aggregate_id: UUID) -> A | None:
        """The aggregate, or None when it does not exist."""
        try:
            aggregate: object = self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None
        if not isinstance(aggregate, kind):
            return None
        return aggregate

    def load_in_tenant(
        self, kind: type[A], aggregate_id: UUID, tenant_id: str, label: str, key: Any
    ) -> A:
        """The tenant's aggregate; another tenant's looks exactly like a missing one."""
        aggregate = self.load(kind, aggregate_id)
        if aggregate is None or getattr(aggregate, "tenant_id", None) != tenant_id:
            raise NotFound(label, key)
        return aggregate
