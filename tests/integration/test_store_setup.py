"""Several processes may set up one PostgreSQL store at the same moment."""

from __future__ import annotations

import threading

import pytest
from eventsourcing.postgres import PostgresApplicationRecorder

from adapters.store import store_environment
from commands.application import Ledger
from ledger.directory import Company
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


@pytest.mark.postgres
def test_application_saves_take_the_array_insert(postgres_schema, monkeypatch):
    """`save` passes `tracking=None`; that must not send it down the slow path."""
    library_inserts: list[int] = []
    library_insert = PostgresApplicationRecorder.insert_events

    def counted(self, stored_events, **kwargs):
        library_inserts.append(len(stored_events))
        return library_insert(self, stored_events, **kwargs)

    monkeypatch.setattr(PostgresApplicationRecorder, "insert_events", counted)
    ledger = Ledger(env=store_environment(postgres_url(postgres_schema)))
    try:
        company = Company._create(
            Company.Registered,
            id=Company.id_for("setup-check"),
            tenant_id="setup-check",
            name="Setup Check",
            email_sender="office@setup.example",
            sms_sender=None,
            default_region="US",
        )
        ledger.commit([company])
        assert ledger.repository.get(company.id).name == "Setup Check"
    finally:
        ledger.close()

    assert library_inserts == []
