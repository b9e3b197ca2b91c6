"""Reporting counts and rates per template, customer type, channel and day."""

from __future__ import annotations

from typing import Any

import pytest

from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.directory import upsert_customer
from commands.inbound import record_inbound
from commands.models import (
    RecordDeliveryEvent,
    RecordInbound,
    SaveTemplate,
    SendMessage,
    UpsertCustomer,
)
from commands.send import send_message
from commands.templates import save_template
from ledger.errors import InvalidCommand, PermissionDenied
from ledger.values import Channel, Principal
from projections.catalog import projection_named
from projections.reporting import delivery_report, report_csv
from projections.runtime import ProjectionRunner


@pytest.fixture
def recall(ledger: Ledger, staff: Principal, company: None) -> str:
    save_template(
        ledger,
        staff,
        SaveTemplate(
            template_id="recall",
            channel=Channel.EMAIL,
            subject="Time for your check-up",
            body="Hello, it is time to book your visit.",
        ),
    )
    return "recall"


def send(ledger: Ledger, staff: Principal, customer: str, **fields: Any) -> str:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(customer_id=customer, channel=Channel.EMAIL, **fields),
    )
    return str(receipt.message_id)


def report(
    ledger: Ledger, staff: Principal, message_id: str, outcome: str, **fields: Any
) -> None:
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=message_id, outcome=outcome, provider="sendgrid", **fields
        ),
    )


def reported(ledger, views, principal, name):
    ProjectionRunner(ledger, views, projection_named("reporting")).catch_up()
    return delivery_report(views, principal, name)


def test_a_template_version_counts_each_stage_and_its_rate(
    ledger, views, staff, viewer, ada, recall
):
    delivered = send(ledger, staff, ada, template_id=recall)
    report(ledger, staff, delivered, "delivered")
    opened = send(ledger, staff, ada, template_id=recall)
    report(ledger, staff, opened, "opened")
    bounced = send(ledger, staff, ada, template_id=recall)
    report(ledger, staff, bounced, "delivered")
    report(ledger, staff, bounced, "bounced")
    send(ledger, staff, ada, template_id=recall)
    record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel=Channel.EMAIL,
            sender="ada.fernsby@example.com",
            body="Booked!",
            in_reply_to=opened,
        ),
    )

    rows = reported(ledger, views, viewer, "templates")

    assert rows == [
        {
            "template": "recall",
            "version": 1,
            "queued": 4,
            "sent": 3,
            "delivered": 2,
            "opened": 1,
            "bounced": 1,
            "failed": 0,
            "replied": 1,
            "sent_rate": 0.75,
            "delivered_rate": 0.5,
            "opened_rate": 0.25,
            "bounced_rate": 0.25,
            "failed_rate": 0.0,
            "replied_rate": 0.25,
        }
    ]


def test_reply_rate_is_grouped_by_the_customers_current_type(
    ledger, views, staff, viewer, ada
):
    answered = send(ledger, staff, ada, subject="Hello", body="Any questions?")
    send(ledger, staff, ada, subject="Hello again", body="Still here.")
    record_inbound(
        ledger,
        staff,
        RecordInbound(
            customer_id=ada,
            channel=Channel.EMAIL,
            sender="ada.fernsby@example.com",
            body="One question.",
            in_reply_to=answered,
        ),
    )
    upsert_customer(
        ledger,
        staff,
        UpsertCustomer(
            customer_id=ada,
            name="Ada Fernsby",
            customer_type="business",
            email="ada.fernsby@example.com",
        ),
    )

    rows = reported(ledger, views, viewer, "customer-types")

    assert [(r["customer_type"], r["queued"], r["replied_rate"]) for r in rows] == [
        ("business", 2, 0.5)
    ]


def test_the_funnel_is_split_by_channel_and_provider_and_exports_as_csv(
    ledger, views, staff, viewer, ada
):
    email = send(ledger, staff, ada, subject="Hello", body="Hi")
    report(ledger, staff, email, "delivered")
    send(ledger, staff, ada, subject="Unsent", body="Waiting")

    rows = reported(ledger, views, viewer, "funnel")
    text = report_csv(rows)

    assert [(r["channel"], r["provider"], r["queued"]) for r in rows] == [
        ("email", "none", 1),
        ("email", "sendgrid", 1),
    ]
    assert text.splitlines()[0].startswith("channel,provider,queued,sent,delivered")
    assert len(text.splitlines()) == 3


def test_daily_buckets_count_messages_by_the_day_they_occurred(
    ledger, views, staff, viewer, ada
):
    send(ledger, staff, ada, subject="One", body="1")
    send(ledger, staff, ada, subject="Two", body="2")

    rows = reported(ledger, views, viewer, "daily")

    assert len(rows) == 1
    assert rows[0]["queued"] == 2
    assert len(rows[0]["day"]) == 10


def test_an_unknown_report_is_refused_with_the_choices(ledger, views, viewer, ada):
    with pytest.raises(InvalidCommand) as caught:
        reported(ledger, views, viewer, "weekly")

    assert "templates, customer-types, funnel, daily" in caught.value.message


def test_reports_need_the_view_permission(ledger, views, ada):
    with pytest.raises(PermissionDenied):
        reported(ledger, views, Principal("brightside", "nobody"), "daily")


def test_a_report_arriving_after_the_message_was_projected_updates_its_row(
    ledger, views, staff, viewer, ada
):
    message_id = send(ledger, staff, ada, subject="Hello", body="Hi")
    reported(ledger, views, viewer, "funnel")

    report(ledger, staff, message_id, "opened")
    rows = reported(ledger, views, viewer, "funnel")

    assert [(r["provider"], r["delivered"], r["opened"]) for r in rows] == [
        ("sendgrid", 1, 1)
    ]
