"""Dispatcher throughput through the SMTP provider: pooled vs a connection per message.

Run: .venv/bin/python -m bench.dispatch [--messages 3000] [--pool 4]
     [--database-url postgresql://postgres@127.0.0.1:5432/test]

An aiosmtpd server runs in another process and counts what it receives. Each
way gets a fresh store seeded with the same number of queued emails; the
dispatcher drains it and every Sent is counted in the store afterwards, so a
figure only stands if every message was recorded. The naive way opens a new
SMTP connection for every message, one at a time; the pooled way keeps `--pool`
connections open and that many sends in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from aiosmtpd.controller import Controller
from eventsourcing.utils import get_topic
from psycopg import sql

from adapters.outbox import JsonLinesSmsOutbox
from adapters.smtp import SmtpProvider, SmtpSettings
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.dispatch import Dispatcher, DispatchPolicy
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.ports import OutgoingEmail, SendOutcome
from commands.send import decide_send
from ledger.message import Message
from ledger.values import Channel, Permission, Principal

STAFF = Principal("bench", "maria.lopez", frozenset(Permission), "Maria Lopez")
SEED_CHUNK = 500


class CountingHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_smtp(port: int, ready: Any, stop: Any) -> None:
    """The SMTP server process: accept everything until told to stop."""
    controller = Controller(CountingHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


class ConnectionPerMessage(SmtpProvider):
    """The naive way: connect, send, QUIT, for every message."""

    async def send_email(self, email: OutgoingEmail) -> SendOutcome:
        outcome = await super().send_email(email)
        await self.close()
        self._idle = None
        return outcome


@dataclass(frozen=True)
class Run:
    way: str
    messages: int
    seconds: float
    cpu_seconds: float
    recorded: int

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds


def fresh_store(base: str | None, folder: Path, label: str) -> str:
    if base is None:
        return f"sqlite:///{folder / f'{label}.sqlite'}"
    url = f"{base}?schema=bench_dispatch_{label}_{uuid.uuid4().hex[:8]}"
    prepare_store(url)
    return url


def seed(ledger: Ledger, count: int) -> None:
    """Queue `count` emails, many per transaction so seeding stays quick."""
    register_company(
        ledger,
        STAFF,
        RegisterCompany(name="Bench Dental", email_sender="office@bench.example"),
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(
            customer_id="c-1", name="Ada Fernsby", email="ada@bench.example"
        ),
    )
    command = SendMessage(
        customer_id="c-1",
        channel=Channel.EMAIL,
        subject="Your statement",
        body="Hello Ada,\n\nYour statement is ready.\n",
        html="<p>Hello Ada,</p><p>Your statement is ready.</p>",
    )
    for start in range(0, count, SEED_CHUNK):
        size = min(SEED_CHUNK, count - start)
        decisions = [decide_send(ledger, STAFF, command) for _ in range(size)]
        ledger.commit([a for d in decisions for a in d.aggregates])


def count_sent(ledger: Ledger) -> int:
    topic = get_topic(Message.Sent)
    total, start = 0, 1
    while page := ledger.recorder.select_notifications(start, 1000, topics=[topic]):
        total += len(page)
        start = page[-1].id + 1
    return total


def measure(
    way: str,
    url: str,
    count: int,
    provider: Callable[[], SmtpProvider],
    concurrency: int,
    folder: Path,
) -> Run:
    ledger = Ledger(env=store_environment(url))
    try:
        seed(ledger, count)
        email = provider()
        dispatcher = Dispatcher(
            ledger,
            email,
            JsonLinesSmsOutbox(folder / "sms.jsonl"),
            DispatchPolicy(batch_size=500, concurrency=concurrency),
        )

        async def drain() -> None:
            try:
                await dispatcher.drain()
            finally:
                await email.close()

        started, cpu_started = time.perf_counter(), time.process_time()
        asyncio.run(drain())
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        return Run(way, count, seconds, cpu_seconds, count_sent(ledger))
    finally:
        ledger.close()


def drop_schemas(base: str, urls: list[str]) -> None:
    """Drop the schemas this run created, and no other."""
    with psycopg.connect(base, autocommit=True) as connection:
        for url in urls:
            schema = url.rpartition("?schema=")[2]
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(schema)
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--naive-messages", type=int, default=600)
    parser.add_argument("--pool", type=int, default=4)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    port = free_port()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve_smtp, args=(port, ready, stop))
    server.start()
    ready.wait(30)
    urls: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as temporary:
            folder = Path(temporary)
            urls = [
                fresh_store(args.database_url, folder, label)
                for label in ("naive", "pooled")
            ]
            naive = measure(
                "new connection per message",
                urls[0],
                args.naive_messages,
                lambda: ConnectionPerMessage(
                    SmtpSettings("127.0.0.1", port, tls="none", pool_size=1)
                ),
                1,
                folder,
            )
            pooled = measure(
                f"pooled, {args.pool} connections",
                urls[1],
                args.messages,
                lambda: SmtpProvider(
                    SmtpSettings("127.0.0.1", port, tls="none", pool_size=args.pool)
                ),
                args.pool,
                folder,
            )
    finally:
        stop.set()
        server.join(30)
        if args.database_url:
            drop_schemas(args.database_url, urls)

    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"dispatcher -> SMTP (aiosmtpd in another process), store: {store}")
    for run in (naive, pooled):
        print(
            f"  {run.way:<30} {run.messages:>6} emails {run.seconds:7.2f} s "
            f"{run.per_second:8.0f}/s  ({run.messages / run.cpu_seconds:5.0f} per "
            f"dispatcher CPU-second)  Sent recorded: {run.recorded}/{run.messages}"
        )
    ratio = pooled.per_second / naive.per_second
    print(f"  pooled / naive: {ratio:.1f}x   (targets: >= 900/s and >= 4x)")


if __name__ == "__main__":
    main()
