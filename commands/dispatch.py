"""The dispatch use case: send every queued attempt, and record what happened once.

The dispatcher follows the event log from a tracked position. Each batch of
Queued and Retried notifications names messages to look at; a message needs
sending when its current attempt has no outcome yet. Every try at one attempt
carries the same Message-ID and idempotency key, so a send whose outcome was
lost (a timeout after DATA, a crash before the commit) is repeated as a
duplicate the receiving side can recognise.

The outcomes of a batch and the batch's position commit in one transaction (a
tracking row, as the library's process applications keep). A crash before that
commit leaves the position where it was: the restarted dispatcher meets the same
notifications again and sends only what still has no outcome. Each outcome
carries `provider_event_id` "dispatch-{attempt}", so no attempt is recorded
twice, even if a batch has to be recorded again message by message.

Dispatchers split the messages between them by id (`Partition`); the worker
holds a lock per partition, so two processes never send the same share.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from eventsourcing.persistence import (
    EventStore,
    IntegrityError,
    Notification,
    PersistenceError,
    Tracking,
)
from eventsourcing.utils import get_topic

from commands.application import Decision, Ledger
from commands.ports import (
    EmailProvider,
    OutcomeKind,
    OutgoingAttachment,
    OutgoingEmail,
    OutgoingSms,
    SendOutcome,
    SmsProvider,
    now,
)
from commands.suppressions import check_not_suppressed, suppression_ids
from ledger.addresses import normalise_email
from ledger.errors import InvalidCommand, LedgerError, NotFound, StoreUnavailable
from ledger.mail_identity import REPLY_PREFIX, message_id_header, reply_address
from ledger.message import Message
from ledger.suppression import exempt_from_suppression
from ledger.values import Channel, Status

logger = logging.getLogger(__name__)

DISPATCH_TOPICS = (get_topic(Message.Queued), get_topic(Message.Retried))
PENDING = frozenset({Status.QUEUED, Status.RETRIED})
LEDGER_PROVIDER = "ledger"


@dataclass(frozen=True)
class Partition:
    """The share of messages one dispatcher sends: ids where id % count == index."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InvalidCommand(
                "partition",
                f"Partition {self.index} of {self.count} does not exist; give a "
                "count of at least 1 and an index from 0 to count - 1.",
            )

    @property
    def tracking_name(self) -> str:
        return f"dispatch-{self.index}-of-{self.count}"

    def owns(self, message_id: uuid.UUID) -> bool:
        return message_id.int % self.count == self.index


@dataclass(frozen=True)
class DispatchPolicy:
    """How the dispatcher batches, paces and identifies what it sends."""

    batch_size: int = 200
    concurrency: int = 8
    max_tries: int = 4
    first_backoff: float = 0.5
    reply_domain: str | None = None
    reply_secret: bytes | None = None
    unsubscribe_url: str | None = None


@dataclass
class Job:
    """One attempt of one message that needs sending, and what became of it."""

    message: Message
    attempt: int
    outgoing: OutgoingEmail | OutgoingSms | None = None
    outcome: SendOutcome | None = None
    tries: int = 0


@dataclass
class Batch:
    """The jobs found in a run of notifications ending at `position`."""

    position: int
    notifications: int
    jobs: list[Job] = field(default_factory=list)


@dataclass(frozen=True)
class DispatchReport:
    """What one or more batches did: notifications read, attempts sent or failed."""

    notifications: int = 0
    sent: int = 0
    failed: int = 0

    def __add__(self, other: DispatchReport) -> DispatchReport:
        return DispatchReport(
            self.notifications + other.notifications,
            self.sent + other.sent,
            self.failed + other.failed,
        )


class Dispatcher:
    """Sends the queued attempts of one partition through the channel's provider."""

    def __init__(
        self,
        ledger: Ledger,
        email: EmailProvider,
        sms: SmsProvider,
        policy: DispatchPolicy | None = None,
        partition: Partition | None = None,
    ) -> None:
        self.ledger = ledger
        self.email = email
        self.sms = sms
        self.policy = policy or DispatchPolicy()
        self.partition = partition or Partition()
        # A process recorder on the ledger's own store commits the outcome
        # events and the tracking position in one transaction.
        self.recorder = ledger.factory.process_recorder()
        self.store: EventStore[uuid.UUID] = EventStore(
            mapper=ledger.mapper, recorder=self.recorder
        )
        self._prefetch: asyncio.Task[Batch | None] | None = None
        self._committing: asyncio.Task[None] | None = None
        self._committing_attempts: dict[uuid.UUID, int] = {}

    def position(self) -> int:
        """The last notification this partition has fully dealt with."""
        return self.recorder.max_tracking_id(self.partition.tracking_name) or 0

    async def drain(self) -> DispatchReport:
        """Dispatch batch after batch until the log has nothing new."""
        total = DispatchReport()
        while (report := await self.dispatch_batch()) is not None:
            total += report
        return total

    async def dispatch_batch(self) -> DispatchReport | None:
        """Send the next batch; None when there is nothing new.

        Work overlaps in a pipeline: while a batch is being sent, the next is
        loaded in a thread, and its outcomes are committed in a thread while
        the next is sent. Commits stay in log order; `settle` waits for the
        last one.
        """
        try:
            return await self.next_step()
        except BaseException:
            await self.abandon_prefetch()
            raise

    async def next_step(self) -> DispatchReport | None:
        if self._prefetch is not None:
            batch, self._prefetch = await self._prefetch, None
        else:
            # The position is only current once the last commit is done.
            await self.settle()
            batch = await asyncio.to_thread(self.next_batch)
        if batch is None:
            await self.settle()
            return None

        # The next batch skips the attempts of this batch and of the one still
        # committing: loaded before those commits, they look unsent. It skips
        # the attempt, not the message: one retried meanwhile has a new
        # attempt, which only the next batch will send.
        in_flight = {job.message.id: job.attempt for job in batch.jobs}
        self._prefetch = asyncio.create_task(
            asyncio.to_thread(
                self.next_batch, batch.position, self._committing_attempts | in_flight
            )
        )
        await self.send_all(batch)

        await self.settle()
        self._committing = asyncio.create_task(asyncio.to_thread(self.record, batch))
        self._committing_attempts = in_flight
        sent = sum(
            1
            for job in batch.jobs
            if job.outcome is not None and job.outcome.kind == OutcomeKind.ACCEPTED
        )
        return DispatchReport(batch.notifications, sent, len(batch.jobs) - sent)

    async def send_all(self, batch: Batch) -> None:
        """Send the batch's jobs, `concurrency` at a time.

        A few senders take the jobs in turn from one shared iterator, rather
        than a task per job waiting on a semaphore: the same overlap for less
        event-loop work per email.
        """
        jobs = iter(batch.jobs)

        async def sender() -> None:
            for job in jobs:
                job.outcome = await self.send(job)

        senders = min(self.policy.concurrency, len(batch.jobs))
        await asyncio.gather(*(sender() for _ in range(senders)))

    async def settle(self) -> None:
        """Wait for the commit in progress, if any; its errors surface here."""
        committing, self._committing = self._committing, None
        if committing is not None:
            await committing
        self._committing_attempts = {}

    async def abandon_prefetch(self) -> None:
        """Drop a batch loaded ahead, so the next one is read afresh."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await prefetch

    async def close(self) -> None:
        """Finish the commit in progress and drop any batch loaded ahead."""
        await self.abandon_prefetch()
        await self.settle()

    def next_batch(
        self,
        after: int | None = None,
        in_flight: Mapping[uuid.UUID, int] | None = None,
    ) -> Batch | None:
        """The jobs named by the notifications after `after` (default: position).

        `in_flight` maps messages to the attempt an earlier batch is sending:
        that attempt is left to it, but a later one (a retry recorded
        meanwhile) is a job here, since the position moves past its Retried.
        """
        notifications = self.ledger.recorder.select_notifications(
            self.position() if after is None else after,
            self.policy.batch_size,
            topics=DISPATCH_TOPICS,
            inclusive_of_start=False,
        )
        if not notifications:
            return None
        batch = Batch(notifications[-1].id, len(notifications))
        owned = self.owned_messages(notifications)
        in_flight = in_flight or {}
        messages = [
            message
            for message in self.pending_messages(list(owned), owned)
            if in_flight.get(message.id) != message.current_attempt
        ]
        suppressions = self.ledger.read_history(self.suppression_ids(messages))
        with self.ledger.reading_from(suppressions):
            batch.jobs = [self.prepare(message) for message in messages]
        return batch

    def owned_messages(
        self, notifications: Sequence[Notification]
    ) -> dict[uuid.UUID, Notification | None]:
        """Each message of this partition once, in log order, with its creation.

        The creation is the notification of the message's first event
        (Queued) when the batch holds it, else None: a message named only by
        a Retried was created in an earlier batch.
        """
        found: dict[uuid.UUID, Notification | None] = {}
        for notification in notifications:
            message_id = notification.originator_id
            if type(message_id) is not uuid.UUID:
                message_id = uuid.UUID(str(message_id))
            if self.partition.owns(message_id) and message_id not in found:
                created = notification.originator_version == 1
                found[message_id] = notification if created else None
        return found

    def pending_messages(
        self,
        message_ids: list[uuid.UUID],
        creations: Mapping[uuid.UUID, Notification | None],
    ) -> list[Message]:
        """Those of the messages whose current attempt has no outcome yet.

        The events of the whole batch come in one query; read one message at
        a time, the reads cost more than the sends. A message whose creation
        came with the notifications is decoded from it, and only its later
        events are read, so its largest event (the content) leaves the
        database once.
        """
        history = self.ledger.read_history(
            message_ids,
            known={m: 1 for m in message_ids if creations.get(m) is not None},
        )
        for message_id, events in history.items():
            creation = creations.get(message_id)
            if creation is not None:
                events.insert(0, self.ledger.mapper.to_domain_event(creation))
        pending = []
        with self.ledger.reading_from(history):
            for message_id in message_ids:
                message = self.readable(message_id)
                if message is not None and message.status in PENDING:
                    pending.append(message)
        return pending

    def readable(self, message_id: uuid.UUID) -> Message | None:
        """The message, or None if its events cannot be folded into one.

        Such a message (events no version of the rules would write) cannot be
        read anywhere, nor have an outcome recorded on it; it is passed over
        with an error in the log, so that it does not stop its partition.
        """
        try:
            return self.ledger.load(Message, message_id)
        except (PersistenceError, StoreUnavailable):
            raise
        except Exception:
            logger.exception("message %s cannot be read; it is not sent", message_id)
            return None

    def suppression_ids(self, messages: list[Message]) -> list[uuid.UUID]:
        """The suppression records `prepare` will look up for these messages.

        A message whose fields cannot name its suppressions adds none: `prepare`
        meets the same fault and fails that message with it.
        """
        found: list[uuid.UUID] = []
        for message in messages:
            with suppress(Exception):
                found.extend(self.suppressions_of(message))
        return found

    def suppressions_of(self, message: Message) -> list[uuid.UUID]:
        if exempt_from_suppression(message.sent_by.get("trigger")):
            return []
        return suppression_ids(
            message.tenant_id,
            Channel(message.channel),
            message.to + message.cc + message.bcc,
            message.category,
        )

    def prepare(self, message: Message) -> Job:
        """The job for the message's current attempt.

        Problems found before sending (a suppressed recipient, a missing
        attachment, no recipient, an address that no longer passes the rules)
        become the job's outcome, so the message fails with that reason. So
        does any other fault in putting the message together (an unreadable
        blob, a field of the wrong type), named with its exception: one such
        message must not stop its partition. Store failures are the store's,
        not the message's; they stop the batch, which is read again later.
        """
        job = Job(message, message.current_attempt)
        try:
            if not exempt_from_suppression(message.sent_by.get("trigger")):
                check_not_suppressed(
                    self.ledger,
                    message.tenant_id,
                    Channel(message.channel),
                    message.to + message.cc + message.bcc,
                    message.category,
                )
            job.outgoing = self.compose(message)
        except (PersistenceError, StoreUnavailable):
            raise
        except LedgerError as exc:
            job.outcome = SendOutcome(
                OutcomeKind.PERMANENT, LEDGER_PROVIDER, exc.message
            )
        except Exception as exc:
            logger.exception("message %s could not be prepared", message.id)
            job.outcome = SendOutcome(
                OutcomeKind.PERMANENT,
                LEDGER_PROVIDER,
                "The message could not be prepared for sending "
                f"({type(exc).__name__}: {exc}).",
                detail={"exception": repr(exc)},
            )
        return job

    def compose(self, message: Message) -> OutgoingEmail | OutgoingSms:
        """What the provider gets for the message's current attempt."""
        attempt = message.current_attempt
        if not message.to:
            raise InvalidCommand(
                "to", f"Message {message.id} has no recipient; resend it to someone."
            )
        if message.channel == Channel.SMS:
            return OutgoingSms(
                message_id=message.id,
                attempt=attempt,
                sender=message.sender,
                to=message.to[0],
                body=message.text,
                idempotency_key=f"{message.id}.{attempt}",
            )
        for recipient in message.to + message.cc + message.bcc:
            normalise_email(recipient, "to")
        domain = self.policy.reply_domain or message.sender.rpartition("@")[2]
        return OutgoingEmail(
            message_id=message.id,
            attempt=attempt,
            message_id_header=message_id_header(message.id, attempt, domain),
            sender=message.sender,
            to=tuple(message.to),
            cc=tuple(message.cc),
            bcc=tuple(message.bcc),
            subject=message.subject or "",
            text=message.text,
            html=message.html,
            reply_to=self.reply_to(message, domain),
            list_unsubscribe=self.unsubscribe_links(message, domain),
            automated=message.sent_by.get("user_id") is None,
            attachments=tuple(self.attachment(a) for a in message.attachments),
        )

    def reply_to(self, message: Message, domain: str) -> str | None:
        if self.policy.reply_secret is None:
            return None
        return reply_address(message.id, domain, self.policy.reply_secret)

    def unsubscribe_links(self, message: Message, domain: str) -> tuple[str, ...]:
        """RFC 8058 one-click and mailto links, for marketing messages only."""
        if message.category != "marketing" or self.policy.reply_secret is None:
            return ()
        signed = reply_address(message.id, domain, self.policy.reply_secret)
        token = signed.partition("@")[0].removeprefix(REPLY_PREFIX)
        links = [f"mailto:unsubscribe+{token}@{domain}"]
        if self.policy.unsubscribe_url:
            links.insert(0, f"{self.policy.unsubscribe_url.rstrip('/')}/{token}")
        return tuple(links)

    def attachment(self, metadata: dict[str, Any]) -> OutgoingAttachment:
        try:
            content = self.ledger.blobs.get(metadata["sha256"])
        except KeyError:
            raise NotFound("attachment", metadata["name"]) from None
        except NotFound:
            raise NotFound("attachment", metadata["name"]) from None
        return OutgoingAttachment(metadata["name"], metadata["media_type"], content)

    async def send(self, job: Job) -> SendOutcome:
        """Try the provider until it gives a final answer or the tries run out."""
        if job.outcome is not None or job.outgoing is None:
            return job.outcome or SendOutcome(OutcomeKind.PERMANENT, LEDGER_PROVIDER)
        delay = self.policy.first_backoff
        while True:
            job.tries += 1
            outcome = await self.try_once(job.outgoing)
            if outcome.final or job.tries >= self.policy.max_tries:
                return outcome
            logger.info(
                "message %s attempt %s try %s was %s; trying again in %.2fs",
                job.message.id,
                job.attempt,
                job.tries,
                outcome.kind,
                delay,
            )
            await asyncio.sleep(delay)
            delay *= 2

    async def try_once(self, outgoing: OutgoingEmail | OutgoingSms) -> SendOutcome:
        provider: EmailProvider | SmsProvider = (
            self.email if isinstance(outgoing, OutgoingEmail) else self.sms
        )
        try:
            if isinstance(outgoing, OutgoingEmail):
                outcome = await self.email.send_email(outgoing)
            else:
                outcome = await self.sms.send_sms(outgoing)
        except Exception as exc:
            # A fault inside a provider must fail one message, never the worker;
            # the provider may have sent it, so the outcome counts as unknown.
            logger.exception(
                "provider %s raised on message %s attempt %s",
                provider.name,
                outgoing.message_id,
                outgoing.attempt,
            )
            return SendOutcome(
                OutcomeKind.UNKNOWN,
                provider.name,
                f"The provider raised {type(exc).__name__}: {exc}",
                detail={"exception": repr(exc)},
            )
        if outcome.kind == OutcomeKind.ACCEPTED:
            logger.info(
                "sent message %s attempt %s via %s as %s",
                outgoing.message_id,
                outgoing.attempt,
                outcome.provider,
                outcome.provider_message_id,
            )
        return outcome

    def record(self, batch: Batch) -> None:
        """Commit the batch's outcomes together with its position."""
        tracking = Tracking(self.partition.tracking_name, batch.position)
        for job in batch.jobs:
            record_outcome(job.message, job)
        events = [event for job in batch.jobs for event in job.message.collect_events()]
        try:
            self.store.put(events, tracking=tracking)
        except IntegrityError:
            # Someone else wrote to one of these messages meanwhile (a webhook,
            # a retry): record each outcome on fresh state, then the position.
            logger.info("batch at %s met a concurrent write", batch.position)
            self.record_one_by_one(batch, tracking)

    def record_one_by_one(self, batch: Batch, tracking: Tracking) -> None:
        for job in batch.jobs:
            self.ledger.execute(partial(self.decide_outcome, job))
        try:
            self.recorder.insert_tracking(tracking)
        except IntegrityError:
            logger.warning(
                "position %s of %s was already recorded; is a second dispatcher "
                "running on the same partition without its lock?",
                tracking.notification_id,
                tracking.application_name,
            )

    def decide_outcome(self, job: Job) -> Decision[None]:
        message = self.ledger.load(Message, job.message.id)
        if message is None:
            return Decision(None)
        record_outcome(message, job)
        return Decision(None, [message])


def record_outcome(message: Message, job: Job) -> bool:
    """Append Sent or Failed for the job's attempt, unless one is there already."""
    outcome = job.outcome or SendOutcome(OutcomeKind.UNKNOWN, LEDGER_PROVIDER)
    fields: dict[str, Any] = {
        "attempt": job.attempt,
        "occurred_at": now(),
        "provider": outcome.provider,
        "provider_event_id": f"dispatch-{job.attempt}",
        "detail": outcome.detail,
    }
    if outcome.kind == OutcomeKind.ACCEPTED:
        return message.record_provider_event(
            Message.Sent,
            provider_message_id=outcome.provider_message_id or "",
            accepted=list(outcome.accepted),
            refused=dict(outcome.refused),
            **fields,
        )
    return message.record_provider_event(
        Message.Failed,
        reason=failure_reason(outcome, job.tries),
        permanent=outcome.kind == OutcomeKind.PERMANENT,
        **fields,
    )


def failure_reason(outcome: SendOutcome, tries: int) -> str:
    """The short reason staff read, saying whether a retry may help."""
    reason = outcome.reason or "The provider gave no reason."
    if outcome.kind == OutcomeKind.TRANSIENT:
        return f"{reason} Gave up after {tries} tries; retry the message later."
    if outcome.kind == OutcomeKind.UNKNOWN:
        return (
            f"{reason} It is unknown whether the last of {tries} tries was "
            "delivered; check with the recipient before retrying."
        )
    return reason
