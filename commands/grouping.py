"""Grouped commits: many concurrent commands decided apart, committed together.

Callers (threads, or asyncio tasks) hand a decision function to a
`GroupCommitter`. One committer thread takes whatever has arrived, reads what
the group needs (in one query, most often), decides each command on that state,
and saves every aggregate of the group in ONE transaction. Each caller hears
its own outcome only after that transaction has committed.

The rules it keeps:

- A command that is refused (validation, suppression, permission) fails alone;
  the rest of its group still commits.
- Two commands of one group that write the same aggregate (the same
  idempotency key, two reports on one message) are not saved together: the
  later one waits for the next round and is decided again on the committed
  state, so a repeated key gets the original message back.
- A write conflict with a writer outside the group makes the group fall back
  to one transaction per command, each decided again on fresh state.
- A database failure fails exactly the commands of the group with
  StoreUnavailable; their transaction rolled back as a whole.
- The committer never lingers for more commands: it starts on a command as
  soon as it is idle, and groups only what arrived while it was busy, capped
  at `max_group` commands, so a lone caller waits for nobody.

Deciding and writing overlap. The committer thread hands each decided group
to a writer thread and goes straight on to the next; the writer commits
groups one transaction after another, and when several are waiting it merges
them (up to MERGED_GROUPS) into one transaction, which then succeeds or fails
as one group. A request that reads or writes an aggregate that a transaction
still in flight writes is held back until the writer reports that
transaction over, so no decision is taken on state that is about to change.

Each round reads what its group needs in as few queries as it can: a read
round that depends on an earlier one (a send's suppression records depend on
its customer's addresses) is named on the cached state when the cache holds
what it loads, and read in the same query; if that query shows the cached
state had moved on, the round is named again and read once more.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from commands.access import require
from commands.application import Decide, Decision, History, Ledger, Recordable
from commands.delivery import Outcome, decide_delivery_event
from commands.models import RecordDeliveryEvent, SendMessage
from commands.read_cache import ReadCache
from commands.send import SendReceipt, address, decide_send
from commands.suppressions import suppression_ids
from ledger.directory import Company, Customer
from ledger.errors import LedgerError, StoreUnavailable
from ledger.message import idempotent_message_id
from ledger.template import Template
from ledger.values import Permission, Principal

logger = logging.getLogger(__name__)

R = TypeVar("R")

MAX_GROUP = 256
# How many decided groups, at most, the writer merges into one transaction.
MERGED_GROUPS = 4

ReadRound = Callable[[Ledger], Iterable[UUID]]
"""Names aggregates a decision will load; it may load (never change) earlier reads."""


class CommitterClosed(LedgerError):
    """Raised when a command is handed to a group committer that has stopped."""


@dataclass
class Request(Generic[R]):
    """One caller's command waiting in the committer's queue."""

    decide: Decide[R]
    reads: Sequence[ReadRound] = ()
    loads_read_only: bool = False
    future: Future[R] = field(default_factory=Future)


@dataclass
class Committed:
    """The writer's word that one transaction is over, committed or not."""

    written: set[UUID]
    events: list[Any]
    groups: int


class Naming:
    """One request's progress through its read rounds within a group's read-ahead.

    A round named on cached state is a guess: it stands if the query that
    follows finds that none of the aggregates it loaded had changed, and is
    named again otherwise.
    """

    def __init__(self, request: Request[Any]) -> None:
        self.rounds = request.reads
        self.done = 0
        self.named: set[UUID] = set()
        self.guessed_from: int | None = None
        self.leaned_on: set[UUID] = set()

    @property
    def rounds_left(self) -> bool:
        return self.done < len(self.rounds)

    def name_next(self, ledger: Ledger) -> None:
        self.named.update(named_reads(ledger, self.rounds[self.done]))
        self.done += 1

    def guessed(self, leaning_on: set[UUID]) -> None:
        """The round just named was named on these cached aggregates.

        They are read in the coming query too, which tells whether they moved.
        """
        if self.guessed_from is None:
            self.guessed_from = self.done - 1
        self.leaned_on |= leaning_on
        self.named |= leaning_on

    def check_guesses(self, moved: set[UUID]) -> None:
        """Keep the guessed rounds, unless one loaded an aggregate that moved on."""
        if self.guessed_from is not None and self.leaned_on & moved:
            self.done = self.guessed_from
        self.guessed_from = None
        self.leaned_on = set()


class NotHeld(Exception):
    """A read round being guessed needs an aggregate the cache does not hold."""


class Guess(Mapping[UUID, Sequence[Any]]):
    """What a guessed read round may load: this group's reads, then the cache.

    It notes every cached aggregate the round loads, and refuses (NotHeld)
    one the cache does not hold, rather than let it be read from the store.
    """

    def __init__(self, cache: ReadCache, read: History) -> None:
        self._cache = cache
        self._read = read
        self.used: set[UUID] = set()

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: UUID) -> Sequence[Any]:
        if key in self._read:
            return self._read[key]
        events = self._cache.events_of(key)
        if events is None:
            raise NotHeld(key)
        self.used.add(key)
        return events

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._read)

    def __len__(self) -> int:
        return len(self._read)


class GuessedProjections(dict[UUID, object]):
    """Projections for a guessed read round: this group's, then the cache's."""

    def __init__(
        self, cache: ReadCache, read: dict[UUID, object], guess: Guess
    ) -> None:
        super().__init__(read)
        self._cache = cache
        self._guess = guess

    def __contains__(self, key: object) -> bool:
        if super().__contains__(key):
            return True
        if not isinstance(key, UUID):
            return False
        projection = self._cache.projection_of(key)
        if projection is None:
            return False
        self._guess.used.add(key)
        self[key] = projection
        return True


@dataclass
class Decided:
    """A request whose decision writes, ready to be saved with its group."""

    request: Request[Any]
    decision: Decision[Any]


class GroupCommitter:
    """Commits concurrent commands in shared transactions; see the module notes."""

    def __init__(self, ledger: Ledger, *, max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError(f"max_group is {max_group}; set it to 1 or more.")
        self.ledger = ledger
        self.max_group = max_group
        self.groups_committed = 0
        self.commands_committed = 0
        self._in_flight: set[UUID] = set()
        self._writes_pending = 0
        self._reported = False
        self._cache = ReadCache()
        self._queue: queue.SimpleQueue[Request[Any] | Committed | None] = (
            queue.SimpleQueue()
        )
        self._to_write: queue.SimpleQueue[list[Decided] | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="group-committer", daemon=True
        )
        self._thread.start()

    def submit(
        self,
        decide: Decide[R],
        reads: Sequence[ReadRound] = (),
        *,
        loads_read_only: bool = False,
    ) -> R:
        """Decide and commit one command with others; blocks until it is durable."""
        return self.enqueue(decide, reads, loads_read_only=loads_read_only).result()

    async def submit_async(
        self,
        decide: Decide[R],
        reads: Sequence[ReadRound] = (),
        *,
        loads_read_only: bool = False,
    ) -> R:
        """As `submit`, awaiting the outcome instead of blocking the event loop."""
        future = self.enqueue(decide, reads, loads_read_only=loads_read_only)
        return await asyncio.wrap_future(future)

    def enqueue(
        self,
        decide: Decide[R],
        reads: Sequence[ReadRound] = (),
        *,
        loads_read_only: bool = False,
    ) -> Future[R]:
        """Queue a command; the future resolves once its group has committed.

        `reads` name what the decision will load, so the group reads it in one
        query per round. `loads_read_only` promises the decision changes none
        of the aggregates it loads (it only creates new ones), which lets it
        share the group's projections instead of projecting its own copies.
        """
        if self._closed.is_set():
            raise CommitterClosed(
                "The group committer has been closed; create a new one to send."
            )
        request: Request[R] = Request(decide, reads, loads_read_only)
        self._queue.put(request)
        return request.future

    def send(self, principal: Principal, command: SendMessage) -> SendReceipt:
        """Record a message as Queued, committed with concurrent sends."""
        return self.queue_send(principal, command).result()

    async def send_async(
        self, principal: Principal, command: SendMessage
    ) -> SendReceipt:
        """As `send`, for asyncio callers."""
        return await asyncio.wrap_future(self.queue_send(principal, command))

    def queue_send(
        self, principal: Principal, command: SendMessage
    ) -> Future[SendReceipt]:
        """Queue a send; the future holds its receipt once its group committed."""
        return self.enqueue(
            lambda: decide_send(self.ledger, principal, command),
            [
                lambda _: send_reads(principal, command),
                lambda ledger: suppression_reads(ledger, principal, command),
            ],
            loads_read_only=True,
        )

    def record_delivery_event(
        self, principal: Principal, command: RecordDeliveryEvent
    ) -> Outcome:
        """Record one provider outcome, committed with concurrent ones."""
        return self.queue_delivery_event(principal, command).result()

    def queue_delivery_event(
        self, principal: Principal, command: RecordDeliveryEvent
    ) -> Future[Outcome]:
        """Queue a provider outcome; a repeat of the same report appends nothing."""
        require(principal, Permission.CREATE)
        return self.enqueue(
            lambda: decide_delivery_event(self.ledger, principal, command),
            [lambda _: message_ids(command)],
        )

    def close(self) -> None:
        """Finish the queued commands, then stop the committer thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self) -> None:
        """Decide round after round while the writer commits earlier rounds."""
        writer = threading.Thread(
            target=self._write_all, name="group-writer", daemon=True
        )
        writer.start()
        deferred: list[Request[Any]] = []
        stop = False
        while not stop or deferred or self._writes_pending:
            group: list[Request[Any]] = []
            if deferred and (self._reported or not self._in_flight):
                group, deferred = deferred, []
            stop = self._collect(group, block=not group, stop=stop)
            if not group:
                continue
            decided, held_back = self._decide_safely(group)
            if held_back:
                deferred += held_back
                self._reported = False
            if not decided:
                continue
            if self._writes_pending or deferred or not self._queue.empty():
                self._in_flight |= written_by(decided)
                self._writes_pending += 1
                self._to_write.put(decided)
            else:
                # Nothing else to decide meanwhile: saving here spares a lone
                # caller the hand-over to the writer thread.
                self._cache.remember_written(self._save_safely(decided))
        self._to_write.put(None)
        writer.join()
        self._refuse_stragglers()

    def _refuse_stragglers(self) -> None:
        """Fail requests that slipped in while the committer was closing."""
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(request, Request):
                fail_unresolved([request], closed_early())

    def _collect(self, group: list[Request[Any]], *, block: bool, stop: bool) -> bool:
        """Add what has arrived to `group`, taking in the writer's reports.

        With `block`, waits for at least one arrival. Returns whether the
        committer has been told to stop; requests after that are refused.
        """
        while True:
            try:
                item = self._queue.get(block=block)
            except queue.Empty:
                return stop
            block = False
            if isinstance(item, Committed):
                self._absorb(item)
            elif item is None:
                stop = True
            elif stop:
                fail_unresolved([item], closed_early())
            else:
                group.append(item)
                if len(group) >= self.max_group:
                    return stop

    def _absorb(self, committed: Committed) -> None:
        """A transaction of the writer's is over: its aggregates may be read again."""
        self._cache.remember_written(committed.events)
        self._in_flight -= committed.written
        self._writes_pending -= committed.groups
        self._reported = True

    def _write_all(self) -> None:
        """The writer thread: commit decided groups, merging those that wait."""
        stop = False
        while not stop:
            first = self._to_write.get()
            if first is None:
                return
            batch, groups = list(first), 1
            while len(batch) < self.max_group * MERGED_GROUPS:
                try:
                    more = self._to_write.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch += more
                groups += 1
            events = self._save_safely(batch)
            self._queue.put(Committed(written_by(batch), events, groups))

    def _decide_safely(
        self, requests: list[Request[Any]]
    ) -> tuple[list[Decided], list[Request[Any]]]:
        try:
            return self._decide_all(requests)
        except Exception as exc:
            # The committer must outlive anything a round throws (a failed read,
            # say), or every later caller would wait for ever.
            logger.exception("deciding a group failed")
            fail_unresolved(requests, exc)
            return [], []

    def _save_safely(self, decided: list[Decided]) -> list[Any]:
        """Save a group; returns the events it committed (none if it failed)."""
        try:
            return self._save(decided)
        except Exception as exc:
            logger.exception("committing a group failed")
            fail_unresolved([item.request for item in decided], exc)
            return []

    def _decide_all(
        self, requests: list[Request[Any]]
    ) -> tuple[list[Decided], list[Request[Any]]]:
        """Decide each request on one read of the group; defer any that collide.

        A request collides when it reads or writes an aggregate the transaction
        still in flight writes (its read would be stale), or writes one that an
        earlier request of this round writes.
        """
        history, reads, projections = self._read_ahead(requests)
        try:
            return self._decide_each(requests, history, reads, projections)
        finally:
            self._cache.keep_projections(projections, history)

    def _decide_each(
        self,
        requests: list[Request[Any]],
        history: History,
        reads: list[set[UUID]],
        projections: dict[UUID, object],
    ) -> tuple[list[Decided], list[Request[Any]]]:
        decided: list[Decided] = []
        deferred: list[Request[Any]] = []
        claimed: set[UUID] = set(self._in_flight)
        for request, named in zip(requests, reads, strict=True):
            if named & self._in_flight:
                deferred.append(request)
                continue
            shared = projections if request.loads_read_only else None
            try:
                with self.ledger.reading_from(history, shared):
                    decision = request.decide()
            except Exception as exc:
                request.future.set_exception(exc)
                continue
            if not decision.writes:
                request.future.set_result(decision.result)
                continue
            written = {aggregate.id for aggregate in decision.aggregates}
            if written & claimed:
                deferred.append(request)
                continue
            claimed |= written
            decided.append(Decided(request, decision))
        return decided, deferred

    def _read_ahead(
        self, requests: list[Request[Any]]
    ) -> tuple[History, list[set[UUID]], dict[UUID, object]]:
        """Read every aggregate the group's decisions name, in as few queries as can be.

        Read rounds are named in order. A later round normally waits for the
        query that reads what the earlier ones named; when the cache holds
        all of that, the round is named at once on the cached state and read
        in the same query. Should the query find that any of those cached
        aggregates had moved on, the round is named again on what was read
        (one more query, for that request only).

        Returns what was read, the ids each request named, and the projections
        made along the way (read rounds only read, so they share them).
        """
        history: dict[UUID, list[Any]] = {}
        projections: dict[UUID, object] = {}
        naming = [Naming(request) for request in requests]
        while True:
            for each in naming:
                self._name_rounds(each, history, projections)
            wanted = set().union(*(each.named for each in naming)) - history.keys()
            if not wanted:
                return history, [each.named for each in naming], projections
            fresh = self.ledger.read_history(wanted, self._cache.known_versions(wanted))
            moved = {aggregate_id for aggregate_id, newer in fresh.items() if newer}
            read = self._cache.complete(fresh)
            history.update(read)
            projections.update(self._cache.projections(read))
            for each in naming:
                each.check_guesses(moved)

    def _name_rounds(
        self,
        naming: Naming,
        history: dict[UUID, list[Any]],
        projections: dict[UUID, object],
    ) -> None:
        """Name the request's next rounds, on what was read or else on the cache."""
        while naming.rounds_left:
            if naming.named <= history.keys():
                with self.ledger.reading_from(history, projections):
                    naming.name_next(self.ledger)
                continue
            guess = Guess(self._cache, history)
            shared = GuessedProjections(self._cache, projections, guess)
            try:
                with self.ledger.reading_from(guess, shared):
                    naming.name_next(self.ledger)
            except NotHeld:
                return
            naming.guessed(guess.used)

    def _save(self, decided: list[Decided]) -> list[Any]:
        aggregates: list[Recordable] = [
            aggregate for item in decided for aggregate in item.decision.aggregates
        ]
        events = [
            event for aggregate in aggregates for event in aggregate.pending_events
        ]
        try:
            self.ledger.commit(aggregates)
        except StoreUnavailable as exc:
            for item in decided:
                item.request.future.set_exception(exc)
            return []
        except Exception as exc:
            # A conflict with a writer outside the group, or one command whose
            # events cannot be stored: either way, each command alone decides
            # who fails.
            logger.info(
                "group of %s not committed (%s); committing one by one",
                len(decided),
                type(exc).__name__,
            )
            for item in decided:
                self._commit_alone(item.request)
            return []
        self.groups_committed += 1
        self.commands_committed += len(decided)
        for item in decided:
            item.request.future.set_result(item.decision.result)
        return events

    def _commit_alone(self, request: Request[Any]) -> None:
        try:
            result = self.ledger.execute(request.decide)
        except Exception as exc:
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)


def closed_early() -> CommitterClosed:
    return CommitterClosed(
        "The group committer was closed before this command ran; send it again."
    )


def fail_unresolved(requests: Iterable[Request[Any]], exc: Exception) -> None:
    """Give `exc` to every request not yet answered."""
    for request in requests:
        if not request.future.done():
            request.future.set_exception(exc)


def written_by(decided: Iterable[Decided]) -> set[UUID]:
    """The aggregates these decisions write."""
    return {aggregate.id for item in decided for aggregate in item.decision.aggregates}


def named_reads(ledger: Ledger, read_round: ReadRound) -> list[UUID]:
    """The ids a read round names; a round that fails names none."""
    try:
        return list(read_round(ledger))
    except LedgerError:
        # The decision itself will meet the same fault and report it properly.
        return []


def send_reads(principal: Principal, command: SendMessage) -> list[UUID]:
    """What a send loads first: its idempotent id, company, customer, template."""
    tenant = principal.tenant_id
    ids = [Company.id_for(tenant), Customer.id_for(tenant, command.customer_id)]
    if command.idempotency_key:
        ids.append(idempotent_message_id(tenant, command.idempotency_key))
    if command.template_id:
        ids.append(Template.id_for(tenant, command.template_id))
    return ids


def suppression_reads(
    ledger: Ledger, principal: Principal, command: SendMessage
) -> list[UUID]:
    """The suppression records of the recipients the send will address."""
    tenant = principal.tenant_id
    company = ledger.load(Company, Company.id_for(tenant))
    customer = ledger.load(Customer, Customer.id_for(tenant, command.customer_id))
    if company is None or customer is None:
        return []
    draft = address(company, customer, command)
    return suppression_ids(
        tenant, draft.channel, draft.to + draft.cc + draft.bcc, command.category
    )


def message_ids(command: RecordDeliveryEvent) -> list[UUID]:
    """The message a provider report names, when its id is a well-formed UUID."""
    try:
        return [UUID(command.message_id)]
    except ValueError:
        return []
