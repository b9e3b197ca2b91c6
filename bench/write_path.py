"""Write-path benchmark: grouped commits against one transaction per command.

Runs full send commands (validated, rendered from a template, one Queued event
each) and provider status reports from 1, 8 and 64 concurrent caller threads,
on PostgreSQL and on SQLite, both ways in the same run, and prints commands/s,
events/s, p50/p99 latency of one call and the ratio grouped / per command. The
64 callers' grouped sends are also run spread over --processes processes, each
with its own committer on the one store, as a deployment scales out.

    .venv/bin/python bench/write_path.py            # the full run
    .venv/bin/python bench/write_path.py --quick    # a short run

It uses a PostgreSQL schema and a SQLite file of its own and removes both.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.store import prepare_store, store_environment
from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.directory import register_company, upsert_customer
from commands.grouping import GroupCommitter
from commands.models import (
    RecordDeliveryEvent,
    RegisterCompany,
    SaveTemplate,
    SendMessage,
    UpsertCustomer,
)
from commands.send import send_message
from commands.templates import save_template
from ledger.values import Channel, Permission, Principal

POSTGRES_URL = os.environ.get(
    "LEDGER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
STAFF = Principal("bench-clinic", "maria.lopez", frozenset(Permission), "Maria Lopez")
CUSTOMERS = 200
CALLERS = (1, 8, 64)


@dataclass
class Run:
    """What one configuration measured."""

    backend: str
    workload: str
    mode: str
    callers: int
    calls: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float

    @property
    def cpu_per_call(self) -> float:
        """Microseconds of this process's CPU per call (the database's not included)."""
        return self.cpu_seconds / self.calls * 1e6

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def drive(
    callers: int, calls: int, call: Callable[[int], Any]
) -> tuple[float, list[float], float]:
    """Make `calls` calls from `callers` threads: wall time, latencies, CPU time."""
    counter = iter(range(calls))
    lock = threading.Lock()
    latencies: list[float] = []
    barrier = threading.Barrier(callers + 1)

    def worker() -> None:
        mine: list[float] = []
        barrier.wait()
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                break
            started = time.perf_counter()
            call(number)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_started
    return time.perf_counter() - started, latencies, cpu


def send_command(number: int) -> SendMessage:
    return SendMessage(
        customer_id=f"c-{number % CUSTOMERS}",
        channel=Channel.EMAIL,
        template_id="reminder",
        merge_values={"when": "Tuesday 9:30"},
        trigger="appointment-reminders",
    )


def prepare(ledger: Ledger) -> None:
    """A company, its customers and one email template."""
    register_company(
        ledger,
        STAFF,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )
    for number in range(CUSTOMERS):
        upsert_customer(
            ledger,
            STAFF,
            UpsertCustomer(
                customer_id=f"c-{number}",
                name=f"Customer Number{number}",
                email=f"customer{number}@example.com",
            ),
        )
    save_template(
        ledger,
        STAFF,
        SaveTemplate(
            template_id="reminder",
            channel=Channel.EMAIL,
            subject="Your visit on {{ when }}",
            body="Hello {{ customer_first_name }}, see you {{ when }}.\n"
            "{{ company_name }}",
        ),
    )


@contextmanager
def bench_ledger(backend: str) -> Iterator[Ledger]:
    """A fresh ledger on `backend`, removed afterwards."""
    if backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="ledger-bench-")
        ledger = Ledger(env=store_environment(f"sqlite:///{directory}/bench.sqlite"))
        try:
            yield ledger
        finally:
            ledger.close()
            shutil.rmtree(directory)
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    # The library's default pool (10, up to 30 connections): the server is
    # shared, and 64 callers queueing for connections is the naive path's lot.
    url = f"{POSTGRES_URL}?schema={schema}"
    prepare_store(url)
    ledger = Ledger(env=store_environment(url))
    try:
        yield ledger
    finally:
        ledger.close()
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def sender_process(
    env: dict[str, str],
    callers: int,
    calls: int,
    start: Any,
    results: Any,
) -> None:
    """One process of a scaled-out run: its own ledger and group committer."""
    ledger = Ledger(env=env)
    try:
        with GroupCommitter(ledger) as committer:

            def call(number: int) -> None:
                committer.send(STAFF, send_command(number))

            drive(8, 100, call)
            start.wait()
            results.put(drive(callers, calls, call))
    finally:
        ledger.close()


def scaled_out(
    ledger: Ledger, backend: str, processes: int, callers: int, calls: int
) -> Run:
    """Grouped sends from `callers` threads spread over `processes` processes.

    Each process has its own committer, as each `ledger serve` or broker
    worker process would; they share the one store.
    """
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    results = context.Queue()
    children = [
        context.Process(
            target=sender_process,
            args=(dict(ledger.env), callers // processes, calls // processes, start),
            kwargs={"results": results},
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    measured = [results.get() for _ in children]
    for child in children:
        child.join()
    return Run(
        backend,
        "send",
        f"grouped x{processes}",
        callers,
        calls // processes * processes,
        max(seconds for seconds, _, _ in measured),
        [latency for _, latencies, _ in measured for latency in latencies],
        sum(cpu for _, _, cpu in measured),
    )


def bench_backend(
    backend: str, calls: int, callers_list: list[int], processes: int
) -> list[Run]:
    runs: list[Run] = []
    with bench_ledger(backend) as ledger, GroupCommitter(ledger) as committer:
        prepare(ledger)
        message_ids: list[str] = []

        def grouped_send(number: int) -> None:
            receipt = committer.send(STAFF, send_command(number))
            message_ids.append(str(receipt.message_id))

        sends: dict[str, Callable[[int], Any]] = {
            "per command": lambda n: send_message(ledger, STAFF, send_command(n)),
            "grouped": grouped_send,
        }
        for call in sends.values():
            # Warm up: compile the template, fill the address caches, open
            # connections, so the first measured run is not the cold one.
            drive(8, 100, call)
        for callers in callers_list:
            for mode, call in sends.items():
                count = calls if callers > 1 or mode == "grouped" else calls // 2
                seconds, latencies, cpu = drive(callers, count, call)
                runs.append(
                    Run(backend, "send", mode, callers, count, seconds, latencies, cpu)
                )
                report(runs[-1])
            if processes > 1 and callers == max(callers_list):
                runs.append(scaled_out(ledger, backend, processes, callers, calls))
                report(runs[-1])

        def report_on(number: int) -> RecordDeliveryEvent:
            return RecordDeliveryEvent(
                message_id=message_ids[number % len(message_ids)],
                outcome="delivered",
                provider="sendgrid",
                provider_event_id=f"ev-{uuid.uuid4().hex}",
            )

        reports: dict[str, Callable[[int], Any]] = {
            "per command": lambda n: record_delivery_event(ledger, STAFF, report_on(n)),
            "grouped": lambda n: committer.record_delivery_event(STAFF, report_on(n)),
        }
        for mode, call in reports.items():
            if 64 not in callers_list:
                break
            seconds, latencies, cpu = drive(64, calls, call)
            runs.append(
                Run(backend, "status", mode, 64, calls, seconds, latencies, cpu)
            )
            report(runs[-1])
    return runs


def processes_of(run: Run) -> str:
    """How many processes a run's grouped sends came from."""
    _, _, count = run.mode.partition(" x")
    return f"{count or 1} process" + ("es" if count else "")


def report(run: Run) -> None:
    print(
        f"  {run.backend:8} {run.workload:6} {run.mode:11} callers={run.callers:<3}"
        f" {run.per_second:8.0f}/s  p50 {run.percentile(0.5):7.2f} ms"
        f"  p99 {run.percentile(0.99):7.2f} ms  cpu {run.cpu_per_call:6.0f} us/call",
        flush=True,
    )


def table(runs: list[Run]) -> None:
    """Grouped beside per-command for each configuration, with the ratio."""
    print()
    print(
        "| backend | workload | callers | grouped in | per command /s | grouped /s "
        "| ratio "
        "| grouped p50 ms | grouped p99 ms | per command p50 ms "
        "| CPU us/call grouped | CPU us/call per command |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        if not run.mode.startswith("grouped"):
            continue
        naive = next(
            r
            for r in runs
            if (r.backend, r.workload, r.callers, r.mode)
            == (run.backend, run.workload, run.callers, "per command")
        )
        print(
            f"| {run.backend} | {run.workload} | {run.callers} "
            f"| {processes_of(run)} | {naive.per_second:,.0f} | {run.per_second:,.0f} "
            f"| {run.per_second / naive.per_second:.1f}x "
            f"| {run.percentile(0.5):.2f} | {run.percentile(0.99):.2f} "
            f"| {naive.percentile(0.5):.2f} "
            f"| {run.cpu_per_call:.0f} | {naive.cpu_per_call:.0f} |"
        )
    print("Every call appends one event, so events/s equals calls/s.")
    lone = [r for r in runs if r.workload == "send" and r.callers == 1]
    for backend in dict.fromkeys(r.backend for r in lone):
        grouped, naive = (
            next(r for r in lone if r.backend == backend and r.mode == mode)
            for mode in ("grouped", "per command")
        )
        extra = statistics.median(grouped.latencies) - statistics.median(
            naive.latencies
        )
        print(f"\nlone caller on {backend}: grouped p50 is {extra * 1000:+.2f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS) of the process: {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--backend",
        choices=["postgres", "sqlite"],
        action="append",
        help="run only this backend (repeatable); both by default",
    )
    parser.add_argument(
        "--callers",
        type=int,
        action="append",
        help="run only this many concurrent callers (repeatable); 1, 8, 64 by default",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="also run the most callers' grouped sends spread over this many "
        "processes (each with its own committer, one store); 1 to skip",
    )
    options = parser.parse_args()
    # Turn a polite kill into an exception, so the schema and file are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("interrupted"))
    calls = 600 if options.quick else 4000
    runs: list[Run] = []
    for backend in options.backend or ["postgres", "sqlite"]:
        runs.extend(
            bench_backend(
                backend, calls, options.callers or list(CALLERS), options.processes
            )
        )
    table(runs)


if __name__ == "__main__":
    main()
