"""Dispatcher throughput through the SMTP provider: pooled vs a connection per message.

Run: .venv/bin/python -m bench.dispatch [--messages 6000] [--naive-messages 600]
     [--pool 8] [--processes 2]
     [--database-url postgresql://postgres@127.0.0.1:5432/test]

One aiosmtpd server runs in another process for the whole run and answers
every command as a real server would. The run prints, in this order:

1. the server's ceiling: a trivial aiosmtplib client (`sendmail` on open
   connections, nothing else) pushing the same email bytes over 4 and 8
   connections, then the SMTP provider alone (`SmtpProvider.send_email`,
   no dispatcher, no store) over `--pool` connections, each with the
   server's own CPU per email. Client and server share the machine's cores,
   so a leaner client raises the ceiling; the provider's line is the most a
   dispatcher using it can reach here;
2. the naive way: one dispatcher, a new SMTP connection for every message,
   one message at a time;
3. ours: `--processes` dispatcher processes on the partitions 0/N … N-1/N
   (as `ledger worker dispatch --partition I/N` runs them), each keeping
   `--pool` connections open with as many sends in flight.

Each dispatcher way gets a fresh store seeded with queued emails; the clock
runs from the moment every dispatcher process is ready until the last has
drained the log, and a figure stands only if every message has exactly one
Sent event in the store afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg
from aiosmtpd.controller import Controller
from eventsourcing.utils import get_topic
from psycopg import sql

from adapters.outbox import JsonLinesSmsOutbox
from adapters.smtp import SmtpProvider, SmtpSettings, compose_email
from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.dispatch import Dispatcher, DispatchPolicy, Partition
from commands.models import RegisterCompany, SendMessage, UpsertCustomer
from commands.ports import OutcomeKind, OutgoingEmail, SendOutcome
from commands.send import decide_send
from ledger.message import Message
from ledger.values import Channel, Permission, Principal

STAFF = Principal("bench", "maria.lopez", frozenset(Permission), "Maria Lopez")
SEED_CHUNK = 500
SENDER = "office@bench.example"
RECIPIENT = "ada@bench.example"
SUBJECT = "Your statement"
TEXT = "Hello Ada,\n\nYour statement is ready.\n"
HTML = "<p>Hello Ada,</p><p>Your statement is ready.</p>"
CEILING_CONNECTIONS = (4, 8)


class AcceptingHandler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_smtp(port: int, ready: Event, stop: Event) -> None:
    """The SMTP server process: accept everything until told to stop."""
    controller = Controller(AcceptingHandler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def cpu_seconds_of(pid: int) -> float | None:
    """User plus system CPU of another process, from /proc (Linux only)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    server_cpu_seconds: float | None
    recorded: int | None = None

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    def line(self) -> str:
        server = (
            f"{1000 * self.server_cpu_seconds / self.messages:5.2f}"
            if self.server_cpu_seconds is not None
            else "  n/a"
        )
        recorded = (
            f"  Sent recorded: {self.recorded}/{self.messages}"
            if self.recorded is not None
            else ""
        )
        return (
            f"  {self.way:<34} {self.messages:>6} emails {self.seconds:6.2f} s "
            f"{self.per_second:6.0f}/s  CPU ms/email: client "
            f"{1000 * self.cpu_seconds / self.messages:4.2f}, server {server}"
            f"{recorded}"
        )


def sample_email() -> OutgoingEmail:
    message_id = uuid.uuid4()
    return OutgoingEmail(
        message_id=message_id,
        attempt=1,
        message_id_header=f"<{message_id}.1@bench.example>",
        sender=SENDER,
        to=(RECIPIENT,),
        subject=SUBJECT,
        text=TEXT,
        html=HTML,
    )


def measure_ceiling(port: int, server_pid: int, connections: int, count: int) -> Run:
    """The server fed by aiosmtplib alone over `connections` open connections."""
    message = compose_email(sample_email())
    each = count // connections

    async def feed(client: aiosmtplib.SMTP) -> None:
        for _ in range(each):
            await client.sendmail(SENDER, [RECIPIENT], message)

    async def run() -> float:
        clients = [
            aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            for _ in range(connections)
        ]
        for client in clients:
            await client.connect()
        started = time.perf_counter()
        await asyncio.gather(*(feed(client) for client in clients))
        seconds = time.perf_counter() - started
        for client in clients:
            await client.quit()
        return seconds

    server_cpu, cpu = cpu_seconds_of(server_pid), time.process_time()
    seconds = asyncio.run(run())
    server_used = cpu_seconds_of(server_pid)
    return Run(
        f"aiosmtplib alone, {connections} connections",
        each * connections,
        seconds,
        time.process_time() - cpu,
        None if server_cpu is None or server_used is None else server_used - server_cpu,
    )


def measure_provider(port: int, server_pid: int, connections: int, count: int) -> Run:
    """The server fed by the SMTP provider alone, `connections` sends in flight."""
    emails = [sample_email() for _ in range(count)]

    async def run() -> float:
        provider = SmtpProvider(
            SmtpSettings("127.0.0.1", port, tls="none", pool_size=connections)
        )
        pending = iter(emails)

        async def feed() -> None:
            for email in pending:
                outcome = await provider.send_email(email)
                if outcome.kind != OutcomeKind.ACCEPTED:
                    raise SystemExit(f"the server refused an email: {outcome.reason}")

        try:
            # Open every connection before the clock starts, as the others do.
            await asyncio.gather(
                *(provider.send_email(sample_email()) for _ in range(connections))
            )
            started = time.perf_counter()
            await asyncio.gather(*(feed() for _ in range(connections)))
            return time.perf_counter() - started
        finally:
            await provider.close()

    server_cpu, cpu = cpu_seconds_of(server_pid), time.process_time()
    seconds = asyncio.run(run())
    server_used = cpu_seconds_of(server_pid)
    return Run(
        f"SMTP provider alone, {connections} connections",
        count,
        seconds,
        time.process_time() - cpu,
        None if server_cpu is None or server_used is None else server_used - server_cpu,
    )


def fresh_store(base: str | None, folder: Path, label: str) -> str:
    if base is None:
        return f"sqlite:///{folder / f'{label}.sqlite'}"
    url = f"{base}?schema=bench_dispatch_{label}_{uuid.uuid4().hex[:8]}"
    prepare_store(url)
    return url


def seed(ledger: Ledger, count: int) -> None:
    """Queue `count` emails, many per transaction so seeding stays quick."""
    register_company(
        ledger, STAFF, RegisterCompany(name="Bench Dental", email_sender=SENDER)
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(customer_id="c-1", name="Ada Fernsby", email=RECIPIENT),
    )
    command = SendMessage(
        customer_id="c-1",
        channel=Channel.EMAIL,
        subject=SUBJECT,
        body=TEXT,
        html=HTML,
    )
    for start in range(0, count, SEED_CHUNK):
        size = min(SEED_CHUNK, count - start)
        decisions = [decide_send(ledger, STAFF, command) for _ in range(size)]
        ledger.commit([a for d in decisions for a in d.aggregates])


def sent_per_message(ledger: Ledger) -> dict[str, int]:
    """How many Sent events each message has."""
    topic = get_topic(Message.Sent)
    counts: dict[str, int] = {}
    start = 1
    while page := ledger.recorder.select_notifications(start, 1000, topics=[topic]):
        for notification in page:
            key = str(notification.originator_id)
            counts[key] = counts.get(key, 0) + 1
        start = page[-1].id + 1
    return counts


@dataclass(frozen=True)
class Dispatch:
    """What one dispatcher process runs: its store, share and connections."""

    url: str
    folder: Path
    partition: Partition
    connections: int
    naive: bool
    port: int


def dispatch_process(job: Dispatch, ready: Event, go: Event, results: Any) -> None:
    """One dispatcher process: get ready, wait for the start, drain its share."""
    ledger = Ledger(env=store_environment(job.url))
    settings = SmtpSettings(
        "127.0.0.1", job.port, tls="none", pool_size=job.connections
    )
    email = ConnectionPerMessage(settings) if job.naive else SmtpProvider(settings)
    dispatcher = Dispatcher(
        ledger,
        email,
        JsonLinesSmsOutbox(job.folder / "sms.jsonl"),
        DispatchPolicy(batch_size=500, concurrency=job.connections),
        job.partition,
    )

    async def drain() -> int:
        try:
            return (await dispatcher.drain()).sent
        finally:
            await email.close()

    ready.set()
    go.wait()
    cpu = time.process_time()
    sent = asyncio.run(drain())
    results.put((sent, time.process_time() - cpu))
    ledger.close()


def measure(
    way: str,
    url: str,
    count: int,
    job: Callable[[Partition], Dispatch],
    processes: int,
    server_pid: int,
) -> Run:
    ledger = Ledger(env=store_environment(url))
    try:
        seed(ledger, count)
        context = multiprocessing.get_context("spawn")
        go, results = context.Event(), context.Queue()
        readies = [context.Event() for _ in range(processes)]
        workers = [
            context.Process(
                target=dispatch_process,
                args=(job(Partition(index, processes)), readies[index], go, results),
            )
            for index in range(processes)
        ]
        for worker in workers:
            worker.start()
        for ready in readies:
            ready.wait(60)
        server_cpu = cpu_seconds_of(server_pid)
        started = time.perf_counter()
        go.set()
        outcomes = collect(results, workers, way)
        seconds = time.perf_counter() - started
        server_used = cpu_seconds_of(server_pid)
        for worker in workers:
            worker.join(60)
        sent = sent_per_message(ledger)
        twice = sum(1 for n in sent.values() if n > 1)
        reported = sum(sent for sent, _ in outcomes)
        if twice or reported != count or len(sent) != count:
            raise SystemExit(
                f"{way}: {len(sent)} of {count} messages recorded Sent, {twice} "
                f"of them twice; the dispatchers reported {reported} sends"
            )
        return Run(
            way,
            count,
            seconds,
            sum(cpu for _, cpu in outcomes),
            None
            if server_cpu is None or server_used is None
            else server_used - server_cpu,
            len(sent),
        )
    finally:
        ledger.close()


def collect(results: Any, workers: list[Any], way: str) -> list[tuple[int, float]]:
    """Each dispatcher process's (sent, CPU seconds); stop if one of them died."""
    outcomes: list[tuple[int, float]] = []
    while len(outcomes) < len(workers):
        try:
            outcomes.append(results.get(timeout=1))
        except queue.Empty:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed:
                raise SystemExit(
                    f"{way}: a dispatcher process failed ({failed})"
                ) from None
    return outcomes


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
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--naive-messages", type=int, default=600)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if min(args.messages, args.naive_messages, args.pool, args.processes) < 1:
        parser.error("--messages, --naive-messages, --pool, --processes must be >= 1")

    port = free_port()
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve_smtp, args=(port, ready, stop))
    server.start()
    ready.wait(30)
    server_pid = server.pid or 0
    urls: list[str] = []
    try:
        ceilings = [
            measure_ceiling(port, server_pid, n, args.messages)
            for n in CEILING_CONNECTIONS
        ]
        ceilings.append(measure_provider(port, server_pid, args.pool, args.messages))
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
                lambda part: Dispatch(urls[0], folder, part, 1, True, port),
                1,
                server_pid,
            )
            pooled = measure(
                f"{args.processes} x {args.pool} pooled connections",
                urls[1],
                args.messages,
                lambda part: Dispatch(urls[1], folder, part, args.pool, False, port),
                args.processes,
                server_pid,
            )
    finally:
        stop.set()
        server.join(30)
        if args.database_url:
            drop_schemas(args.database_url, urls)

    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"SMTP server: aiosmtpd in another process; store: {store}")
    print("the server's ceiling (no dispatcher, no store):")
    for run in ceilings:
        print(run.line())
    print("the dispatcher (processes x connections each):")
    for run in (naive, pooled):
        print(run.line())
    ratio = pooled.per_second / naive.per_second
    print(f"  ours / naive: {ratio:.1f}x   (targets: >= 900/s and >= 4x)")


if __name__ == "__main__":
    main()
