"""The customer timeline and threads, read from the view on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commands.application import Ledger
from commands.delivery import get_message, record_delivery_event, retry_message
from commands.inbound import record_inbound
from commands.models import (
    RecordDeliveryEvent,
    RecordInbound,
    RetryMessage,
    SendMessage,
)
from commands.send import send_message
from ledger.errors import InvalidCommand, NotFound, PermissionDenied
from ledger.values import Channel, Direction, Principal, Status
from projections.catalog import projection_named
from projections.database import ViewDatabase
from projections.reading import TimelineFilter, customer_threads, customer_timeline
from projections.runtime import ProjectionRunner


def send(ledger: Ledger, staff: Principal, customer: str, **fields: Any) -> str:
    fields.setdefault("channel", Channel.EMAIL)
    if fields["channel"] == Channel.EMAIL:
        fields.setdefault("subject", "Your visit")
    fields.setdefault("body", "See you soon.\nBrightside Dental")
    receipt = send_message(ledger, staff, SendMessage(customer_id=customer, **fields))
    return str(receipt.message_id)


def report(
    ledger: Ledger, staff: Principal, message_id: str, outcome: str, **fields: Any
) -> None:
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=message_id, outcome=outcome, provider="smtp", **fields
        ),
    )


def timeline(
    ledger: Ledger,
    views: ViewDatabase,
    principal: Principal,
    customer: str,
    **filters: Any,
) -> Any:
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    return customer_timeline(
        ledger, views, principal, customer, TimelineFilter(**filters)
    )


def test_the_timeline_lists_newest_first_with_the_listing_columns(
    ledger, views, staff, ada
):
    first = send(ledger, staff, ada, subject="Cleaning", body="\n  Hello Ada,\nmore")
    second = send(ledger, staff, ada, channel=Channel.SMS, body="Reminder: 9:30")

    page = timeline(ledger, views, staff, ada)

    assert page.count == 2
    assert [row["message_id"] for row in page.rows] == [second, first]
    row = page.rows[1]
    assert row["subject"] == "Cleaning"
    assert row["preview"] == "Hello Ada,"
    assert row["direction"] == "outbound"
    assert row["from"] == "office@brightside.example"
    assert row["to"] == ["ada.fernsby@example.com"]
    assert row["sent_by"] == "maria.lopez"
    assert row["status"] == "queued"
    assert row["attachments"] == 0
    assert page.rows[0]["channel"] == "sms"


def test_the_status_shown_is_the_aggregates_fold_whatever_order_reports_came(
    ledger, views, staff, ada
):
    opened_then_bounced = send(ledger, staff, ada)
    report(ledger, staff, opened_then_bounced, "opened")
    report(ledger, staff, opened_then_bounced, "bounced")
    delivered_then_bounced = send(ledger, staff, ada)
    report(ledger, staff, delivered_then_bounced, "delivered")
    report(ledger, staff, delivered_then_bounced, "bounced")
    retried = send(ledger, staff, ada)
    report(ledger, staff, retried, "failed")
    retry_message(ledger, staff, RetryMessage(message_id=retried))
    report(ledger, staff, retried, "delivered", attempt=1)

    page = timeline(ledger, views, staff, ada)

    shown = {row["message_id"]: row["status"] for row in page.rows}
    for message_id, status in shown.items():
        assert status == get_message(ledger, staff, message_id).status.value
    assert shown[opened_then_bounced] == "opened"
    assert shown[delivered_then_bounced] == "bounced"
    assert shown[retried] == "retried"


def test_filters_narrow_the_timeline_and_its_count(ledger, views, staff, ada):
    email = send(ledger, staff, ada)
    report(ledger, staff, email, "delivered")
    send(ledger, staff, ada, channel=Channel.SMS)
    record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel=Channel.EMAIL,
            sender="ada.fernsby@example.com",
            body="Thanks!",
        ),
    )

    by_channel = timeline(ledger, views, staff, ada, channel=Channel.SMS)
    by_direction = timeline(ledger, views, staff, ada, direction=Direction.INBOUND)
    by_status = timeline(ledger, views, staff, ada, status=Status.DELIVERED)
    by_sender = timeline(ledger, views, staff, ada, sent_by="Customer")
    later = timeline(
        ledger, views, staff, ada, since=datetime.now(UTC) + timedelta(hours=1)
    )

    assert by_channel.count == 1 and by_channel.rows[0]["channel"] == "sms"
    assert by_direction.count == 1 and by_direction.rows[0]["preview"] == "Thanks!"
    assert [r["message_id"] for r in by_status.rows] == [email]
    assert by_sender.count == 1
    assert later.count == 0


def test_keyset_pages_walk_every_message_once(ledger, views, staff, ada):
    sent = {send(ledger, staff, ada, body=f"Note {n}") for n in range(7)}

    seen: list[str] = []
    page = timeline(ledger, views, staff, ada, limit=3)
    seen += [row["message_id"] for row in page.rows]
    while page.next_cursor:
        page = timeline(ledger, views, staff, ada, limit=3, after=page.next_cursor)
        seen += [row["message_id"] for row in page.rows]

    assert len(seen) == 7
    assert set(seen) == sent
    assert page.count == 7


def test_search_finds_words_in_subject_body_and_addresses(ledger, views, staff, ada):
    crown = send(ledger, staff, ada, subject="Crown fitting", body="Bring your card")
    xray = send(ledger, staff, ada, subject="X-ray results", body="All clear, Ada")
    cc = send(ledger, staff, ada, body="Copy for the guardian", cc=["kim@example.org"])

    def found(words: str) -> set[str]:
        page = timeline(ledger, views, staff, ada, search=words)
        return {row["message_id"] for row in page.rows}

    assert found("crown") == {crown}
    assert found("clear") == {xray}
    assert found("kim@example.org") == {cc}
    assert found("bring card") == {crown}
    assert found('"quoted" OR') == set()


def test_a_reply_is_threaded_with_the_message_it_answers(ledger, views, staff, ada):
    question = send(ledger, staff, ada, subject="Can you come Tuesday?")
    other = send(ledger, staff, ada, subject="Newsletter")
    record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel=Channel.EMAIL,
            sender="ada.fernsby@example.com",
            subject="Re: Can you come Tuesday?",
            body="Yes, see you then.",
            in_reply_to=question,
        ),
    )

    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()
    threads = customer_threads(ledger, views, staff, ada)

    assert [t.thread_id for t in threads] == [question, other]
    assert [m["direction"] for m in threads[0].messages] == ["outbound", "inbound"]
    assert threads[0].messages[0]["replied"] is True


def test_another_companys_customer_looks_missing(ledger, views, staff, outsider, ada):
    send(ledger, staff, ada)

    with pytest.raises(NotFound):
        timeline(ledger, views, outsider, ada)


def test_reading_needs_the_view_permission(ledger, views, staff, ada):
    blind = Principal("brightside", "no.one")

    with pytest.raises(PermissionDenied):
        timeline(ledger, views, blind, ada)


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"search": "   "}, "search"),
        ({"after": "yesterday"}, "after"),
        (
            {
                "since": datetime(2026, 2, 1, tzinfo=UTC),
                "until": datetime(2026, 1, 1, tzinfo=UTC),
            },
            "since",
        ),
    ],
)
def test_a_bad_filter_is_refused_with_a_sentence_naming_it(
    ledger, views, viewer, ada, filters, field
):
    with pytest.raises(InvalidCommand) as caught:
        timeline(ledger, views, viewer, ada, **filters)

    assert caught.value.field == field
    assert caught.value.message.endswith(".")
