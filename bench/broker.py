"""Broker intake benchmark: SendMessage commands consumed, recorded and acked.

Publishes the same workload to JetStream once per consumer and drains it,
side by side in one run:

- naive: a faststream push consumer that saves each command in its own
  transaction (one `asyncio.to_thread(send_message)` per delivery);
- worker: the ledger's broker worker (adapters.broker) with its default
  batched pull consumer; deliveries share transactions through the
  GroupCommitter;
- push: the same worker with its faststream push consumer;
- N procs: N `ledger worker broker --no-status` processes bound to the same
  durable consumer, as a deployment scales the intake out (`--processes`).

The clock runs from the consumer's first delivery until every delivery is
acked (a worker process's start-up is not counted). The
workload repeats some commands on purpose (the same Nats-Msg-Id, and the same
idempotency key under a new Nats-Msg-Id); afterwards the ledger must hold
exactly one Queued event per distinct command, or the run fails.

    .venv/bin/python bench/broker.py                 # PostgreSQL, 20,000 commands
    .venv/bin/python bench/broker.py --commands 5000 --store sqlite
    .venv/bin/python bench/broker.py --commands 10000 --processes 1   # no procs run

Each run uses a PostgreSQL schema (or SQLite file) and streams of its own and
removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psycopg
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage
from nats.js.api import ConsumerInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.broker.settings import BrokerSettings
from adapters.broker.worker import BrokerWorker, ensure_streams
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.send import send_message
from ledger.values import Permission, Principal

NATS_URL = os.environ.get("LEDGER_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
TENANT = "bench-clinic"
STAFF = Principal(TENANT, "maria.lopez", frozenset(Permission), "Maria Lopez")
CUSTOMERS = 100
QUEUED_TOPIC = "ledger.message:Message.Queued"


@dataclass
class Run:
    consumer: str
    deliveries: int
    distinct: int
    seconds: float
    queued: int

    @property
    def per_second(self) -> float:
        return self.deliveries / self.seconds


class Store:
    """A fresh event store for one run, removed afterwards."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = f"bench_broker_{uuid.uuid4().hex[:8]}"
        self.folder = Path(tempfile.mkdtemp(prefix="bench-broker-"))
        if kind == "postgres":
            self.url = f"{POSTGRES_URL}?schema={self.name}"
        else:
            self.url = f"sqlite:///{self.folder / 'ledger.sqlite'}"
        prepare_store(self.url)

    def open(self) -> Ledger:
        return Ledger(env=store_environment(self.url))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.kind == "postgres":
            with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


def seed(ledger: Ledger) -> None:
    register_company(
        ledger,
        STAFF,
        RegisterCompany(name="Bench Clinic", email_sender="office@clinic.example"),
    )
    for number in range(CUSTOMERS):
        upsert_customer(
            ledger,
            STAFF,
            UpsertCustomer(
                customer_id=f"c-{number}",
                name=f"Customer {number}",
                email=f"customer{number}@example.com",
            ),
        )


def workload(commands: int) -> list[tuple[str, dict[str, Any]]]:
    """(Nats-Msg-Id, payload) pairs: distinct commands plus deliberate repeats."""
    items = []
    for number in range(commands):
        payload = {
            "customer_id": f"c-{number % CUSTOMERS}",
            "channel": "email",
            "subject": "Your appointment",
            "body": f"See you soon (booking {number}).",
            "idempotency_key": f"booking-{number}",
        }
        items.append((f"cmd-{number}", payload))
    repeats = []
    for number in range(0, commands, 50):
        repeats.append(items[number])  # same Nats-Msg-Id: the stream drops it
        repeats.append((f"again-{number}", items[number][1]))  # same key
    return items + repeats


async def publish_all(settings: BrokerSettings, items: list[Any]) -> int:
    """Publish the workload; returns how many deliveries the stream kept."""
    client = await nats.connect(NATS_URL)
    jetstream = client.jetstream()
    await ensure_streams(jetstream, settings)
    subject = settings.subject(TENANT, "commands", "send")
    for start in range(0, len(items), 500):
        await asyncio.gather(
            *(
                jetstream.publish(
                    subject,
                    json.dumps(payload).encode(),
                    stream=settings.intake_stream,
                    headers={"Nats-Msg-Id": msg_id},
                )
                for msg_id, payload in items[start : start + 500]
            )
        )
    info = await jetstream.stream_info(settings.intake_stream)
    await client.close()
    return info.state.messages


async def first_delivery(settings: BrokerSettings, consumer: str) -> float:
    """The moment the consumer is first seen to have delivered something."""
    await watch_consumer(settings, consumer, lambda info: delivered(info) > 0)
    return time.perf_counter()


async def drained(settings: BrokerSettings, consumer: str) -> None:
    """Return once the consumer has every delivery acked."""
    await watch_consumer(
        settings,
        consumer,
        lambda info: (
            info.num_pending == 0 and info.num_ack_pending == 0 and delivered(info) > 0
        ),
    )


def delivered(info: ConsumerInfo) -> int:
    """The stream sequence of the last message the consumer delivered (0: none)."""
    sequence = info.delivered.stream_seq if info.delivered else None
    return sequence or 0


async def watch_consumer(
    settings: BrokerSettings, consumer: str, reached: Callable[[ConsumerInfo], bool]
) -> None:
    """Poll the consumer's state every 5 ms until `reached` holds."""
    client = await nats.connect(NATS_URL)
    jetstream = client.jetstream()
    try:
        while True:
            try:
                info = await jetstream.consumer_info(settings.intake_stream, consumer)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and reached(info):
                return
            await asyncio.sleep(0.005)
    finally:
        await client.close()


async def delete_streams(settings: BrokerSettings) -> None:
    client = await nats.connect(NATS_URL)
    for name in (settings.intake_stream, settings.outbox_stream):
        try:
            await client.jetstream().delete_stream(name)
        except nats.js.errors.NotFoundError:
            continue
    await client.close()


async def naive_consumer(
    ledger: Ledger, settings: BrokerSettings, url: str
) -> Callable[[], Awaitable[None]]:
    """One transaction per delivery; returns the function that stops it."""
    broker = NatsBroker(NATS_URL, logger=None)
    subject = settings.subject("*", "commands", "send")

    @broker.subscriber(
        subject,
        stream=JStream(settings.intake_stream, declare=False),
        queue=f"{settings.stream_prefix}_send",
        max_workers=settings.batch_size,
        ack_policy=AckPolicy.MANUAL,
    )
    async def take(body: dict[str, Any], message: NatsMessage) -> None:
        command = SendMessage.model_validate(body)
        principal = Principal(TENANT, None, frozenset(Permission), "System")
        await asyncio.to_thread(send_message, ledger, principal, command)
        await message.ack()

    await broker.start()
    return broker.stop


async def worker_consumer(
    ledger: Ledger, settings: BrokerSettings, url: str
) -> Callable[[], Awaitable[None]]:
    worker = BrokerWorker(ledger, settings, publish_status=False)
    await worker.start()
    return worker.stop


async def push_worker_consumer(
    ledger: Ledger, settings: BrokerSettings, url: str
) -> Callable[[], Awaitable[None]]:
    push = dataclasses.replace(settings, consumer="push")
    worker = BrokerWorker(ledger, push, publish_status=False)
    await worker.start()
    return worker.stop


def worker_processes(
    count: int,
) -> Callable[[Ledger, BrokerSettings, str], Awaitable[Callable[[], Awaitable[None]]]]:
    """`count` `ledger worker broker` processes sharing the intake consumer."""

    async def start(
        ledger: Ledger, settings: BrokerSettings, url: str
    ) -> Callable[[], Awaitable[None]]:
        env = {
            **os.environ,
            "LEDGER_DATABASE_URL": url,
            "LEDGER_NATS_URL": NATS_URL,
            "LEDGER_BROKER_ROOT": settings.root,
            "LEDGER_BROKER_STREAM": settings.stream_prefix,
        }
        command = [str(Path(sys.executable).parent / "ledger"), "worker", "broker"]
        workers = [
            subprocess.Popen([*command, "--no-status"], env=env) for _ in range(count)
        ]

        async def stop() -> None:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            for worker in workers:
                await asyncio.to_thread(worker.wait, 30)

        return stop

    return start


async def measure(
    name: str,
    store_kind: str,
    commands: int,
    start_consumer: Callable[
        [Ledger, BrokerSettings, str], Awaitable[Callable[[], Awaitable[None]]]
    ],
    suffix: str = "",
) -> Run:
    token = uuid.uuid4().hex[:8]
    settings = BrokerSettings(
        servers=NATS_URL, root=f"bench{token}", stream_prefix=f"BENCH{token}"
    )
    store = Store(store_kind)
    ledger = store.open()
    try:
        seed(ledger)
        items = workload(commands)
        deliveries = await publish_all(settings, items)
        stop = await start_consumer(ledger, settings, store.url)
        consumer = f"{settings.stream_prefix}_send{suffix}"
        # The clock starts at the first delivery, so a worker process's
        # start-up (imports, connections) is not counted against it.
        started = await first_delivery(settings, consumer)
        await drained(settings, consumer)
        seconds = time.perf_counter() - started
        await stop()
        queued = ledger.recorder.select_notifications(
            None, commands * 2, topics=[QUEUED_TOPIC]
        )
        return Run(name, deliveries, commands, seconds, len(queued))
    finally:
        ledger.close()
        store.remove()
        await delete_streams(settings)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="also run this many `ledger worker broker` processes side by side",
    )
    args = parser.parse_args()

    runs = [
        await measure("naive", args.store, args.commands, naive_consumer),
        await measure("worker", args.store, args.commands, worker_consumer),
        await measure("push", args.store, args.commands, push_worker_consumer, "_push"),
    ]
    if args.processes > 1:
        runs.append(
            await measure(
                f"{args.processes} procs",
                args.store,
                args.commands,
                worker_processes(args.processes),
            )
        )

    print(f"broker intake on {args.store}, {args.commands} distinct SendMessage")
    print(f"{'consumer':<9} {'delivered':>9} {'queued':>7} {'seconds':>8} {'cmd/s':>8}")
    for run in runs:
        print(
            f"{run.consumer:<9} {run.deliveries:>9} {run.queued:>7} "
            f"{run.seconds:>8.2f} {run.per_second:>8.0f}"
        )
    naive = runs[0]
    for run in runs[1:]:
        print(f"{run.consumer} / naive: {run.per_second / naive.per_second:.1f}x")
    for run in runs:
        if run.queued != run.distinct:
            raise SystemExit(
                f"{run.consumer}: {run.queued} Queued events for {run.distinct} "
                "distinct commands; something was lost or duplicated."
            )
    print("every distinct command queued exactly once in every run")


if __name__ == "__main__":
    asyncio.run(main())
