"""Grouped commits keep every send rule, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.store import store_environment
from commands.application import Decision, Ledger
from commands.delivery import get_message, record_delivery_event
from commands.directory import (
    company_of,
    decide_customer,
    register_company,
    upsert_customer,
)
from commands.grouping import CommitterClosed, GroupCommitter
from commands.models import (
    RecordDeliveryEvent,
    RegisterCompany,
    SaveTemplate,
    SendMessage,
    Suppress,
    UpsertCustomer,
)
from commands.ports import now
from commands.send import SendReceipt, decide_send, send_message
from commands.suppressions import suppress
from commands.templates import save_template
from ledger.errors import (
    InvalidCommand,
    PermissionDenied,
    RecipientSuppressed,
    StoreUnavailable,
)
from ledger.message import Message
from ledger.values import Channel, Principal, Status
from tests.conftest import POSTGRES_URL

EMAIL = {"channel": Channel.EMAIL, "subject": "Your visit", "body": "See you soon."}
EXAMPLES = settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def events_in(ledger: Ledger) -> int:
    """How many events are stored (notification ids can have gaps)."""
    return len(ledger.recorder.select_notifications(start=None, limit=100_000))


@pytest.fixture
def committer(ledger: Ledger) -> Iterator[GroupCommitter]:
    with GroupCommitter(ledger) as group_committer:
        yield group_committer


@contextmanager
def one_group(committer: GroupCommitter) -> Iterator[None]:
    """Hold the committer busy, so everything queued meanwhile forms one group."""
    started, release = threading.Event(), threading.Event()

    def hold() -> Decision[None]:
        started.set()
        release.wait()
        return Decision(None)

    held = committer.enqueue(hold)
    started.wait()
    try:
        yield
    finally:
        release.set()
        held.result()


def outcome(future: Future[Any]) -> Any:
    """The future's result, or the error it failed with."""
    try:
        return future.result()
    except Exception as exc:
        return exc


def send_later(
    committer: GroupCommitter, principal: Principal, **fields: Any
) -> Future[SendReceipt]:
    return committer.queue_send(principal, SendMessage(**fields))


def test_a_lone_send_is_recorded_as_queued(ledger, committer, staff, ada):
    receipt = committer.send(staff, SendMessage(customer_id=ada, **EMAIL))

    message = get_message(ledger, staff, str(receipt.message_id))
    assert receipt.created
    assert message.status == Status.QUEUED
    assert message.to == ["ada.fernsby@example.com"]


def test_sends_queued_together_are_committed_in_one_transaction(
    ledger, committer, staff, ada
):
    before = events_in(ledger)
    groups_before = committer.groups_committed

    with one_group(committer):
        futures = [
            send_later(committer, staff, customer_id=ada, **EMAIL) for _ in range(20)
        ]
    receipts = [future.result() for future in futures]

    assert len({receipt.message_id for receipt in receipts}) == 20
    assert events_in(ledger) == before + 20
    assert committer.groups_committed == groups_before + 1


def test_sends_from_many_threads_are_each_recorded_once(ledger, committer, staff, ada):
    before = events_in(ledger)

    with ThreadPoolExecutor(max_workers=16) as pool:
        receipts = list(
            pool.map(
                lambda n: committer.send(
                    staff,
                    SendMessage(customer_id=ada, idempotency_key=f"k{n}", **EMAIL),
                ),
                range(48),
            )
        )

    assert all(receipt.created for receipt in receipts)
    assert len({receipt.message_id for receipt in receipts}) == 48
    assert events_in(ledger) == before + 48


def test_asyncio_tasks_can_send_through_the_committer(ledger, committer, staff, ada):
    async def send_all() -> list[SendReceipt]:
        return await asyncio.gather(
            *(
                committer.send_async(staff, SendMessage(customer_id=ada, **EMAIL))
                for _ in range(10)
            )
        )

    receipts = asyncio.run(send_all())

    assert len({receipt.message_id for receipt in receipts}) == 10


@EXAMPLES
@given(
    kinds=st.lists(
        st.sampled_from(["good", "empty", "suppressed", "forbidden", "repeat"]),
        min_size=2,
        max_size=12,
    )
)
def test_a_rejection_in_a_group_never_affects_the_other_commands(
    ledger, committer, staff, viewer, ada, kinds
):
    run = uuid.uuid4().hex[:8]
    blocked = f"blocked.{run}@example.com"
    suppress(
        ledger, staff, Suppress(channel=Channel.EMAIL, address=blocked, reason="asked")
    )
    fields = {
        "good": ({"customer_id": ada, **EMAIL}, staff),
        "empty": ({"customer_id": ada, **EMAIL, "body": " "}, staff),
        "suppressed": ({"customer_id": ada, **EMAIL, "to": blocked}, staff),
        "forbidden": ({"customer_id": ada, **EMAIL}, viewer),
        "repeat": ({"customer_id": ada, **EMAIL, "idempotency_key": run}, staff),
    }
    before = events_in(ledger)

    with one_group(committer):
        futures = [send_later(committer, fields[k][1], **fields[k][0]) for k in kinds]
    results = [outcome(future) for future in futures]

    expected = {
        "empty": InvalidCommand,
        "suppressed": RecipientSuppressed,
        "forbidden": PermissionDenied,
    }
    for kind, result in zip(kinds, results, strict=True):
        assert isinstance(result, expected.get(kind, SendReceipt)), (kind, result)
    repeats = [r for k, r in zip(kinds, results, strict=True) if k == "repeat"]
    assert len({receipt.message_id for receipt in repeats}) <= 1
    assert sum(receipt.created for receipt in repeats) == min(1, len(repeats))
    created = kinds.count("good") + min(1, len(repeats))
    assert events_in(ledger) == before + created


@EXAMPLES
@given(copies=st.integers(min_value=2, max_value=6))
def test_the_same_idempotency_key_twice_in_a_group_gets_the_original_back(
    ledger, committer, staff, ada, copies
):
    key = uuid.uuid4().hex
    before = events_in(ledger)

    with one_group(committer):
        futures = [
            send_later(committer, staff, customer_id=ada, idempotency_key=key, **EMAIL)
            for _ in range(copies)
        ]
        other = send_later(committer, staff, customer_id=ada, **EMAIL)
    receipts = [future.result() for future in futures]

    assert len({receipt.message_id for receipt in receipts}) == 1
    assert [receipt.created for receipt in receipts].count(True) == 1
    assert other.result().created
    assert events_in(ledger) == before + 2


@EXAMPLES
@given(
    outcomes=st.lists(
        st.sampled_from(["sent", "delivered", "opened", "bounced"]),
        min_size=2,
        max_size=6,
    )
)
def test_reports_on_one_message_in_one_group_are_all_recorded(
    ledger, committer, staff, ada, outcomes
):
    receipt = send_message(ledger, staff, SendMessage(customer_id=ada, **EMAIL))
    message_id = str(receipt.message_id)

    with one_group(committer):
        futures = [
            committer.queue_delivery_event(
                staff,
                RecordDeliveryEvent(
                    message_id=message_id,
                    outcome=name,
                    provider="sendgrid",
                    provider_event_id=f"ev-{n}",
                    provider_message_id="sg-1",
                ),
            )
            for n, name in enumerate(outcomes)
        ]
    for future in futures:
        future.result()

    message = get_message(ledger, staff, message_id)
    assert message.seen_provider_events == {f"ev-{n}" for n in range(len(outcomes))}


def test_a_write_from_outside_the_group_is_resolved_per_command(
    ledger, committer, staff, ada, caplog
):
    caplog.set_level(logging.INFO, logger="commands.grouping")
    receipt = send_message(ledger, staff, SendMessage(customer_id=ada, **EMAIL))
    message_id = str(receipt.message_id)
    report = RecordDeliveryEvent(
        message_id=message_id, outcome="delivered", provider="smtp"
    )
    outside_writes = []

    def open_after_an_outside_report() -> Decision[str]:
        message = get_message(ledger, staff, message_id)
        if not outside_writes:
            # Another process records a report after this decision has loaded.
            outside_writes.append(record_delivery_event(ledger, staff, report))
        message.record_provider_event(
            Message.Opened,
            occurred_at=now(),
            provider="smtp",
            provider_event_id=None,
            detail={},
            recipient=None,
            machine=False,
        )
        return Decision("opened", [message])

    with one_group(committer):
        opened = committer.enqueue(open_after_an_outside_report)
        other = send_later(committer, staff, customer_id=ada, **EMAIL)

    assert opened.result() == "opened"
    assert other.result().created
    assert get_message(ledger, staff, message_id).status == Status.OPENED
    assert len(outside_writes) == 1
    assert "committing one by one" in caplog.text


def test_provider_reports_from_many_threads_land_on_their_own_messages(
    ledger, committer, staff, ada
):
    receipts = [
        send_message(ledger, staff, SendMessage(customer_id=ada, **EMAIL))
        for _ in range(3)
    ]
    reports = [
        RecordDeliveryEvent(
            message_id=str(receipt.message_id), outcome=outcome_name, provider="smtp"
        )
        for receipt in receipts
        for outcome_name in ("sent", "delivered")
    ]

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda r: committer.record_delivery_event(staff, r), reports))

    statuses = [
        get_message(ledger, staff, str(receipt.message_id)).status
        for receipt in receipts
    ]
    assert statuses == [Status.DELIVERED] * 3


def test_a_template_send_renders_with_the_customer_read_in_the_same_group(
    ledger, committer, staff, ada
):
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="reminder",
            channel=Channel.EMAIL,
            subject="See you, {{ customer_first_name }}",
            body="Hello {{ customer_name }}, your visit is tomorrow.",
        ),
    )
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(customer_id="c-bea", name="Bea Lind", email="bea@example.org"),
    )

    with one_group(committer):
        futures = [
            send_later(
                committer,
                staff,
                customer_id=c,
                channel=Channel.EMAIL,
                template_id="reminder",
            )
            for c in (ada, "c-bea")
        ]
    messages = [
        get_message(ledger, staff, str(future.result().message_id))
        for future in futures
    ]

    assert [m.subject for m in messages] == ["See you, Ada", "See you, Bea"]
    assert messages[1].to == ["bea@example.org"]


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
def test_a_database_error_fails_exactly_that_groups_commands(
    ledger, committer, staff, ada, postgres_schema
):
    refuse_writes_mentioning("poison", postgres_schema)
    before = events_in(ledger)

    with one_group(committer):
        doomed = [
            send_later(committer, staff, customer_id=ada, **EMAIL),
            send_later(
                committer, staff, customer_id=ada, **{**EMAIL, "body": "poison"}
            ),
        ]
    later = committer.send(staff, SendMessage(customer_id=ada, **EMAIL))

    errors = [outcome(future) for future in doomed]
    assert all(isinstance(error, StoreUnavailable) for error in errors)
    assert "nothing was recorded" in errors[0].message
    assert later.created
    assert events_in(ledger) == before + 1


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
def test_a_repeat_arriving_while_the_original_is_being_written_gets_it_back(
    ledger, committer, staff, ada, postgres_schema, caplog
):
    caplog.set_level(logging.INFO, logger="commands.grouping")
    hold_writes_mentioning("slow-write", postgres_schema)
    command = SendMessage(
        customer_id=ada, idempotency_key="visit-7", **{**EMAIL, "body": "slow-write"}
    )

    with write_in_flight(
        committer, lambda: decide_send(ledger, staff, command)
    ) as original:
        repeat = committer.queue_send(staff, command)

    assert original.result().created
    assert repeat.result() == SendReceipt(
        original.result().message_id, Status.QUEUED, created=False
    )
    assert "one by one" not in caplog.text


def test_a_change_made_outside_the_committer_is_seen_by_its_next_group(
    ledger, committer, staff, ada
):
    committer.send(staff, SendMessage(customer_id=ada, **EMAIL))
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(customer_id=ada, name="Ada Fernsby", email="ada@moved.example"),
    )

    receipt = committer.send(staff, SendMessage(customer_id=ada, **EMAIL))

    message = get_message(ledger, staff, str(receipt.message_id))
    assert message.to == ["ada@moved.example"]


def test_a_suppression_made_outside_the_committer_stops_its_next_send(
    ledger, committer, staff, ada
):
    committer.send(staff, SendMessage(customer_id=ada, **EMAIL))
    suppress(
        ledger,
        staff,
        Suppress(
            channel=Channel.EMAIL, address="ada.fernsby@example.com", reason="asked"
        ),
    )

    with pytest.raises(RecipientSuppressed):
        committer.send(staff, SendMessage(customer_id=ada, **EMAIL))


def test_a_report_on_a_message_the_committer_just_wrote_sees_its_whole_history(
    ledger, committer, staff, ada
):
    receipt = committer.send(staff, SendMessage(customer_id=ada, **EMAIL))
    message_id = str(receipt.message_id)
    for outcome_name in ("sent", "delivered"):
        committer.record_delivery_event(
            staff,
            RecordDeliveryEvent(
                message_id=message_id, outcome=outcome_name, provider="smtp"
            ),
        )
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(message_id=message_id, outcome="opened", provider="smtp"),
    )

    reported = committer.record_delivery_event(
        staff,
        RecordDeliveryEvent(
            message_id=message_id,
            outcome="delivered",
            provider="smtp",
            provider_event_id="late-report",
        ),
    )

    assert reported.recorded
    assert get_message(ledger, staff, message_id).status == Status.OPENED


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
def test_a_send_waits_for_a_change_to_its_customer_that_is_being_written(
    ledger, committer, staff, ada, postgres_schema
):
    hold_writes_mentioning("slow-write", postgres_schema)
    company = company_of(ledger, staff)
    change = UpsertCustomer(
        customer_id=ada, name="Ada slow-write Fernsby", email="ada@new.example.com"
    )

    with write_in_flight(
        committer, lambda: decide_customer(ledger, company, change)
    ) as changed:
        sent = send_later(committer, staff, customer_id=ada, **EMAIL)

    changed.result()
    message = get_message(ledger, staff, str(sent.result().message_id))
    assert message.to == ["ada@new.example.com"]


@contextmanager
def write_in_flight(
    committer: GroupCommitter, decide: Callable[[], Decision[Any]]
) -> Iterator[Future[Any]]:
    """Commit `decide` and keep its write in flight while the block queues more.

    The decision waits until the block has queued its commands, so the write
    goes to the writer thread while the committer decides what was queued;
    the write itself then waits on an advisory lock (see hold_writes_mentioning)
    until the committer has taken everything from its queue.
    """
    started, queued = threading.Event(), threading.Event()

    def decide_when_queued() -> Decision[Any]:
        started.set()
        queued.wait()
        return decide()

    with advisory_lock(HOLD_KEY) as holder:
        first = committer.enqueue(decide_when_queued)
        started.wait()
        yield first
        queued.set()
        wait_until_a_write_waits_for(holder)
        wait_until(lambda: committer._queue.empty())


HOLD_KEY = 7_310_042


@contextmanager
def advisory_lock(key: int) -> Iterator[psycopg.Connection[Any]]:
    """Hold a PostgreSQL advisory lock on a connection of the test's own."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", [key])
        yield connection
        connection.execute("SELECT pg_advisory_unlock(%s)", [key])


def wait_until_a_write_waits_for(holder: psycopg.Connection[Any]) -> None:
    def someone_waits() -> bool:
        row = holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND objid = %s AND NOT granted",
            [HOLD_KEY],
        ).fetchone()
        return bool(row and row[0])

    wait_until(someone_waits)


def wait_until(check: Callable[[], bool]) -> None:
    """Poll `check` (an ordering condition, not a timing one) for up to 10 s."""
    for _ in range(1000):
        if check():
            return
        time.sleep(0.01)
    raise AssertionError("the condition never held")


def hold_writes_mentioning(word: str, schema: str) -> None:
    """A trigger that makes an event holding `word` wait for the test's lock."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(
            f"""
            CREATE FUNCTION "{schema}".hold() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF position('{word}'::bytea IN NEW.state) > 0 THEN
                    PERFORM pg_advisory_xact_lock({HOLD_KEY});
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER hold BEFORE INSERT ON "{schema}".ledger_events
            FOR EACH ROW EXECUTE FUNCTION "{schema}".hold();
            """
        )


def test_a_locked_sqlite_file_fails_exactly_that_groups_commands(tmp_path, staff):
    path = tmp_path / "locked.sqlite"
    env = {**store_environment(f"sqlite:///{path}"), "SQLITE_LOCK_TIMEOUT": "1"}
    ledger = Ledger(env=env)
    register_company(
        ledger,
        staff,
        RegisterCompany(
            name="Brightside Dental", email_sender="office@brightside.example"
        ),
    )
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id="c-ada", name="Ada Fernsby", email="ada.fernsby@example.com"
        ),
    )
    before = events_in(ledger)

    with GroupCommitter(ledger) as committer:
        with closing(sqlite3.connect(path)) as other_writer:
            other_writer.execute("BEGIN IMMEDIATE")
            with one_group(committer):
                doomed = [
                    send_later(committer, staff, customer_id="c-ada", **EMAIL)
                    for _ in range(2)
                ]
            errors = [outcome(future) for future in doomed]
            other_writer.rollback()
        later = committer.send(staff, SendMessage(customer_id="c-ada", **EMAIL))
    ledger.close()

    assert all(isinstance(error, StoreUnavailable) for error in errors), errors
    assert "nothing was recorded" in errors[0].message
    assert later.created
    assert events_in_file(path) == before + 1


def events_in_file(path: Path) -> int:
    with closing(sqlite3.connect(path)) as connection:
        (count,) = connection.execute("SELECT count(*) FROM stored_events").fetchone()
    return int(count)


def refuse_writes_mentioning(word: str, schema: str) -> None:
    """A trigger that makes PostgreSQL refuse any event whose state holds `word`."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
        connection.execute(
            f"""
            CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF position('{word}'::bytea IN NEW.state) > 0 THEN
                    RAISE EXCEPTION 'refused by test trigger';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".ledger_events
            FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
            """
        )


def test_a_closed_committer_refuses_new_commands(ledger, staff, ada):
    committer = GroupCommitter(ledger)
    committer.close()

    with pytest.raises(CommitterClosed):
        committer.send(staff, SendMessage(customer_id=ada, **EMAIL))


@pytest.mark.postgres
@pytest.mark.parametrize("ledger_url", ["postgres"], indirect=True)
def test_groups_waiting_for_the_writer_are_merged_into_one_transaction(
    ledger, committer, staff, ada, postgres_schema
):
    hold_writes_mentioning("slow-write", postgres_schema)
    groups_before = committer.groups_committed
    held = SendMessage(customer_id=ada, **{**EMAIL, "body": "slow-write"})
    later: list[Future[SendReceipt]] = []

    def decide_with_another_queued() -> Decision[SendReceipt]:
        # Something waiting sends this group to the writer, not saved inline.
        later.append(send_later(committer, staff, customer_id=ada, **EMAIL))
        return decide_send(ledger, staff, held)

    with advisory_lock(HOLD_KEY) as holder:
        first = committer.enqueue(decide_with_another_queued)
        wait_until(lambda: committer._writes_pending == 2)
        later.append(send_later(committer, staff, customer_id=ada, **EMAIL))
        wait_until(lambda: committer._writes_pending == 3)
        wait_until_a_write_waits_for(holder)

    receipts = [future.result() for future in (first, *later)]
    assert all(receipt.created for receipt in receipts)
    assert committer.groups_committed == groups_before + 2


def test_a_send_to_a_customer_the_committer_knows_reads_the_store_once(
    ledger, committer, staff, ada
):
    committer.send(staff, SendMessage(customer_id=ada, **EMAIL))
    queries = count_reads(ledger)

    committer.send(staff, SendMessage(customer_id=ada, **EMAIL))

    assert len(queries) == 1


def test_a_guess_on_a_customer_changed_elsewhere_is_named_again_and_read(
    ledger, committer, staff, ada
):
    committer.send(staff, SendMessage(customer_id=ada, **EMAIL))
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(customer_id=ada, name="Ada Fernsby", email="ada@moved.example"),
    )
    suppress(
        ledger,
        staff,
        Suppress(channel=Channel.EMAIL, address="ada@moved.example", reason="asked"),
    )
    queries = count_reads(ledger)

    with pytest.raises(RecipientSuppressed):
        committer.send(staff, SendMessage(customer_id=ada, **EMAIL))

    assert len(queries) == 2


def count_reads(ledger: Ledger) -> list[int]:
    """Note each batched read of the store the ledger makes from now on."""
    queries: list[int] = []
    read_history = ledger.read_history

    def counted(*args: Any, **kwargs: Any) -> Any:
        queries.append(1)
        return read_history(*args, **kwargs)

    ledger.read_history = counted  # type: ignore[method-assign]
    return queries
