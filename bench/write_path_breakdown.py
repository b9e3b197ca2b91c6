"""Where the grouped write path spends its CPU, phase by phase, per command.

Runs groups of 64 full send commands through the committer's phases on one
thread (read ahead, decide, save) and times each with the thread's CPU clock,
then the committer's own ceiling: 20,000 sends queued at once from one thread,
so no caller threads wait, wake and compete for the interpreter; then times
inserting 28 and 500 events into PostgreSQL the library's way (a composite
array, four round trips) and adapters.fast_store's (one simple query), quiet
and with another thread of the process busy.

    .venv/bin/python bench/write_path_breakdown.py
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eventsourcing.persistence import StoredEvent
from write_path import STAFF, bench_ledger, prepare, send_command

from commands.application import Ledger
from commands.grouping import (
    GroupCommitter,
    Request,
    send_reads,
    suppression_reads,
)
from commands.send import decide_send

GROUP = 64
GROUPS = 20


def send_request(ledger: Ledger, number: int) -> Request[Any]:
    command = send_command(number)
    return Request(
        lambda: decide_send(ledger, STAFF, command),
        [
            lambda _: send_reads(STAFF, command),
            lambda loaded: suppression_reads(loaded, STAFF, command),
        ],
        loads_read_only=True,
    )


def cpu(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.thread_time()
    result = action()
    return time.thread_time() - started, result


def phases(backend: str) -> None:
    """CPU per command of each phase of a grouped send."""
    totals = {"read ahead": 0.0, "decide": 0.0, "save": 0.0}
    with bench_ledger(backend) as ledger:
        prepare(ledger)
        committer = GroupCommitter(ledger)
        committer.close()
        for round_number in range(GROUPS + 2):
            group = [send_request(ledger, n) for n in range(GROUP)]
            read, _ = cpu(lambda g=group: committer._read_ahead(g))
            both, (decided, _) = cpu(lambda g=group: committer._decide_all(g))
            save, _ = cpu(lambda d=decided: committer._save(d))
            if round_number >= 2:
                totals["read ahead"] += read
                totals["decide"] += both - read
                totals["save"] += save
    commands = GROUP * GROUPS
    line = "  ".join(
        f"{name} {seconds / commands * 1e6:5.0f} us" for name, seconds in totals.items()
    )
    total = sum(totals.values()) / commands * 1e6
    print(f"{backend:8} per command: {line}  total {total:5.0f} us")


def ceiling(backend: str, count: int = 20_000) -> None:
    """Sends/s of the committer alone: every send queued at once, then awaited."""
    with bench_ledger(backend) as ledger, GroupCommitter(ledger) as committer:
        prepare(ledger)
        wait([committer.queue_send(STAFF, send_command(n)) for n in range(500)])
        commands = [send_command(n) for n in range(count)]
        started, cpu_started = time.perf_counter(), time.process_time()
        wait([committer.queue_send(STAFF, command) for command in commands])
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    print(
        f"{backend:8} committer alone: {count / seconds:,.0f} sends/s, "
        f"{cpu / count * 1e6:.0f} us of process CPU per send, no caller threads"
    )


def inserts() -> None:
    """The library's batch insert beside ours, quiet and beside a busy thread.

    The busy thread stands for the committer deciding the next group: each
    round trip of an insert then waits to win the interpreter lock back.
    """
    state = b'{"text":"' + b"x" * 400 + b'"}'
    with bench_ledger("postgres") as ours:
        env = dict(ours.env)
        env.pop("APPLICATION_RECORDER_TOPIC", None)
        library = Ledger(env=env)
        try:
            for busy in (False, True):
                with busy_thread(busy):
                    for size in (28, 500):
                        for name, ledger in (("library", library), ("ours", ours)):
                            wall, spent = insert_timing(ledger, size, state)
                            print(
                                f"insert {size:3} events, {name:8}"
                                f"{', busy thread' if busy else '':13}: "
                                f"{wall:6.2f} ms wall, {spent:5.2f} ms CPU"
                            )
        finally:
            library.close()


def insert_timing(ledger: Ledger, size: int, state: bytes) -> tuple[float, float]:
    """The best of several inserts of `size` events: ms of wall time and of CPU."""
    runs = []
    for _ in range(8):
        batch = [
            StoredEvent(uuid.uuid4(), 1, "bench:Event", state) for _ in range(size)
        ]
        wall = time.perf_counter()
        spent, _ = cpu(lambda b=batch: ledger.recorder.insert_events(b))
        runs.append((time.perf_counter() - wall, spent))
    runs.sort()
    wall, spent = runs[len(runs) // 2]
    return wall * 1000, spent * 1000


@contextmanager
def busy_thread(busy: bool) -> Iterator[None]:
    """A thread running pure Python for as long as the block runs, if asked."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin)
    if busy:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if busy:
            thread.join()


if __name__ == "__main__":
    phases("postgres")
    phases("sqlite")
    ceiling("postgres")
    ceiling("sqlite")
    inserts()
