"""`ledger worker dispatch` as a real process: killed mid-run, and several at once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from commands.application import Ledger
from commands.delivery import record_delivery_event, retry_message
from commands.directory import upsert_customer
from commands.models import (
    RecordDeliveryEvent,
    RetryMessage,
    SendMessage,
    UpsertCustomer,
)
from commands.send import send_message
from ledger.mail_identity import parse_message_id_header
from ledger.message import Message
from ledger.values import Principal, Status
from tests.integration.smtp_sink import Sink, smtp_server

REPO = Path(__file__).resolve().parents[2]


def worker_env(ledger_url: str, tmp_path: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LEDGER_DATABASE_URL=ledger_url,
        LEDGER_HOME=str(tmp_path / "home"),
        LEDGER_BLOB_DIR=str(tmp_path / "blobs"),
        LEDGER_SMTP_URL=f"smtp://127.0.0.1:{port}?tls=none&pool=2",
        LEDGER_REPLY_DOMAIN="reply.brightside.example",
        LEDGER_REPLY_SECRET="crash test secret",
    )
    return env


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Worker processes a test starts; any still running at the end are killed."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def worker(
    started: list[subprocess.Popen[bytes]], env: dict[str, str], *options: str
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "adapters.workers", "dispatch", *options],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started.append(process)
    return process


def queue_emails(ledger: Ledger, staff: Principal, ada: str, count: int) -> set[str]:
    command = SendMessage(
        customer_id=ada, channel="email", subject="Reminder", body="See you soon."
    )
    return {str(send_message(ledger, staff, command).message_id) for _ in range(count)}


def wait_for(condition: object, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the dispatcher did not get that far in time")
        time.sleep(0.02)


def received_ids(sink: Sink) -> list[str]:
    ids = []
    for header in sink.message_ids:
        parsed = parse_message_id_header(header)
        assert parsed is not None and parsed[1] == 1
        ids.append(str(parsed[0]))
    return ids


def sent_counts(ledger: Ledger, ids: set[str]) -> dict[str, int]:
    counts = {}
    for message_id in ids:
        message = ledger.load(Message, uuid.UUID(message_id))
        assert message is not None and message.status == Status.SENT
        counts[message_id] = sum(
            isinstance(e, Message.Sent) for e in ledger.events.get(message.id)
        )
    return counts


def test_dispatcher_killed_mid_run_loses_nothing_and_records_each_attempt_once(
    ledger: Ledger,
    ledger_url: str,
    staff: Principal,
    ada: str,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    ids = queue_emails(ledger, staff, ada, 80)
    sink = Sink(data_delay=0.05)

    with smtp_server(sink) as port:
        env = worker_env(ledger_url, tmp_path, port)
        first = worker(started, env, "--batch-size", "10", "--concurrency", "2")
        wait_for(lambda: len(sink.received) >= 20)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        delivered_before_kill = len(sink.received)
        restarted = worker(started, env, "--once", "--batch-size", "10")
        output, errors = restarted.communicate(timeout=120)

    assert restarted.returncode == 0, errors.decode()
    assert delivered_before_kill < len(ids)
    assert set(received_ids(sink)) == ids
    assert set(sent_counts(ledger, ids).values()) == {1}
    assert b"sent" in output


BEN = "ben.okafor@example.com"


def outcomes(ledger: Ledger, message_id: str) -> list[Message.Sent | Message.Failed]:
    return [
        e
        for e in ledger.events.get(uuid.UUID(message_id))
        if isinstance(e, Message.Sent | Message.Failed)
        and e.provider_event_id is not None
        and e.provider_event_id.startswith("dispatch-")
    ]


def status_of(ledger: Ledger, message_id: str) -> Status:
    message = ledger.load(Message, uuid.UUID(message_id))
    assert message is not None
    return message.status


def received_at_least(sink: Sink, count: int) -> bool:
    return len(sink.received) >= count


def test_dispatcher_killed_at_random_moments_ends_every_message_once(
    ledger: Ledger,
    ledger_url: str,
    staff: Principal,
    ada: str,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    to_ada = queue_emails(ledger, staff, ada, 40)
    upsert_customer(
        ledger, staff, UpsertCustomer(customer_id="c-ben", name="Ben Okafor", email=BEN)
    )
    to_ben = queue_emails(ledger, staff, "c-ben", 5)
    retried = queue_emails(ledger, staff, ada, 1)
    [again] = retried
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=again, outcome="failed", provider="smtp", reason="greylisted"
        ),
    )
    retry_message(ledger, staff, RetryMessage(message_id=again))
    sink = Sink(data_delay=0.02, rcpt_answers={BEN: ["550 5.1.1 No such user"] * 100})
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    kills = []

    with smtp_server(sink) as port:
        env = worker_env(ledger_url, tmp_path, port)
        for _ in range(3):
            process = worker(started, env, "--batch-size", "8", "--concurrency", "2")
            target = min(len(sink.received) + chance.randint(0, 12), len(to_ada))
            wait_for(partial(received_at_least, sink, target))
            pause = chance.uniform(0, 0.15)
            time.sleep(pause)
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)
            kills.append((len(sink.received), round(pause, 3)))
        last = worker(started, env, "--once", "--batch-size", "8")
        _, errors = last.communicate(timeout=60)

    context = f"seed {seed}, kills (received, pause) {kills}"
    assert last.returncode == 0, errors.decode()
    statuses = {i: status_of(ledger, i) for i in to_ada | to_ben | retried}
    assert {statuses[i] for i in to_ada | retried} == {Status.SENT}, context
    assert {statuses[i] for i in to_ben} == {Status.FAILED}, context
    for message_id in to_ada | to_ben | retried:
        assert len(outcomes(ledger, message_id)) == 1, (message_id, context)
    received = {parse_message_id_header(h) for h in sink.message_ids}
    expected = {(uuid.UUID(i), 1) for i in to_ada} | {(uuid.UUID(again), 2)}
    assert received == expected, context


def test_several_dispatchers_at_once_send_each_message_once(
    ledger: Ledger,
    ledger_url: str,
    staff: Principal,
    ada: str,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    ids = queue_emails(ledger, staff, ada, 40)
    sink = Sink(data_delay=0.005)

    with smtp_server(sink) as port:
        env = worker_env(ledger_url, tmp_path, port)
        workers = [
            worker(started, env, "--once", "--partition", share, "--batch-size", "10")
            for share in ("0/2", "1/2", "0/2", "1/2")
        ]
        results = [w.communicate(timeout=120) for w in workers]

    assert [w.returncode for w in workers] == [0] * 4, [e for _, e in results]
    assert sorted(received_ids(sink)) == sorted(ids)
    assert set(sent_counts(ledger, ids).values()) == {1}
