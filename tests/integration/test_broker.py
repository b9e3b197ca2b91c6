"""The broker worker against the real nats-server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import nats
import psycopg
import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from nats.js.client import JetStreamContext

from adapters.blobs import FileBlobStore
from adapters.broker.intake import service_principal
from adapters.broker.settings import BrokerSettings
from adapters.broker.status import StatusPublisher
from adapters.broker.worker import BrokerWorker, ensure_streams
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.automation import MapTrigger, map_trigger
from commands.delivery import get_message, record_delivery_event, retry_message
from commands.directory import register_company, upsert_customer
from commands.models import (
    RecordDeliveryEvent,
    RegisterCompany,
    RetryMessage,
    SaveTemplate,
    SendMessage,
    UpsertCustomer,
)
from commands.send import send_message
from commands.templates import save_template
from ledger.automation import Trigger
from ledger.errors import StoreUnavailable
from ledger.message import Message, idempotent_message_id
from ledger.values import Attribution, Channel, Permission, Principal, Status
from tests.conftest import POSTGRES_URL, RUN_ID, postgres_url

NATS_URL = "nats://127.0.0.1:4222"
T = TypeVar("T")

SEND = {
    "customer_id": "c-ada",
    "channel": "email",
    "subject": "Your visit on Friday",
    "body": "See you at 10:00.",
}


@pytest.fixture
def broker_settings() -> Iterator[BrokerSettings]:
    """Subjects and streams of this test's own, deleted afterwards."""
    token = uuid.uuid4().hex[:10]
    settings = BrokerSettings(
        servers=NATS_URL,
        root=f"t{token}",
        stream_prefix=f"T{token}",
        max_deliveries=3,
        retry_delays=(0.2,),
        status_poll=0.05,
    )
    yield settings
    asyncio.run(delete_streams(settings))


async def delete_streams(settings: BrokerSettings) -> None:
    client = await nats.connect(NATS_URL)
    try:
        for name in (settings.intake_stream, settings.outbox_stream):
            try:
                await client.jetstream().delete_stream(name)
            except nats.js.errors.NotFoundError:
                continue
    finally:
        await client.close()


class Harness:
    """A running worker, and a service publishing to it and listening to it."""

    def __init__(
        self, ledger: Ledger, settings: BrokerSettings, jetstream: JetStreamContext
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.jetstream = jetstream

    async def publish(
        self, tenant: str, suffix: str, body: object, msg_id: str | None = None
    ) -> Any:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        return await self.jetstream.publish(
            self.settings.subject(tenant, suffix),
            data,
            stream=self.settings.intake_stream,
            headers=headers,
        )

    async def read(self, tenant: str, suffix: str, count: int) -> list[dict[str, Any]]:
        """The first `count` messages the ledger published on a subject."""
        subscription = await self.jetstream.pull_subscribe(
            self.settings.subject(tenant, suffix), stream=self.settings.outbox_stream
        )
        received: list[Any] = []
        for _ in range(100):
            if len(received) >= count:
                break
            try:
                received += await subscription.fetch(count - len(received), timeout=0.2)
            except TimeoutError:
                continue
        await subscription.unsubscribe()
        return [json.loads(message.data) for message in received]

    async def published(self, tenant: str, suffix: str) -> int:
        """How many messages the ledger has published on a subject so far."""
        subject = self.settings.subject(tenant, suffix)
        info = await self.jetstream.stream_info(
            self.settings.outbox_stream, subjects_filter=subject
        )
        return (info.state.subjects or {}).get(subject, 0)

    async def consumer_settled(self, kind: str) -> bool:
        """Whether the consumer has nothing pending or awaiting an ack."""
        info = await self.jetstream.consumer_info(
            self.settings.intake_stream, f"{self.settings.stream_prefix}_{kind}"
        )
        return info.num_pending == 0 and info.num_ack_pending == 0


async def eventually(check: Callable[[], Awaitable[T]], what: str) -> T:
    """Wait until `check` gives something truthy; fail naming `what` otherwise."""
    for _ in range(200):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def run_with_worker(
    ledger: Ledger,
    settings: BrokerSettings,
    scenario: Callable[[Harness], Awaitable[T]],
    *,
    publish_status: bool = True,
) -> T:
    async def main() -> T:
        client = await nats.connect(NATS_URL)
        try:
            async with BrokerWorker(ledger, settings, publish_status=publish_status):
                return await scenario(Harness(ledger, settings, client.jetstream()))
        finally:
            await client.close()

    return asyncio.run(main())


def message_for(ledger: Ledger, tenant: str, key: str) -> Callable[[], Awaitable[Any]]:
    async def check() -> Message | None:
        found = await asyncio.to_thread(
            ledger.load, Message, idempotent_message_id(tenant, key)
        )
        return found

    return check


def test_a_send_command_queues_the_message_and_its_status_is_published(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    async def scenario(harness: Harness) -> tuple[Message, list[dict[str, Any]]]:
        await harness.publish("brightside", "commands.send", SEND, msg_id="order-1")
        message = await eventually(
            message_for(ledger, "brightside", "nats:order-1"), "the queued message"
        )
        statuses = await harness.read("brightside", "status.queued", 1)
        await eventually(lambda: harness.consumer_settled("send"), "the ack")
        return message, statuses

    message, statuses = run_with_worker(ledger, broker_settings, scenario)

    assert message.status == Status.QUEUED
    assert message.sent_by == {"user_id": None, "trigger": None}
    assert statuses[0]["message_id"] == str(message.id)
    assert statuses[0]["status"] == "queued"
    assert statuses[0]["idempotency_key"] == "nats:order-1"


def test_a_command_published_twice_queues_one_message(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    command = {**SEND, "idempotency_key": "visit-42"}

    async def scenario(harness: Harness) -> tuple[Any, Any]:
        first = await harness.publish("brightside", "commands.send", command, "a-1")
        again = await harness.publish("brightside", "commands.send", command, "a-1")
        await harness.publish("brightside", "commands.send", command, "a-2")
        await eventually(lambda: harness.consumer_settled("send"), "the acks")
        return first, again

    first, again = run_with_worker(ledger, broker_settings, scenario)

    assert not first.duplicate
    assert again.duplicate
    queued = ledger.recorder.select_notifications(
        None, 100, topics=["ledger.message:Message.Queued"]
    )
    assert len(queued) == 1


def test_a_malformed_command_is_dead_lettered_with_its_reason_and_not_redelivered(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    async def scenario(harness: Harness) -> tuple[list[Any], list[Any], bool]:
        await harness.publish("brightside", "commands.send", b"{not json", "bad-1")
        await harness.publish(
            "brightside", "commands.send", {**SEND, "colour": "red"}, "bad-2"
        )
        dead = await harness.read("brightside", "deadletter", 2)
        results = await harness.read("brightside", "results", 2)
        settled = await eventually(
            lambda: harness.consumer_settled("send"), "the terminations"
        )
        return dead, results, settled

    dead, results, settled = run_with_worker(ledger, broker_settings, scenario)

    reasons = {letter["command_id"]: letter["reason"] for letter in dead}
    assert reasons["bad-1"].startswith("The payload is not JSON")
    assert reasons["bad-2"] == "colour: is not a field of this command; remove it."
    assert dead[0]["deliveries"] == 1
    assert {result["command_id"] for result in results} == {"bad-1", "bad-2"}
    assert all(result["accepted"] is False for result in results)
    assert settled


def test_a_refused_command_tells_the_sender_why_and_records_nothing(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    unknown_customer = {**SEND, "customer_id": "c-nobody"}

    async def scenario(harness: Harness) -> list[dict[str, Any]]:
        await harness.publish("brightside", "commands.send", unknown_customer, "r-1")
        await harness.publish("rival-clinic", "commands.send", SEND, "r-2")
        results = await harness.read("brightside", "results", 1)
        results += await harness.read("rival-clinic", "results", 1)
        return results

    results = run_with_worker(ledger, broker_settings, scenario)

    assert results[0]["reason"] == "No customer 'c-nobody' exists in this company."
    assert results[1]["reason"] == "No company 'rival-clinic' exists in this company."
    assert ledger.load(Message, idempotent_message_id("brightside", "nats:r-1")) is None


def test_a_send_without_any_idempotency_key_is_refused(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    async def scenario(harness: Harness) -> list[dict[str, Any]]:
        await harness.publish("brightside", "commands.send", SEND)
        return await harness.read("brightside", "deadletter", 1)

    dead = run_with_worker(ledger, broker_settings, scenario, publish_status=False)

    assert dead[0]["field"] == "idempotency_key"
    assert "Nats-Msg-Id" in dead[0]["reason"]


class FlakyLedger(Ledger):
    """A ledger whose store refuses the first `failures` commits, as in an outage.

    `commits` keeps when each commit was tried (time.monotonic()).
    """

    name = "ledger"
    failures = 0
    commits: ClassVar[list[float]] = []

    def commit(self, aggregates: Sequence[Aggregate]) -> None:
        FlakyLedger.commits.append(time.monotonic())
        if FlakyLedger.failures > 0:
            FlakyLedger.failures -= 1
            raise StoreUnavailable("The event store is restarting; nothing recorded.")
        super().commit(aggregates)


@pytest.fixture
def flaky_ledger(ledger: Ledger, ledger_url: str) -> Iterator[FlakyLedger]:
    flaky = FlakyLedger(env=store_environment(ledger_url), blobs=ledger.blobs)
    yield flaky
    flaky.close()
    FlakyLedger.failures = 0
    FlakyLedger.commits.clear()


def test_a_command_that_meets_a_store_outage_is_redelivered_later_and_recorded(
    flaky_ledger: FlakyLedger, broker_settings: BrokerSettings, ada: str
) -> None:
    FlakyLedger.failures = 1

    async def scenario(harness: Harness) -> Message:
        await harness.publish("brightside", "commands.send", SEND, "slow-1")
        return await eventually(
            message_for(flaky_ledger, "brightside", "nats:slow-1"), "the message"
        )

    message = run_with_worker(flaky_ledger, broker_settings, scenario)

    assert message.status == Status.QUEUED
    assert FlakyLedger.failures == 0


def test_a_command_that_meets_a_store_outage_is_redelivered_after_the_delay(
    flaky_ledger: FlakyLedger, broker_settings: BrokerSettings, ada: str
) -> None:
    """Negatively acked with a delay, not at once: no hot redelivery loop."""
    delay = 1.0
    settings = dataclasses.replace(broker_settings, retry_delays=(delay,))
    FlakyLedger.failures = 1

    async def scenario(harness: Harness) -> None:
        await harness.publish("brightside", "commands.send", SEND, "later-1")
        await eventually(
            message_for(flaky_ledger, "brightside", "nats:later-1"), "the message"
        )

    run_with_worker(flaky_ledger, settings, scenario, publish_status=False)

    failed, recorded = FlakyLedger.commits
    assert delay * 0.9 <= recorded - failed < delay + 2.0


def test_a_command_that_keeps_meeting_an_outage_is_dead_lettered_in_the_end(
    flaky_ledger: FlakyLedger, broker_settings: BrokerSettings, ada: str
) -> None:
    FlakyLedger.failures = 1_000

    async def scenario(harness: Harness) -> list[dict[str, Any]]:
        await harness.publish("brightside", "commands.send", SEND, "down-1")
        return await harness.read("brightside", "deadletter", 1)

    dead = run_with_worker(flaky_ledger, broker_settings, scenario)

    assert dead[0]["deliveries"] == 3
    assert dead[0]["reason"].startswith("Gave up after 3 deliveries: The event store")


@pytest.fixture
def receipt_template(ledger: Ledger, staff: Principal, company: None) -> str:
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="receipt",
            channel=Channel.EMAIL,
            subject="Payment received",
            body="Thank you, {{ customer_first_name }}: we received {{ amount }}.",
        ),
    )
    return "receipt"


def test_a_trigger_event_sends_its_template_attributed_to_the_user_who_caused_it(
    ledger: Ledger,
    broker_settings: BrokerSettings,
    staff: Principal,
    ada: str,
    receipt_template: str,
) -> None:
    map_trigger(
        ledger,
        staff,
        MapTrigger(trigger=Trigger.PAYMENT_RECORDED, template_id="receipt"),
    )
    event = {
        "event_id": "pay-981",
        "customer_id": ada,
        "user_id": "jo.cashier",
        "merge_values": {"amount": "$120.00"},
    }

    async def scenario(harness: Harness) -> Message:
        await harness.publish(
            "brightside", "triggers.PaymentRecorded", event, "pay-981"
        )
        await harness.publish(
            "brightside", "triggers.PaymentRecorded", event, "pay-981b"
        )
        await eventually(lambda: harness.consumer_settled("triggers"), "the acks")
        key = "trigger:PaymentRecorded:pay-981"
        return await eventually(message_for(ledger, "brightside", key), "the message")

    message = run_with_worker(ledger, broker_settings, scenario)

    assert message.sent_by == {
        "user_id": "jo.cashier",
        "trigger": "PaymentRecorded:pay-981",
    }
    assert message.template_id == "receipt"
    assert message.text == "Thank you, Ada: we received $120.00."
    queued = ledger.recorder.select_notifications(
        None, 100, topics=["ledger.message:Message.Queued"]
    )
    assert len(queued) == 1


STATEMENT_PDF = b"%PDF-1.7\n% statement for Ada\n%%EOF\n"


@dataclasses.dataclass(frozen=True)
class TriggerCase:
    """One trigger, the template a tenant maps it to, and what it should send."""

    trigger: Trigger
    template: SaveTemplate
    merge_values: dict[str, str]
    text: str
    statement: bytes | None = None


TRIGGER_CASES = [
    TriggerCase(
        Trigger.APPOINTMENT_SCHEDULED,
        SaveTemplate(
            template_id="appointment-booked",
            channel=Channel.EMAIL,
            subject="Your appointment",
            body="Hi {{ customer_first_name }}, you are booked for {{ time }}.",
        ),
        {"time": "Friday 10:00"},
        "Hi Ada, you are booked for Friday 10:00.",
    ),
    TriggerCase(
        Trigger.APPOINTMENT_CHANGED,
        SaveTemplate(
            template_id="appointment-moved",
            channel=Channel.SMS,
            body="Hi {{ customer_first_name }}, your visit moved to {{ time }}.",
        ),
        {"time": "Monday 9:30"},
        "Hi Ada, your visit moved to Monday 9:30.",
    ),
    TriggerCase(
        Trigger.TICKET_DUE_SOON,
        SaveTemplate(
            template_id="due-reminder",
            channel=Channel.SMS,
            body="Hi {{ customer_first_name }}, ticket {{ ticket }} is due tomorrow.",
        ),
        {"ticket": "T-118"},
        "Hi Ada, ticket T-118 is due tomorrow.",
    ),
    TriggerCase(
        Trigger.PAYMENT_RECORDED,
        SaveTemplate(
            template_id="receipt",
            channel=Channel.EMAIL,
            subject="Payment received",
            body="Thank you, {{ customer_first_name }}: we received {{ amount }}.",
        ),
        {"amount": "$120.00"},
        "Thank you, Ada: we received $120.00.",
    ),
    TriggerCase(
        Trigger.STATEMENT_EMAILED,
        SaveTemplate(
            template_id="statement",
            channel=Channel.EMAIL,
            subject="Your statement",
            body="Your {{ month }} statement is attached.",
        ),
        {"month": "November"},
        "Your November statement is attached.",
        statement=STATEMENT_PDF,
    ),
    TriggerCase(
        Trigger.WORKFLOW_STEP_REACHED,
        SaveTemplate(
            template_id="workflow-step",
            channel=Channel.EMAIL,
            subject="Next step",
            body="{{ step }} is done, {{ customer_first_name }}; we will call you.",
        ),
        {"step": "Your X-ray review"},
        "Your X-ray review is done, Ada; we will call you.",
    ),
]


class SharedWorker:
    """One worker on a loop of its own, serving every test of a module."""

    def __init__(self, ledger: Ledger, settings: BrokerSettings) -> None:
        self.ledger = ledger
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = self.call(self.start())

    async def start(self) -> contextlib.AsyncExitStack:
        stack = contextlib.AsyncExitStack()
        client = await nats.connect(NATS_URL)
        stack.push_async_callback(client.close)
        worker = BrokerWorker(self.ledger, self.settings, publish_status=False)
        await stack.enter_async_context(worker)
        self.harness = Harness(self.ledger, self.settings, client.jetstream())
        return stack

    def call(self, work: Awaitable[T]) -> T:
        async def run() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=30)

    def close(self) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def trigger_worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorker]:
    """A tenant with every trigger mapped to a template, and a worker taking them."""
    path = tmp_path_factory.mktemp("triggers")
    schema = f"t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        url = f"sqlite:///{path / 'ledger.sqlite'}"
    else:
        url = postgres_url(schema)
        prepare_store(url)
    ledger = Ledger(env=store_environment(url), blobs=FileBlobStore(path / "blobs"))
    staff = Principal("brightside", "maria.lopez", frozenset(Permission), "Maria")
    register_company(
        ledger,
        staff,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id="c-ada",
            name="Ada Fernsby",
            email="ada.fernsby@example.com",
            cell_phone="+12015550111",
        ),
    )
    for case in TRIGGER_CASES:
        save_template(ledger, staff, case.template)
        map_trigger(
            ledger,
            staff,
            MapTrigger(trigger=case.trigger, template_id=case.template.template_id),
        )
    token = uuid.uuid4().hex[:10]
    settings = BrokerSettings(
        servers=NATS_URL, root=f"t{token}", stream_prefix=f"T{token}", batch_size=8
    )
    worker = SharedWorker(ledger, settings)
    yield worker
    worker.close()
    asyncio.run(delete_streams(settings))
    ledger.close()
    if request.param == "postgres":
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize("user", ["jo.cashier", None], ids=["by-a-user", "by-system"])
@pytest.mark.parametrize("case", TRIGGER_CASES, ids=lambda case: case.trigger.value)
def test_every_trigger_queues_its_mapped_template_attributed_and_recorded(
    trigger_worker: SharedWorker, case: TriggerCase, user: str | None
) -> None:
    ledger = trigger_worker.ledger
    event_id = f"{case.trigger.value.lower()}-{user or 'system'}"
    event: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": "c-ada",
        "merge_values": case.merge_values,
    }
    if user is not None:
        event |= {"user_id": user, "user_name": "Jo Cashier"}
    if case.statement is not None:
        content = base64.b64encode(case.statement).decode()
        event["statement"] = {"name": "statement-2026-11.pdf", "content": content}
    key = f"trigger:{case.trigger.value}:{event_id}"

    async def publish_and_wait() -> Message:
        harness = trigger_worker.harness
        subject = f"triggers.{case.trigger.value}"
        await harness.publish("brightside", subject, event, f"{event_id}-delivery")
        return await eventually(message_for(ledger, "brightside", key), "the message")

    message = trigger_worker.call(publish_and_wait())

    assert message.status == Status.QUEUED
    assert message.channel == case.template.channel
    assert (message.template_id, message.text) == (
        case.template.template_id,
        case.text,
    )
    assert message.sent_by == {
        "user_id": user,
        "trigger": f"{case.trigger.value}:{event_id}",
    }
    assert Attribution(**message.sent_by).label == (user or "System")
    if case.statement is None:
        assert message.attachments == []
    else:
        [attachment] = message.attachments
        assert attachment["name"] == "statement-2026-11.pdf"
        assert attachment["media_type"] == "application/pdf"
        assert ledger.blobs.get(attachment["sha256"]) == case.statement


def test_an_unmapped_or_unknown_trigger_is_dead_lettered_saying_how_to_fix_it(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    event = {"event_id": "t-1", "customer_id": ada}

    async def scenario(harness: Harness) -> list[dict[str, Any]]:
        await harness.publish("brightside", "triggers.TicketDueSoon", event, "t-1")
        await harness.publish("brightside", "triggers.InvoiceLost", event, "t-2")
        return await harness.read("brightside", "deadletter", 2)

    dead = run_with_worker(ledger, broker_settings, scenario, publish_status=False)

    reasons = {letter["command_id"]: letter["reason"] for letter in dead}
    assert "ledger automations set TicketDueSoon --template ID" in reasons["t-1"]
    assert reasons["t-2"].startswith("'InvoiceLost' is not a trigger")


def test_a_retry_command_starts_a_new_attempt(
    ledger: Ledger, broker_settings: BrokerSettings, staff: Principal, ada: str
) -> None:
    receipt = send_message(ledger, staff, SendMessage.model_validate(SEND))
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(receipt.message_id), outcome="failed", provider="smtp"
        ),
    )

    async def scenario(harness: Harness) -> list[dict[str, Any]]:
        retry = {"message_id": str(receipt.message_id)}
        await harness.publish("brightside", "commands.retry", retry, "retry-1")
        await eventually(lambda: harness.consumer_settled("retry"), "the ack")
        return await harness.read("brightside", "status.retried", 1)

    statuses = run_with_worker(ledger, broker_settings, scenario)

    assert get_message(ledger, staff, str(receipt.message_id)).status == Status.RETRIED
    assert statuses[0]["attempt"] == 2
    assert statuses[0]["status"] == "retried"


@pytest.fixture
def failed_message(ledger: Ledger, staff: Principal, ada: str) -> str:
    """A message whose first attempt failed, ready to be retried."""
    receipt = send_message(ledger, staff, SendMessage.model_validate(SEND))
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(receipt.message_id), outcome="failed", provider="smtp"
        ),
    )
    return str(receipt.message_id)


def retried_events(ledger: Ledger) -> list[Any]:
    return ledger.recorder.select_notifications(
        None, 100, topics=[get_topic(Message.Retried)]
    )


def test_a_retry_published_again_under_its_key_is_a_repeat_not_a_dead_letter(
    ledger: Ledger,
    broker_settings: BrokerSettings,
    staff: Principal,
    failed_message: str,
) -> None:
    """Two Nats-Msg-Ids (so the duplicate window keeps both), one idempotency key."""
    retry = {"message_id": failed_message, "idempotency_key": "rebook-7"}

    async def scenario(harness: Harness) -> tuple[int, int]:
        await harness.publish("brightside", "commands.retry", retry, "retry-7a")
        await eventually(lambda: harness.consumer_settled("retry"), "the first ack")
        await harness.publish("brightside", "commands.retry", retry, "retry-7b")
        await eventually(lambda: harness.consumer_settled("retry"), "the second ack")
        return (
            await harness.published("brightside", "deadletter"),
            await harness.published("brightside", "results"),
        )

    refused = run_with_worker(ledger, broker_settings, scenario, publish_status=False)

    assert refused == (0, 0)
    [retried] = retried_events(ledger)
    message = get_message(ledger, staff, failed_message)
    assert (message.status, message.current_attempt) == (Status.RETRIED, 2)
    assert message.retry_keys == {"rebook-7": 2}
    assert b"rebook-7" in retried.state


def test_a_retry_redelivered_after_its_commit_finds_the_attempt_it_started(
    ledger: Ledger,
    broker_settings: BrokerSettings,
    staff: Principal,
    failed_message: str,
) -> None:
    """A crash between commit and ack: the retry is recorded under the delivery's
    Nats-Msg-Id, and the same delivery arrives again (as JetStream redelivers it,
    or as the sender republishes it once the duplicate window has passed)."""
    retry = RetryMessage(message_id=failed_message, idempotency_key="nats:retry-9")
    first = retry_message(ledger, service_principal("brightside"), retry)

    async def scenario(harness: Harness) -> int:
        body = {"message_id": failed_message}
        await harness.publish("brightside", "commands.retry", body, "retry-9")
        await eventually(lambda: harness.consumer_settled("retry"), "the ack")
        return await harness.published("brightside", "deadletter")

    dead_letters = run_with_worker(
        ledger, broker_settings, scenario, publish_status=False
    )

    assert first.recorded and first.attempt == 2
    assert dead_letters == 0
    assert len(retried_events(ledger)) == 1
    assert get_message(ledger, staff, failed_message).current_attempt == 2


def test_a_retry_recorded_before_retries_had_keys_is_read_with_none(
    ledger: Ledger, staff: Principal, failed_message: str
) -> None:
    """Its Retried event (version 1) has no idempotency_key."""
    message_id = uuid.UUID(failed_message)
    state = ledger.mapper.transcoder.encode(
        {
            "timestamp": datetime.now(UTC),
            "tenant_id": "brightside",
            "customer_id": "c-ada",
            "occurred_at": datetime.now(UTC),
            "attempt": 2,
            "requested_by": {"user_id": "maria.lopez", "trigger": None},
        }
    )
    version = get_message(ledger, staff, failed_message).version + 1
    ledger.recorder.insert_events(
        [StoredEvent(message_id, version, get_topic(Message.Retried), state)]
    )

    message = get_message(ledger, staff, failed_message)

    assert (message.status, message.current_attempt) == (Status.RETRIED, 2)
    assert message.retry_keys == {}


def test_the_status_publisher_resumes_after_the_last_position_it_recorded(
    ledger: Ledger, broker_settings: BrokerSettings, staff: Principal, ada: str
) -> None:
    first = send_message(ledger, staff, SendMessage.model_validate(SEND))

    async def publish_once() -> int:
        client = await nats.connect(NATS_URL)
        try:
            jetstream = client.jetstream()
            await ensure_streams(jetstream, broker_settings)
            return await StatusPublisher(
                ledger, broker_settings, jetstream
            ).publish_next()
        finally:
            await client.close()

    before = asyncio.run(publish_once())
    second = send_message(ledger, staff, SendMessage.model_validate(SEND))
    after = asyncio.run(publish_once())
    nothing_new = asyncio.run(publish_once())

    async def statuses() -> list[dict[str, Any]]:
        client = await nats.connect(NATS_URL)
        try:
            harness = Harness(ledger, broker_settings, client.jetstream())
            return await harness.read("brightside", "status.queued", 2)
        finally:
            await client.close()

    published = asyncio.run(statuses())

    assert (before, after, nothing_new) == (1, 1, 0)
    assert [s["message_id"] for s in published] == [
        str(first.message_id),
        str(second.message_id),
    ]


def test_the_faststream_push_consumer_takes_and_refuses_commands_the_same_way(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    push = dataclasses.replace(broker_settings, consumer="push")

    async def scenario(harness: Harness) -> tuple[Message, list[dict[str, Any]]]:
        await harness.publish("brightside", "commands.send", SEND, "push-1")
        await harness.publish("brightside", "commands.send", b"[1, 2]", "push-2")
        message = await eventually(
            message_for(ledger, "brightside", "nats:push-1"), "the queued message"
        )
        return message, await harness.read("brightside", "deadletter", 1)

    message, dead = run_with_worker(ledger, push, scenario, publish_status=False)

    assert message.status == Status.QUEUED
    assert dead[0]["command_id"] == "push-2"
    assert dead[0]["reason"] == (
        "The payload is not a JSON object; send the command's fields."
    )


def test_commands_published_while_the_worker_is_down_are_taken_when_it_returns(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    async def first_run(harness: Harness) -> None:
        await harness.publish("brightside", "commands.send", SEND, "before-1")
        await eventually(message_for(ledger, "brightside", "nats:before-1"), "it")

    async def while_down() -> None:
        client = await nats.connect(NATS_URL)
        harness = Harness(ledger, broker_settings, client.jetstream())
        await harness.publish("brightside", "commands.send", SEND, "during-1")
        await client.close()

    async def second_run(harness: Harness) -> Message:
        return await eventually(
            message_for(ledger, "brightside", "nats:during-1"), "the late command"
        )

    run_with_worker(ledger, broker_settings, first_run, publish_status=False)
    asyncio.run(while_down())
    message = run_with_worker(ledger, broker_settings, second_run, publish_status=False)

    assert message.status == Status.QUEUED


def test_two_workers_sharing_the_intake_record_each_command_once(
    ledger: Ledger, broker_settings: BrokerSettings, ada: str
) -> None:
    settings = dataclasses.replace(broker_settings, batch_size=16, pullers=2)
    commands = 120

    async def scenario(harness: Harness) -> None:
        async with BrokerWorker(ledger, settings, publish_status=False):
            await asyncio.gather(
                *(
                    harness.publish(
                        "brightside",
                        "commands.send",
                        {**SEND, "body": f"Booking {number}."},
                        f"shared-{number}",
                    )
                    for number in range(commands)
                )
            )
            await eventually(lambda: harness.consumer_settled("send"), "the acks")

    run_with_worker(ledger, settings, scenario, publish_status=False)

    queued = ledger.recorder.select_notifications(
        None, 1000, topics=["ledger.message:Message.Queued"]
    )
    assert len(queued) == commands


def test_a_worker_raises_the_in_flight_cap_of_an_existing_intake_consumer(
    ledger: Ledger, broker_settings: BrokerSettings
) -> None:
    """The cap is shared by every process on the consumer; an old one would starve."""
    durable = f"{broker_settings.stream_prefix}_send"

    def cap_after_a_run(max_in_flight: int) -> int:
        settings = dataclasses.replace(broker_settings, max_in_flight=max_in_flight)

        async def read_cap(harness: Harness) -> int:
            info = await harness.jetstream.consumer_info(
                settings.intake_stream, durable
            )
            return info.config.max_ack_pending

        return run_with_worker(ledger, settings, read_cap, publish_status=False)

    assert cap_after_a_run(512) == 512
    assert cap_after_a_run(4096) == 4096


def test_a_worker_that_cannot_start_closes_its_connection(
    ledger: Ledger, broker_settings: BrokerSettings
) -> None:
    """Another stream already holding the intake subjects stops the start."""

    async def scenario() -> bool:
        client = await nats.connect(NATS_URL)
        squatter = f"{broker_settings.stream_prefix}_SQUATTER"
        try:
            jetstream = client.jetstream()
            await jetstream.add_stream(
                name=squatter, subjects=broker_settings.intake_subjects
            )
            worker = BrokerWorker(ledger, broker_settings, publish_status=False)
            with pytest.raises(nats.js.errors.BadRequestError):
                async with worker:
                    pass
            assert worker.client is not None
            return worker.client.is_closed
        finally:
            await client.jetstream().delete_stream(squatter)
            await client.close()

    assert asyncio.run(scenario())
