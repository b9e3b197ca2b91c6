"""Message detail: recipients' own outcomes, attempts, status history, thread."""

from __future__ import annotations

from typing import Any

from commands.application import Ledger
from commands.delivery import record_delivery_event, retry_message
from commands.inbound import record_inbound
from commands.models import (
    RecordDeliveryEvent,
    RecordInbound,
    RetryMessage,
    SendMessage,
)
from commands.send import send_message
from ledger.values import Channel, Principal
from projections.catalog import projection_named
from projections.detail import message_detail
from projections.runtime import ProjectionRunner


def send(ledger: Ledger, staff: Principal, customer: str, **fields: Any) -> str:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=customer,
            channel=Channel.EMAIL,
            subject="Your visit",
            body="See you soon.",
            **fields,
        ),
    )
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


def test_each_recipient_has_its_own_outcome(ledger, views, staff, viewer, ada):
    message_id = send(ledger, staff, ada, cc=["kim@example.org", "lee@example.org"])
    report(
        ledger,
        staff,
        message_id,
        "sent",
        provider_message_id="<m1@brightside.example>",
        accepted=["ada.fernsby@example.com", "lee@example.org"],
        refused={"kim@example.org": "550 5.1.1 no such user"},
    )
    report(ledger, staff, message_id, "delivered", recipient="ada.fernsby@example.com")
    report(ledger, staff, message_id, "bounced", recipient="lee@example.org")

    detail = message_detail(ledger, views, viewer, message_id)

    assert detail.recipients == {
        "ada.fernsby@example.com": "delivered",
        "kim@example.org": "refused",
        "lee@example.org": "bounced",
    }


def test_each_attempt_keeps_its_provider_responses(ledger, views, staff, viewer, ada):
    message_id = send(ledger, staff, ada)
    report(
        ledger,
        staff,
        message_id,
        "failed",
        reason="timeout",
        permanent=False,
        detail={"smtp": "421 try later"},
    )
    retry_message(ledger, staff, RetryMessage(message_id=message_id))
    report(ledger, staff, message_id, "delivered")

    detail = message_detail(ledger, views, viewer, message_id)

    assert [(a.number, a.status) for a in detail.attempts] == [
        (1, "failed"),
        (2, "delivered"),
    ]
    assert detail.attempts[0].reports[0]["detail"] == {"smtp": "421 try later"}
    assert [step["status"] for step in detail.status_history] == [
        "queued",
        "failed",
        "retried",
        "delivered",
    ]


def test_the_detail_shows_the_thread_the_message_belongs_to(
    ledger, views, staff, viewer, ada
):
    message_id = send(ledger, staff, ada)
    reply = record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel=Channel.EMAIL,
            sender="ada.fernsby@example.com",
            body="Thanks, see you then.",
            in_reply_to=message_id,
        ),
    )
    ProjectionRunner(ledger, views, projection_named("timeline")).catch_up()

    detail = message_detail(ledger, views, viewer, str(reply))

    assert [row["message_id"] for row in detail.thread] == [message_id, str(reply)]
    assert detail.recipients == {"ada.fernsby@example.com": "received"}
