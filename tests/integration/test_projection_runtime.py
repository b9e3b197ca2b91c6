"""The projection runtime on SQLite and PostgreSQL: exactly once, poison, rebuild."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.models import RecordDeliveryEvent, SendMessage
from commands.send import send_message
from ledger.directory import Customer
from ledger.message import Message
from ledger.values import Channel, Principal
from projections.catalog import projection_named
from projections.database import ViewDatabase, open_views
from projections.reading import TimelineFilter, customer_timeline
from projections.reporting import delivery_report
from projections.runtime import (
    ProjectionRunner,
    active_generation,
    projection_status,
    rebuild,
    skipped_events,
)
from projections.timeline import TimelineProjection

TIMELINE = projection_named("timeline")


def send(ledger: Ledger, staff: Principal, customer: str, subject: str) -> str:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=customer,
            channel=Channel.EMAIL,
            subject=subject,
            body=f"{subject}\nSee you soon.",
        ),
    )
    return str(receipt.message_id)


def deliver(ledger: Ledger, staff: Principal, message_id: str, **fields: Any) -> None:
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=message_id, outcome="delivered", provider="smtp", **fields
        ),
    )


def rows_in(views: ViewDatabase) -> int:
    generation = active_generation(views, "timeline")
    row = views.fetchone(f"SELECT count(*) FROM timeline_g{generation}_messages")
    return int(row[0]) if row else 0


def store_undecodable(ledger: Ledger, event_class: type) -> int:
    """Store an event of `event_class` whose state is not JSON; its position."""
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=uuid.uuid4(),
                originator_version=1,
                topic=get_topic(event_class),
                state=b"{this is not json",
            )
        ]
    )
    position = ledger.recorder.max_notification_id()
    assert position is not None
    return position


def test_catching_up_twice_projects_each_message_once(ledger, views, staff, ada):
    for number in range(3):
        send(ledger, staff, ada, f"Visit {number}")
    runner = ProjectionRunner(ledger, views, TIMELINE, events_per_transaction=2)

    runner.catch_up()
    runner.catch_up()

    assert rows_in(views) == 3
    assert runner.position == ledger.recorder.max_notification_id()


def test_a_runner_with_a_stale_position_does_not_apply_events_again(
    ledger, views, staff, ada
):
    send(ledger, staff, ada, "First")
    other_views = open_views(ledger.env)
    late = ProjectionRunner(ledger, other_views, TIMELINE)
    early = ProjectionRunner(ledger, views, TIMELINE)
    early.catch_up()
    send(ledger, staff, ada, "Second")

    late.catch_up()
    other_views.close()

    assert rows_in(views) == 2
    assert projection_status(ledger, views, TIMELINE).lag == 0


def test_a_poison_event_is_recorded_with_its_error_and_stepped_over(
    ledger, views, staff, ada
):
    send(ledger, staff, ada, "Before")
    poison = store_undecodable(ledger, Message.Sent)
    send(ledger, staff, ada, "After")

    ProjectionRunner(ledger, views, TIMELINE).catch_up()

    generation = active_generation(views, "timeline")
    skipped = skipped_events(views, "timeline", generation)
    assert [s.position for s in skipped] == [poison]
    assert "JSON" in skipped[0].error or "json" in skipped[0].error.lower()
    assert rows_in(views) == 2
    assert projection_status(ledger, views, TIMELINE).skipped == 1


def test_an_event_for_a_message_the_view_never_saw_is_skipped_not_looped(
    ledger, views, staff, ada
):
    message_id = send(ledger, staff, ada, "Visit")
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=uuid.uuid4(),
                originator_version=2,
                topic=get_topic(Message.ReplyReceived),
                state=b'{"tenant_id": "brightside", "customer_id": "c-ada"}',
            )
        ]
    )
    deliver(ledger, staff, message_id)
    runner = ProjectionRunner(ledger, views, TIMELINE)

    runner.catch_up()
    runner.catch_up()

    skipped = skipped_events(views, "timeline", runner.generation)
    assert len(skipped) == 1
    assert "no row in the timeline" in skipped[0].error
    page = customer_timeline(ledger, views, staff, ada)
    assert page.rows[0]["status"] == "delivered"


def test_status_shows_how_far_the_view_lags_behind_the_log(ledger, views, staff, ada):
    send(ledger, staff, ada, "Seen")
    ProjectionRunner(ledger, views, TIMELINE).catch_up()
    send(ledger, staff, ada, "Not yet")

    status = projection_status(ledger, views, TIMELINE)

    assert status.generation == 1
    assert status.lag == 1
    assert status.head == ledger.recorder.max_notification_id()


def test_a_rebuild_serves_the_old_view_until_the_new_one_has_caught_up(
    ledger, views, staff, ada
):
    for number in range(5):
        send(ledger, staff, ada, f"Visit {number}")
    ProjectionRunner(ledger, views, TIMELINE).catch_up()
    seen_during: list[int] = []

    def watch(position: int, head: int) -> None:
        seen_during.append(customer_timeline(ledger, views, staff, ada).count)
        seen_during.append(active_generation(views, "timeline") or 0)

    generation = rebuild(ledger, views, TIMELINE, watch, events_per_transaction=2)

    assert seen_during[:2] == [5, 1]
    assert generation == 2
    assert active_generation(views, "timeline") == 2
    assert customer_timeline(ledger, views, staff, ada).count == 5


def test_a_running_worker_follows_the_generation_a_rebuild_switched_to(
    ledger, views, staff, ada
):
    send(ledger, staff, ada, "Before the rebuild")
    worker = ProjectionRunner(ledger, views, TIMELINE)
    worker.catch_up()
    rebuild(ledger, views, TIMELINE)
    send(ledger, staff, ada, "After the rebuild")

    worker.follow_active()
    worker.catch_up()

    assert worker.generation == 2
    assert customer_timeline(ledger, views, staff, ada).count == 2


def test_one_event_per_transaction_gives_the_same_view_as_big_batches(
    ledger, views, staff, ada
):
    for number in range(4):
        message_id = send(ledger, staff, ada, f"Visit {number}")
        deliver(ledger, staff, message_id)
    ProjectionRunner(ledger, views, TIMELINE, events_per_transaction=1000).catch_up()
    batched = customer_timeline(ledger, views, staff, ada).rows

    rebuild(ledger, views, TIMELINE, events_per_transaction=1)

    assert customer_timeline(ledger, views, staff, ada).rows == batched


def test_a_running_worker_projects_what_is_recorded_after_it_started(
    ledger, staff, ada
):
    views = open_views(ledger.env)
    worker = ProjectionRunner(ledger, views, TIMELINE)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.05))
    thread.start()
    reader = open_views(ledger.env)

    message_id = send(ledger, staff, ada, "Recorded while running")
    for _ in range(200):
        page = customer_timeline(ledger, reader, staff, ada)
        if page.count:
            break
        stop.wait(0.05)
    stop.set()
    thread.join()
    reader.close()
    views.close()

    assert [row["message_id"] for row in page.rows] == [message_id]


def test_big_batches_give_the_same_rows_as_one_event_at_a_time(
    ledger, views, staff, ada
):
    sent = [send(ledger, staff, ada, f"Visit {n}") for n in range(60)]
    reporting = projection_named("reporting")
    ProjectionRunner(ledger, views, TIMELINE).catch_up()
    ProjectionRunner(ledger, views, reporting).catch_up()
    for message_id in sent:
        deliver(ledger, staff, message_id)
    ProjectionRunner(ledger, views, TIMELINE).catch_up()
    ProjectionRunner(ledger, views, reporting).catch_up()
    batched = customer_timeline(ledger, views, staff, ada, TimelineFilter(limit=100))
    batched_report = delivery_report(views, staff, "funnel")

    rebuild(ledger, views, TIMELINE, events_per_transaction=1)
    rebuild(ledger, views, reporting, events_per_transaction=1)

    one_by_one = customer_timeline(ledger, views, staff, ada, TimelineFilter(limit=100))
    assert one_by_one.rows == batched.rows
    assert {row["status"] for row in batched.rows} == {"delivered"}
    assert delivery_report(views, staff, "funnel") == batched_report
    assert batched_report[0]["delivered"] == 60


class CrashingTimeline(TimelineProjection):
    """The timeline, losing its database connection on one chosen write."""

    def __init__(self, crash_on_write: int) -> None:
        self.writes = 0
        self.crash_on_write = crash_on_write

    def write(self, views: ViewDatabase, prefix: str, prepared: Any) -> None:
        self.writes += 1
        super().write(views, prefix, prepared)
        if self.writes == self.crash_on_write:
            raise psycopg.OperationalError("server closed the connection")


def message_ids_in(views: ViewDatabase) -> list[str]:
    generation = active_generation(views, "timeline")
    rows = views.fetchall(
        f"SELECT message_id FROM timeline_g{generation}_messages ORDER BY seq"
    )
    return [str(row[0]) for row in rows]


def test_an_event_of_a_topic_the_projection_ignores_is_never_decoded(
    ledger, views, staff, ada
):
    send(ledger, staff, ada, "Before")
    store_undecodable(ledger, Customer.Updated)
    runner = ProjectionRunner(ledger, views, TIMELINE)

    runner.catch_up()

    assert skipped_events(views, "timeline", runner.generation) == []
    assert runner.position == ledger.recorder.max_notification_id()
    assert rows_in(views) == 1


def test_a_poison_event_in_a_long_catch_up_is_recorded_and_the_rest_applied_once(
    ledger, views, staff, ada
):
    before = [send(ledger, staff, ada, f"Before {n}") for n in range(4)]
    poison = store_undecodable(ledger, Message.Sent)
    after = [send(ledger, staff, ada, f"After {n}") for n in range(4)]
    runner = ProjectionRunner(ledger, views, TIMELINE, events_per_transaction=2)

    runner.catch_up()

    skipped = skipped_events(views, "timeline", runner.generation)
    assert [s.position for s in skipped] == [poison]
    assert message_ids_in(views) == before + after
    assert runner.position == ledger.recorder.max_notification_id()


@pytest.mark.parametrize("crash_on_write", [1, 2, 3])
def test_a_crash_mid_catch_up_loses_no_event_and_applies_none_twice(
    ledger, views, staff, ada, crash_on_write
):
    sent = [send(ledger, staff, ada, f"Visit {n}") for n in range(7)]
    for message_id in sent[:3]:
        deliver(ledger, staff, message_id)
    crashing = ProjectionRunner(
        ledger, views, CrashingTimeline(crash_on_write), events_per_transaction=2
    )

    with pytest.raises(psycopg.OperationalError):
        crashing.catch_up()
    restarted_views = open_views(ledger.env)
    restarted = ProjectionRunner(
        ledger, restarted_views, TIMELINE, events_per_transaction=2
    )
    restarted.catch_up()
    restarted_views.close()

    assert message_ids_in(views) == sent
    assert skipped_events(views, "timeline", restarted.generation) == []
    statuses = [
        row["status"]
        for row in customer_timeline(
            ledger, views, staff, ada, TimelineFilter(limit=10)
        ).rows
    ]
    assert sorted(statuses) == ["delivered"] * 3 + ["queued"] * 4
