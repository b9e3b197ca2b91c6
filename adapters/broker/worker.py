"""The broker worker: consumes commands and trigger events from JetStream.

Delivery is at-least-once with dedupe. The intake stream drops a repeated
Nats-Msg-Id inside its duplicate window, and every command carries an
idempotency key (its own, the Nats-Msg-Id, or one derived from the trigger
event's id), so a delivery redone after a crash finds the message it queued.

Deliveries are handled a batch at a time. Their sends and trigger
events go to a GroupCommitter, which commits whatever is waiting in one shared
transaction; then every delivery is settled on its own: acked once its command
is durable, negatively acked with a delay on a transient fault (the event
store is down), or, when refused or malformed, answered on the results
subject, copied to the dead-letter subject with the reason and terminated, so
that a poison message never loops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable
from concurrent.futures import Future, wait
from typing import Annotated, Any

import nats
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy as JetStreamAck
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from adapters.broker.intake import (
    COMMAND_ID_HEADER,
    MESSAGE_ID_HEADER,
    Delivery,
    Fate,
    Verdict,
    Work,
    dead_letter,
    read_delivery,
    refusal,
    verdict_of,
)
from adapters.broker.messages import CommandRefused, DeadLetter, StatusChanged
from adapters.broker.pulling import BatchPuller
from adapters.broker.settings import BrokerSettings
from adapters.broker.status import StatusPublisher, wait_or_stop
from commands.application import Ledger
from commands.automation import (
    TriggerEvent,
    automated_message_reads,
    decide_automated_message,
)
from commands.delivery import retry_message
from commands.grouping import GroupCommitter
from commands.models import RetryMessage, SendMessage
from ledger.errors import LedgerError

logger = logging.getLogger(__name__)

INTAKE_CONTEXT = "ledger_intake"


class Intake:
    """Turns each delivery into a ledger command and settles it by the outcome."""

    def __init__(
        self,
        ledger: Ledger,
        settings: BrokerSettings,
        committer: GroupCommitter,
        jetstream: JetStreamContext,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.committer = committer
        self.jetstream = jetstream

    async def take(self, message: Msg) -> None:
        """Record one delivery's command, then ack, delay or dead-letter it."""
        await self.take_batch([message])

    async def take_batch(self, messages: list[Msg]) -> None:
        """Record a fetched batch's commands together, then settle each delivery.

        Every command of the batch is handed to the committer at once and
        their outcomes are awaited together: one hand-over from the
        committer's thread per batch rather than one per delivery.
        """
        deliveries = [delivery_of(message) for message in messages]
        outcomes = await self.carry_out(deliveries)
        # One after another: an ack only queues a few bytes for the client's
        # flusher, so a task per delivery would cost more than it overlaps.
        for message, delivery, outcome in zip(
            messages, deliveries, outcomes, strict=True
        ):
            verdict = verdict_of(outcome)
            await self.settle(message, delivery, verdict)
            logger.debug(
                "%s on %s: %s", delivery.command_id, delivery.subject, verdict.fate
            )

    async def carry_out(self, deliveries: list[Delivery]) -> list[object]:
        """Run each delivery's command; returns what each returned or raised."""
        started: list[Future[Any] | Awaitable[Any] | Exception] = []
        for delivery in deliveries:
            try:
                started.append(self.start(read_delivery(self.settings, delivery)))
            except Exception as exc:
                started.append(exc)
        committing = [item for item in started if isinstance(item, Future)]
        if committing:
            await asyncio.to_thread(wait_for_all, committing)
        outcomes: list[object] = []
        for delivery, item in zip(deliveries, started, strict=True):
            outcome: object
            if isinstance(item, Future):
                outcome = item.exception() or item.result()
            elif isinstance(item, Exception):
                outcome = item
            else:
                try:
                    outcome = await item
                except Exception as exc:
                    outcome = exc
            if isinstance(outcome, Exception) and not isinstance(outcome, LedgerError):
                logger.error("command on %s failed", delivery.subject, exc_info=outcome)
            outcomes.append(outcome)
        return outcomes

    def start(self, work: Work) -> Future[Any] | Awaitable[Any]:
        """Hand a command to the committer (or, for a retry, to a thread)."""
        command = work.command
        if isinstance(command, SendMessage):
            return self.committer.queue_send(work.principal, command)
        if isinstance(command, TriggerEvent):
            return self.committer.enqueue(
                lambda: decide_automated_message(self.ledger, work.principal, command),
                automated_message_reads(work.principal, command),
            )
        # Retries are rare and touch one message each: they commit on their own.
        retry: RetryMessage = command
        return asyncio.to_thread(retry_message, self.ledger, work.principal, retry)

    async def settle(self, message: Msg, delivery: Delivery, verdict: Verdict) -> None:
        """Ack, delay or dead-letter one delivery as its verdict says."""
        if verdict.fate == Fate.ACCEPTED:
            await message.ack()
            return
        if (
            verdict.fate == Fate.DELAYED
            and delivery.deliveries < self.settings.max_deliveries
        ):
            delay = self.settings.retry_delay(delivery.deliveries)
            logger.info(
                "delaying %s by %ss after delivery %s: %s",
                delivery.command_id,
                delay,
                delivery.deliveries,
                verdict.reason,
            )
            await message.nak(delay=delay)
            return
        if verdict.fate == Fate.DELAYED:
            verdict = Verdict(
                Fate.REFUSED,
                f"Gave up after {delivery.deliveries} deliveries: {verdict.reason}",
            )
        try:
            await self.refuse(delivery, verdict)
        except (NatsError, TimeoutError) as exc:
            logger.warning(
                "could not dead-letter %s (%s); it will be redelivered",
                delivery.command_id,
                exc,
            )
            await message.nak(delay=self.settings.retry_delay(delivery.deliveries))
            return
        await message.term()

    async def refuse(self, delivery: Delivery, verdict: Verdict) -> None:
        """Tell the sender why, and keep the delivery on the dead-letter subject."""
        tenant_id = self.settings.tenant_of(delivery.subject)
        await self.publish(
            self.settings.subject(tenant_id, "results"),
            refusal(delivery, verdict),
            f"result:{delivery.sequence}",
            {COMMAND_ID_HEADER: delivery.command_id},
        )
        await self.publish(
            self.settings.subject(tenant_id, "deadletter"),
            dead_letter(delivery, verdict),
            f"deadletter:{delivery.sequence}",
            {COMMAND_ID_HEADER: delivery.command_id},
        )
        logger.info(
            "dead-lettered %s from %s: %s",
            delivery.command_id,
            delivery.subject,
            verdict.reason,
        )

    async def publish(
        self,
        subject: str,
        body: BaseModel,
        message_id: str,
        headers: dict[str, str],
    ) -> None:
        await self.jetstream.publish(
            subject,
            body.model_dump_json().encode(),
            stream=self.settings.outbox_stream,
            headers={MESSAGE_ID_HEADER: message_id, **headers},
        )


def wait_for_all(futures: list[Future[Any]]) -> None:
    wait(futures)


def delivery_of(message: Msg) -> Delivery:
    metadata = message.metadata
    return Delivery(
        subject=message.subject,
        data=message.data,
        headers=dict(message.headers or {}),
        deliveries=metadata.num_delivered or 1,
        sequence=metadata.sequence.stream if metadata.sequence else 0,
    )


async def ensure_streams(jetstream: JetStreamContext, settings: BrokerSettings) -> None:
    """Create the intake and outbox streams, or bring their settings up to date."""
    for name, subjects in (
        (settings.intake_stream, settings.intake_subjects),
        (settings.outbox_stream, settings.outbox_subjects),
    ):
        config = StreamConfig(
            name=name,
            subjects=subjects,
            duplicate_window=settings.duplicate_window,
        )
        try:
            await jetstream.stream_info(name)
        except NotFoundError:
            await jetstream.add_stream(config)
        else:
            await jetstream.update_stream(config)


async def ensure_consumer(
    jetstream: JetStreamContext, settings: BrokerSettings, durable: str, suffix: str
) -> None:
    """Create the durable pull consumer of one kind of delivery, or update it.

    Its `max_ack_pending` caps the deliveries handed out and not yet
    acknowledged across every worker process pulling from it, so a cap left
    from an older, smaller setting would starve added processes; a worker
    starting brings the cap (and `ack_wait`) up to its own settings. Workers
    started together may race to create it; JetStream accepts the same
    definition twice.
    """
    try:
        info = await jetstream.consumer_info(settings.intake_stream, durable)
    except NotFoundError:
        await jetstream.add_consumer(
            settings.intake_stream,
            config=ConsumerConfig(
                durable_name=durable,
                filter_subject=settings.subject("*", suffix),
                ack_policy=JetStreamAck.EXPLICIT,
                ack_wait=settings.ack_wait,
                max_ack_pending=settings.max_in_flight,
            ),
        )
        return
    config = info.config
    if (config.max_ack_pending, config.ack_wait) == (
        settings.max_in_flight,
        settings.ack_wait,
    ):
        return
    config.max_ack_pending = settings.max_in_flight
    config.ack_wait = settings.ack_wait
    await jetstream.add_consumer(settings.intake_stream, config=config)
    logger.info(
        "intake consumer %s now allows %s deliveries in flight",
        durable,
        settings.max_in_flight,
    )


IntakeContext = Annotated[Intake, Context(INTAKE_CONTEXT)]


def build_broker(
    settings: BrokerSettings, *, for_documentation: bool = False
) -> NatsBroker:
    """The faststream broker with one durable push consumer per kind of delivery.

    The handlers' payload annotations document the wire format (they make the
    AsyncAPI document). At run time faststream does not validate them: each
    delivery is validated by the intake, so that a malformed one is answered
    and dead-lettered instead of failing before any handler sees it.

    For the document, the subscribers describe the consumer `settings` pick:
    with "pull" (the default) they name no queue group, since the worker then
    takes deliveries through its own durable pull consumers (`BrokerWorker`),
    which AsyncAPI's NATS bindings have no field for; the descriptions name
    them instead.
    """
    if for_documentation:
        broker = NatsBroker(settings.servers, logger=None)
    else:
        broker = NatsBroker(settings.servers, logger=None, serializer=None)
    stream = JStream(settings.intake_stream, declare=False)
    wildcard = settings.subject("*")
    push = settings.consumer == "push"

    def consumer() -> ConsumerConfig:
        # A fresh config each: faststream writes the consumer's name into it.
        return ConsumerConfig(
            ack_wait=settings.ack_wait, max_ack_pending=settings.max_in_flight
        )

    def queue(kind: str) -> str:
        # No queue group (""), for the document of the pull consumers.
        return f"{settings.stream_prefix}_{kind}_push" if push else ""

    def taken_by(kind: str) -> str:
        if push:
            return f" Taken by the queue-group push consumer {queue(kind)}."
        return (
            f" Taken in batches of up to {settings.batch_size} by the durable pull "
            f"consumer {settings.stream_prefix}_{kind} of stream "
            f"{settings.intake_stream}."
        )

    @broker.subscriber(
        f"{wildcard}.commands.send",
        stream=stream,
        queue=queue("send"),
        config=consumer(),
        max_workers=settings.batch_size,
        ack_policy=AckPolicy.MANUAL,
        title="SendMessage",
        description="Queue an email or SMS to a customer. Refusals go to "
        "<root>.<tenant>.results and <root>.<tenant>.deadletter." + taken_by("send"),
    )
    async def take_send(
        command: SendMessage, message: NatsMessage, intake: IntakeContext
    ) -> None:
        await intake.take(message.raw_message)

    @broker.subscriber(
        f"{wildcard}.commands.retry",
        stream=stream,
        queue=queue("retry"),
        config=consumer(),
        max_workers=settings.batch_size,
        ack_policy=AckPolicy.MANUAL,
        title="RetryMessage",
        description="Start a new attempt at a failed or bounced message, once per "
        "idempotency_key (default: nats:<Nats-Msg-Id>)." + taken_by("retry"),
    )
    async def take_retry(
        command: RetryMessage, message: NatsMessage, intake: IntakeContext
    ) -> None:
        await intake.take(message.raw_message)

    @broker.subscriber(
        f"{wildcard}.triggers.*",
        stream=stream,
        queue=queue("triggers"),
        config=consumer(),
        max_workers=settings.batch_size,
        ack_policy=AckPolicy.MANUAL,
        title="TriggerEvent",
        description="An event of another service; the last subject token names "
        "the trigger (AppointmentScheduled, AppointmentChanged, TicketDueSoon, "
        "PaymentRecorded, StatementEmailed, WorkflowStepReached)."
        + taken_by("triggers"),
    )
    async def take_trigger(
        event: TriggerEvent, message: NatsMessage, intake: IntakeContext
    ) -> None:
        await intake.take(message.raw_message)

    declare_outbox(broker, settings)
    return broker


def declare_outbox(broker: NatsBroker, settings: BrokerSettings) -> None:
    """Describe what the worker publishes (through nats-py) in the AsyncAPI document."""
    tenant = settings.subject("{tenant}")
    broker.publisher(
        f"{tenant}.status.{{event}}",
        title="StatusChanged",
        description="A message event (queued, sent, delivered, opened, bounced, "
        "failed, retried, received), published from the event log in log order. "
        "Nats-Msg-Id is '<message id>/<version>'.",
        schema=StatusChanged,
    )
    broker.publisher(
        f"{tenant}.results",
        title="CommandRefused",
        description="Why a command or trigger event was refused; the header "
        "Ledger-Command-Id repeats the sender's Nats-Msg-Id.",
        schema=CommandRefused,
    )
    broker.publisher(
        f"{tenant}.deadletter",
        title="DeadLetter",
        description="A delivery the ledger gave up on, with the reason.",
        schema=DeadLetter,
    )


INTAKE_KINDS = (
    ("send", "commands.send"),
    ("retry", "commands.retry"),
    ("triggers", "triggers.*"),
)


class BrokerWorker:
    """The intake consumers and the status publisher, started and stopped together.

    `settings.consumer` picks how deliveries are taken: "pull" (the default)
    fetches batches through durable pull consumers with nats-py; "push" runs the
    faststream subscribers of `build_broker`, one delivery per handler call,
    which costs about three times as much per delivery (docs/performance.md).
    """

    def __init__(
        self, ledger: Ledger, settings: BrokerSettings, *, publish_status: bool = True
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.publish_status = publish_status
        self.broker = build_broker(settings) if settings.consumer == "push" else None
        self.client: Client | None = None
        self.committer: GroupCommitter | None = None
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.pullers: list[BatchPuller] = []

    async def start(self) -> None:
        """Declare the streams, then start consuming and publishing."""
        jetstream = await self.connect()
        await ensure_streams(jetstream, self.settings)
        self.committer = GroupCommitter(self.ledger, max_group=self.settings.batch_size)
        intake = Intake(self.ledger, self.settings, self.committer, jetstream)
        if self.broker is not None:
            self.broker.context.set_global(INTAKE_CONTEXT, intake)
            await self.broker.start()
        else:
            for kind, suffix in INTAKE_KINDS:
                durable = f"{self.settings.stream_prefix}_{kind}"
                await ensure_consumer(jetstream, self.settings, durable, suffix)
                # Several pullers bound to one durable consumer: while one
                # batch waits for its transaction, the next is fetched and
                # decided, so the database and the decisions overlap.
                for _ in range(self.settings.pullers):
                    assert self.client is not None
                    puller = BatchPuller(
                        self.client,
                        self.settings.intake_stream,
                        durable,
                        self.settings.batch_size,
                        self.settings.pull_wait,
                    )
                    await puller.start(self.settings.max_in_flight)
                    self.pullers.append(puller)
                    self.tasks.append(asyncio.create_task(self.pull(intake, puller)))
        if self.publish_status:
            publisher = StatusPublisher(self.ledger, self.settings, jetstream)
            self.tasks.append(asyncio.create_task(publisher.run(self.stopping)))
        logger.info(
            "broker worker consuming %s on %s (%s)",
            self.settings.intake_stream,
            self.settings.servers,
            self.settings.consumer,
        )

    async def connect(self) -> JetStreamContext:
        if self.broker is not None:
            await self.broker.connect()
            return self.broker.connection.jetstream()
        self.client = await nats.connect(self.settings.servers)
        return self.client.jetstream()

    async def pull(self, intake: Intake, puller: BatchPuller) -> None:
        """Fetch and take batches until stopped; a batch is settled before the next."""
        while not self.stopping.is_set():
            try:
                messages = await puller.fetch()
            except NatsError as exc:
                logger.warning("fetching deliveries failed: %s", exc)
                await wait_or_stop(self.stopping, self.settings.retry_delays[0])
                continue
            if messages:
                await intake.take_batch(messages)

    async def stop(self) -> None:
        """Finish the batches in hand, stop publishing, and let go of the ledger."""
        self.stopping.set()
        for puller in self.pullers:
            puller.interrupt()
        await asyncio.gather(*self.tasks)
        for puller in self.pullers:
            await puller.stop()
        if self.broker is not None:
            await self.broker.stop()
        if self.client is not None:
            await self.client.close()
        if self.committer is not None:
            await asyncio.to_thread(self.committer.close)

    async def __aenter__(self) -> BrokerWorker:
        try:
            await self.start()
        except BaseException:
            # Let go of what started before the failure (the connection, say).
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(
    ledger: Ledger, settings: BrokerSettings, *, publish_status: bool = True
) -> None:
    """Run the worker until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    async with BrokerWorker(ledger, settings, publish_status=publish_status):
        await stop.wait()
    logger.info("broker worker stopped")
