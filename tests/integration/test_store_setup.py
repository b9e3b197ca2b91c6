"""Several processes may set up one PostgreSQL store at the same moment."""

from __future__ import annotations

import threading
import uuid

import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder

from adapters import fast_store
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
def test_application_saves_take_the_ledgers_own_insert(postgres_schema, monkeypatch):
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


@pytest.mark.postgres
@pytest.mark.parametrize("limit", [fast_store.ONE_QUERY_STATE_BYTES, 100])
def test_a_batch_is_saved_whole_in_one_query_or_as_arrays_past_the_limit(
    postgres_schema, monkeypatch, limit
):
    monkeypatch.setattr(fast_store, "ONE_QUERY_STATE_BYTES", limit)
    one_query = []
    original = fast_store.ArrayInsertRecorder._insert_in_one_query

    def counted(self, connection, statements, stored_events):
        one_query.append(len(stored_events))
        return original(self, connection, statements, stored_events)

    monkeypatch.setattr(fast_store.ArrayInsertRecorder, "_insert_in_one_query", counted)
    ledger = Ledger(env=store_environment(postgres_url(postgres_schema)))
    try:
        companies = [
            Company._create(
                Company.Registered,
                id=Company.id_for(f"batch-{number}"),
                tenant_id=f"batch-{number}",
                name=f"Company 'O{number}",
                email_sender="office@batch.example",
                sms_sender=None,
                default_region="US",
            )
            for number in range(3)
        ]
        ledger.commit(companies)

        stored = ledger.recorder.select_notifications(start=None, limit=10)
        assert [n.originator_id for n in stored] == [c.id for c in companies]
        assert [ledger.repository.get(c.id).name for c in companies] == [
            "Company 'O0",
            "Company 'O1",
            "Company 'O2",
        ]
    finally:
        ledger.close()

    assert one_query == ([3] if limit > 100 else [])


@pytest.mark.postgres
def test_reading_on_from_known_versions_probes_the_index_without_statistics(
    postgres_schema,
):
    """The read-ahead query must not scan the whole log while it is unanalysed.

    With autovacuum off (or not yet run), PostgreSQL has no statistics for the
    events table; a plain join then hash-joins over a full scan, whose cost
    grows with every event ever written.
    """
    ledger = Ledger(env=store_environment(postgres_url(postgres_schema)))
    try:
        recorder = ledger.recorder
        ids = [uuid.uuid4() for _ in range(4000)]
        recorder.insert_events([StoredEvent(id, 1, "check:Event", b"{}") for id in ids])
        wanted = ids[:50]
        with recorder.datastore.get_connection() as connection:
            statement = recorder._rendered(connection).select_after
            connection.execute("SET plan_cache_mode = force_generic_plan")
            plan = "\n".join(
                row["QUERY PLAN"]
                for row in connection.execute(
                    b"EXPLAIN " + statement, [wanted, [0] * len(wanted)]
                )
            )
        assert "Seq Scan" not in plan, plan
        assert len(recorder.select_events_of(wanted, [0] * len(wanted))) == 50
    finally:
        ledger.close()
