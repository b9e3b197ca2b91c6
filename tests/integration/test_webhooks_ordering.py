"""Duplicated and reordered provider reports leave every message in one state."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.store import store_environment
from adapters.webhooks import sendgrid_report, twilio_status_report
from commands.application import Ledger
from commands.directory import register_company, upsert_customer
from commands.models import RegisterCompany, UpsertCustomer
from commands.tracking import SentLinker, record_reports
from ledger.message import Message
from ledger.suppression import Suppression
from ledger.values import Permission, Principal
from tests.integration.tracking_support import (
    queue_email,
    queue_sms,
    record_sent,
    sendgrid_events,
    twilio_form,
)

STAFF = Principal("brightside", "maria.lopez", frozenset(Permission))
SG_ID = "Qm7pXk2vT0eLh9sYw3RzAg"
TWILIO_SID = "SM7c1a4e9b2d5f48a3b6e0c2d8f1a7b4e9"


def fresh_ledger() -> Ledger:
    ledger = Ledger(env=store_environment("sqlite:///:memory:"))
    register_company(
        ledger,
        STAFF,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )
    upsert_customer(
        ledger,
        STAFF,
        UpsertCustomer(
            customer_id="c-ada",
            name="Ada Fernsby",
            email="ada.fernsby@example.com",
            cell_phone="+12015550116",
        ),
    )
    return ledger


def email_reports(message_id: uuid.UUID) -> list[Any]:
    events = sendgrid_events("events.json", message_id)
    events += sendgrid_events("bounce_and_consent.json", message_id)[:1]
    events[-1]["sg_message_id"] = events[0]["sg_message_id"]
    return [sendgrid_report(event) for event in events]


def sms_reports() -> list[Any]:
    forms = [
        dict(twilio_form("status_delivered.txt", MessageSid=TWILIO_SID)),
        dict(twilio_form("status_undelivered.txt", MessageSid=TWILIO_SID)),
        dict(
            twilio_form(
                "status_delivered.txt", MessageSid=TWILIO_SID, MessageStatus="sent"
            )
        ),
    ]
    return [twilio_status_report(form) for form in forms]


def replay(steps: list[int], batch: int = 1) -> tuple[Any, ...]:
    """Apply the steps (-1 records Sent, others a report) and read the outcome.

    Consecutive reports are recorded `batch` at a time, in one transaction,
    the way a SendGrid batch is.
    """
    ledger = fresh_ledger()
    email_id = queue_email(ledger, STAFF, "c-ada")
    sms_id = queue_sms(ledger, STAFF, "c-ada")
    reports = email_reports(email_id) + sms_reports()
    linker = SentLinker(ledger)
    pending: list[Any] = []

    def flush() -> None:
        linker.catch_up()
        record_reports(ledger, "brightside", pending)
        pending.clear()

    for step in steps:
        if step == -1:
            flush()
            record_sent(ledger, STAFF, email_id, "sendgrid", SG_ID)
            record_sent(ledger, STAFF, sms_id, "twilio", TWILIO_SID)
        else:
            pending.append(reports[step])
            if len(pending) >= batch:
                flush()
    flush()
    return outcome(ledger, email_id) + outcome(ledger, sms_id)


def outcome(ledger: Ledger, message_id: uuid.UUID) -> tuple[Any, ...]:
    message = ledger.repository.get(message_id)
    assert isinstance(message, Message)
    recorded = sorted(
        (type(event).__name__, getattr(event, "provider_event_id", None) or "")
        for event in ledger.events.get(message_id)
    )
    suppressions = sorted(
        address
        for address in ("old.address@example.net", "+12015550116")
        for channel in ("email", "sms")
        if (
            found := ledger.load(
                Suppression, Suppression.id_for("brightside", channel, address)
            )
        )
        is not None
        and found.active
    )
    return message.status, tuple(recorded), tuple(suppressions)


REPORTS = 8
EVERY_STEP = [-1, *range(REPORTS)]
IN_ORDER = replay(EVERY_STEP)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    order=st.permutations(EVERY_STEP),
    repeats=st.lists(st.sampled_from(EVERY_STEP), max_size=6),
    batch=st.integers(1, 4),
    data=st.data(),
)
def test_any_order_and_any_repeats_of_the_reports_give_the_same_state(
    order: list[int], repeats: list[int], batch: int, data: st.DataObject
) -> None:
    steps = list(order)
    for step in repeats:
        steps.insert(data.draw(st.integers(0, len(steps))), step)

    result = replay(steps, batch)

    assert result == IN_ORDER
