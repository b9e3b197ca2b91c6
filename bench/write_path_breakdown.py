"""Where the grouped write path spends its CPU, phase by phase, per command.

Runs groups of 64 full send commands through the committer's phases on one
thread (read ahead, decide, save) and times each with the thread's CPU clock,
then the committer's own ceiling: 20,000 sends queued at once from one thread,
so no caller threads wait, wake and compete for the interpreter; then times
the two ways of inserting a batch of 500 events into PostgreSQL: the
library's composite-array insert and adapters.fast_store's binary arrays.

    .venv/bin/python bench/write_path_breakdown.py
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import wait
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
    """The library's batch insert beside the binary-array insert, 500 events."""
    state = b'{"text":"' + b"x" * 400 + b'"}'
    with bench_ledger("postgres") as fast:
        env = dict(fast.env)
        env.pop("APPLICATION_RECORDER_TOPIC", None)
        library = Ledger(env=env)
        try:
            timings: dict[str, list[tuple[float, float]]] = {
                "library": [],
                "arrays": [],
            }
            for _ in range(6):
                for name, ledger in (("library", library), ("arrays", fast)):
                    batch = [
                        StoredEvent(uuid.uuid4(), 1, "bench:Event", state)
                        for _ in range(500)
                    ]
                    wall = time.perf_counter()
                    spent, _ = cpu(
                        lambda b=batch, r=ledger.recorder: r.insert_events(b)
                    )
                    timings[name].append((time.perf_counter() - wall, spent))
        finally:
            library.close()
    for name, runs in timings.items():
        wall = min(run[0] for run in runs) * 1000
        spent = min(run[1] for run in runs) * 1000
        print(f"insert 500 events, {name:7}: {wall:6.1f} ms wall, {spent:5.1f} ms CPU")


if __name__ == "__main__":
    phases("postgres")
    phases("sqlite")
    ceiling("postgres")
    ceiling("sqlite")
    inserts()
