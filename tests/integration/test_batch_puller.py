"""BatchPuller against the real nats-server: batches, waiting, and handing back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.client import JetStreamContext

from adapters.broker.pulling import BatchPuller

NATS_URL = "nats://127.0.0.1:4222"
T = TypeVar("T")


@asynccontextmanager
async def consumer() -> AsyncIterator[tuple[Client, JetStreamContext, str, str]]:
    """A stream and a durable pull consumer of their own, deleted afterwards."""
    client = await nats.connect(NATS_URL)
    jetstream = client.jetstream()
    stream = f"PULLER{uuid.uuid4().hex[:10]}"
    subject = f"puller.{stream}"
    await jetstream.add_stream(name=stream, subjects=[subject])
    await jetstream.add_consumer(
        stream,
        ConsumerConfig(
            durable_name="intake",
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=1000,
        ),
    )
    try:
        yield client, jetstream, stream, subject
    finally:
        await jetstream.delete_stream(stream)
        await client.close()


async def publish(jetstream: JetStreamContext, subject: str, count: int) -> None:
    for number in range(count):
        await jetstream.publish(subject, f"{number}".encode())


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(scenario())


def test_a_fetch_takes_what_is_there_at_once_up_to_the_batch_size() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], float]:
        async with consumer() as (client, jetstream, stream, subject):
            await publish(jetstream, subject, 25)
            puller = BatchPuller(client, stream, "intake", batch_size=10, wait=5.0)
            await puller.start(1000)
            started = time.perf_counter()
            first = await puller.fetch()
            for message in first:
                await message.ack()
            rest: list[bytes] = []
            while len(rest) < 15:
                batch = await puller.fetch()
                rest += [message.data for message in batch]
                for message in batch:
                    await message.ack()
            seconds = time.perf_counter() - started
            await puller.stop()
            return [message.data for message in first], rest, seconds

    first, rest, seconds = run(scenario)

    assert first == [f"{n}".encode() for n in range(10)]
    assert rest == [f"{n}".encode() for n in range(10, 25)]
    assert seconds < 2.0, "the deliveries were there; no fetch should wait for more"


def test_a_fetch_with_nothing_there_returns_the_first_delivery_to_come() -> None:
    async def scenario() -> tuple[list[bytes], float, list[bytes]]:
        async with consumer() as (client, jetstream, stream, subject):
            puller = BatchPuller(client, stream, "intake", batch_size=10, wait=5.0)
            await puller.start(1000)
            fetching = asyncio.create_task(puller.fetch())
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            await publish(jetstream, subject, 1)
            batch = await fetching
            seconds = time.perf_counter() - started
            for message in batch:
                await message.ack()
            quiet = BatchPuller(client, stream, "intake", batch_size=10, wait=0.3)
            await quiet.start(1000)
            nothing = await quiet.fetch()
            await quiet.stop()
            await puller.stop()
            return [message.data for message in batch], seconds, nothing

    batch, seconds, nothing = run(scenario)

    assert batch == [b"0"]
    assert seconds < 1.0
    assert nothing == []


def test_deliveries_not_taken_at_stop_go_straight_to_another_puller() -> None:
    async def scenario() -> tuple[int, list[bytes], float]:
        async with consumer() as (client, jetstream, stream, subject):
            await publish(jetstream, subject, 12)
            leaving = BatchPuller(client, stream, "intake", batch_size=5, wait=5.0)
            await leaving.start(1000)
            taken = await leaving.fetch()
            for message in taken:
                await message.ack()
            # A request for more is still open, and its deliveries arrive.
            await leaving.ask(no_wait=True)
            held = len(leaving.arrived)
            leaving.interrupt()
            await leaving.stop()
            staying = BatchPuller(client, stream, "intake", batch_size=20, wait=5.0)
            await staying.start(1000)
            started = time.perf_counter()
            again: list[bytes] = []
            while len(again) < 7 and time.perf_counter() - started < 10:
                batch = await staying.fetch()
                again += [message.data for message in batch]
                for message in batch:
                    await message.ack()
            seconds = time.perf_counter() - started
            await staying.stop()
            return held, again, seconds

    held, again, seconds = run(scenario)

    assert held == 5
    assert sorted(again, key=int) == [f"{n}".encode() for n in range(5, 12)]
    assert seconds < 2.0, "handed back deliveries should not wait for the ack wait"
