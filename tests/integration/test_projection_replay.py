"""Compliance replay from the event store, with and without the timeline index."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.models import RecordDeliveryEvent, SendMessage
from commands.replay import Replay, replay_customer
from commands.send import send_message
from ledger.errors import InvalidCommand, NotFound
from ledger.values import Channel, Principal
from projections import reading
from projections.catalog import projection_named
from projections.reading import TimelineIndex
from projections.runtime import ProjectionRunner


def send(ledger: Ledger, staff: Principal, customer: str, subject: str) -> str:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=customer, channel=Channel.EMAIL, subject=subject, body="Hi"
        ),
    )
    return str(receipt.message_id)


def deliver(ledger: Ledger, staff: Principal, message_id: str) -> None:
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=message_id, outcome="delivered", provider="smtp"
        ),
    )


def test_a_replay_shows_each_message_as_it_stood_at_the_instant(
    ledger, staff, viewer, ada
):
    early = send(ledger, staff, ada, "Early")
    cut_off = datetime.now(UTC)
    deliver(ledger, staff, early)
    send(ledger, staff, ada, "Late")

    replay = replay_customer(ledger, viewer, ada, cut_off)

    assert [str(item.message.id) for item in replay.messages] == [early]
    item = replay.messages[0]
    assert item.message.status.value == "queued"
    assert [event.event for event in item.events] == ["Queued"]


def test_a_replay_at_the_present_shows_every_event(ledger, staff, viewer, ada):
    message_id = send(ledger, staff, ada, "Visit")
    deliver(ledger, staff, message_id)

    replay = replay_customer(ledger, viewer, ada, datetime.now(UTC))

    assert replay.messages[0].message.status.value == "delivered"
    assert [e.event for e in replay.messages[0].events] == ["Queued", "Delivered"]


def test_the_timeline_index_gives_the_same_replay_even_when_it_lags(
    ledger, views, staff, viewer, ada, farid
):
    first = send(ledger, staff, ada, "Projected")
    send_message(
        ledger,
        staff,
        SendMessage(customer_id=farid, channel=Channel.SMS, body="Someone else"),
    )
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    second = send(ledger, staff, ada, "Not projected yet")
    now = datetime.now(UTC)

    indexed = replay_customer(ledger, viewer, ada, now, TimelineIndex(views, ledger))
    scanned = replay_customer(ledger, viewer, ada, now)

    ids = [str(item.message.id) for item in indexed.messages]
    assert ids == [second, first]
    assert ids == [str(item.message.id) for item in scanned.messages]


def test_a_time_without_a_zone_is_refused(ledger, viewer, ada):
    with pytest.raises(InvalidCommand) as caught:
        replay_customer(ledger, viewer, ada, datetime(2026, 1, 1))

    assert "time zone" in caught.value.message


def test_another_companys_customer_cannot_be_replayed(ledger, staff, outsider, ada):
    send(ledger, staff, ada, "Private")

    with pytest.raises(NotFound):
        replay_customer(ledger, outsider, ada, datetime.now(UTC))


def test_a_replay_read_in_many_chunks_matches_the_scan_of_the_log(
    ledger, views, staff, viewer, ada, monkeypatch
):
    sent = [send(ledger, staff, ada, f"Visit {n}") for n in range(7)]
    for message_id in sent[::2]:
        deliver(ledger, staff, message_id)
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    monkeypatch.setattr(reading, "EVENTS_CHUNK", 2)
    now = datetime.now(UTC)

    indexed = replay_customer(ledger, viewer, ada, now, TimelineIndex(views, ledger))
    scanned = replay_customer(ledger, viewer, ada, now)

    def summary(replay: Replay) -> list[tuple[str, str, list[str]]]:
        return [
            (
                str(item.message.id),
                item.message.status.value,
                [e.event for e in item.events],
            )
            for item in replay.messages
        ]

    assert summary(indexed) == summary(scanned)
    assert sorted(m for m, _, _ in summary(indexed)) == sorted(sent)
    assert [s for _, s, _ in summary(indexed)].count("delivered") == 4
