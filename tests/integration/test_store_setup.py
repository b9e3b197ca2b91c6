"""Several processes may set up one PostgreSQL store at the same moment."""

from __future__ import annotations

import threading

import pytest

from adapters.store import store_environment
from commands.application import Ledger
from tests.conftest import postgres_url

STARTERS = 6


@pytest.mark.postgres
def test_ledgers_and_dispatchers_started_together_all_come_up(postgres_schema):
    env = store_environment(postgres_url(postgres_schema))
    barrier = threading.Barrier(STARTERS)
    failures: list[BaseException] = []
    ledgers: list[Ledger] = []

    def start() -> None:
        barrier.wait()
        try:
            ledger = Ledger(env=env)
            ledgers.append(ledger)
            # What a dispatcher sets up beside the ledger: its tracking table.
            ledger.factory.process_recorder().max_tracking_id("dispatch")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.close()

    assert failures == []
