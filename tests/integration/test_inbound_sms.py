"""Inbound SMS: threaded by the pair of numbers; STOP, START and HELP obeyed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from commands.application import Ledger
from commands.delivery import get_message
from commands.history import customer_messages
from commands.models import SendMessage
from commands.opt_out import HELP_TRIGGER, OPT_OUT_TRIGGER
from commands.send import send_message
from commands.threading import unmatched_inbound
from ledger.errors import RecipientSuppressed
from ledger.message import Message
from ledger.suppression import Suppression
from ledger.values import Channel, Direction, Principal, Status
from tests.integration.test_dispatch import dispatcher_for
from tests.integration.tracking_support import (
    TEST_URL,
    SendGridSigner,
    client_for,
    configure,
    queue_sms,
    sqlite_only,
    store_position,
    twilio_form,
    twilio_headers,
)

PATH = "/webhooks/brightside/twilio/sms"


@pytest.fixture
def configured(ledger: Ledger, staff: Principal, company: None) -> None:
    configure(ledger, staff, SendGridSigner())


def text_in(ledger: Ledger, body: str, sid: str = "SM2e8b4d1f6a9c43e7b5d0a2c8e6f1b4d3"):
    form = twilio_form("inbound_stop.txt", Body=body, MessageSid=sid, SmsSid=sid)
    headers = twilio_headers(TEST_URL + PATH, form)
    return client_for(ledger).post(PATH, content=urlencode(form), headers=headers)


def automatic_replies(ledger: Ledger, staff: Principal, trigger: str) -> list[Message]:
    return [
        message
        for message in customer_messages(ledger, staff, "c-ada")
        if message.direction == Direction.OUTBOUND
        and message.sent_by.get("trigger") == trigger
    ]


def sms_suppression(ledger: Ledger) -> Suppression | None:
    return ledger.load(
        Suppression, Suppression.id_for("brightside", Channel.SMS, "+12015550111")
    )


def test_a_reply_is_threaded_under_the_latest_sms_between_the_two_numbers(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    queue_sms(ledger, staff, ada)
    latest = queue_sms(ledger, staff, ada)

    response = text_in(ledger, "See you Tuesday!")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    answered = get_message(ledger, staff, str(latest))
    assert len(answered.replies) == 1
    reply = get_message(ledger, staff, answered.replies[0])
    assert reply.text == "See you Tuesday!"
    assert reply.in_reply_to == str(latest)


def test_stop_suppresses_the_number_and_queues_exactly_one_confirmation(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    queue_sms(ledger, staff, ada)

    text_in(ledger, "Stop.")
    text_in(ledger, "Stop.")
    text_in(ledger, "STOP", sid="SM9a8b7c6d5e4f43a2b1c0d9e8f7a6b5c4")

    suppression = sms_suppression(ledger)
    assert suppression is not None and suppression.active
    confirmations = automatic_replies(ledger, staff, OPT_OUT_TRIGGER)
    assert len(confirmations) == 1
    assert "START" in confirmations[0].text


def test_start_lifts_the_suppression(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    text_in(ledger, "unsubscribe")

    text_in(ledger, "Start", sid="SM1f2e3d4c5b6a47980a1b2c3d4e5f6a7b")

    suppression = sms_suppression(ledger)
    assert suppression is not None and not suppression.active


def test_help_is_answered_with_the_companys_help_text(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    text_in(ledger, "help")

    answers = automatic_replies(ledger, staff, HELP_TRIGGER)
    assert [a.text for a in answers] == [
        "Brightside Dental: call 201-555-0100. Reply STOP to opt out."
    ]


@sqlite_only
def test_a_sentence_containing_cancel_is_an_ordinary_reply(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    text_in(ledger, "Cancel my appointment please")

    assert sms_suppression(ledger) is None


def test_an_sms_from_an_unknown_number_goes_to_the_unmatched_list(
    ledger: Ledger, staff: Principal, configured: None
) -> None:
    text_in(ledger, "Who is this?")

    unmatched = unmatched_inbound(ledger, staff)
    assert [(u.sender, u.text) for u in unmatched] == [("+12015550111", "Who is this?")]


@sqlite_only
def test_a_bad_signature_records_nothing(ledger: Ledger, configured: None) -> None:
    form = twilio_form("inbound_stop.txt")
    headers = twilio_headers(TEST_URL + "/elsewhere", form)
    before = store_position(ledger)

    response = client_for(ledger).post(PATH, content=urlencode(form), headers=headers)

    assert response.status_code == 401
    assert store_position(ledger) == before


def test_after_stop_no_number_of_the_company_may_text_the_customer(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    text_in(ledger, "STOP")

    with pytest.raises(RecipientSuppressed):
        send_message(
            ledger,
            staff,
            SendMessage(customer_id=ada, channel="sms", body="Still there?"),
        )


@sqlite_only
def test_a_form_without_a_sender_is_refused_with_400_and_records_nothing(
    ledger: Ledger, configured: None
) -> None:
    form = [(k, v) for k, v in twilio_form("inbound_stop.txt") if k != "From"]
    headers = twilio_headers(TEST_URL + PATH, form)
    before = store_position(ledger)

    response = client_for(ledger).post(PATH, content=urlencode(form), headers=headers)

    assert response.status_code == 400
    assert store_position(ledger) == before


def test_after_stop_only_the_confirmation_reaches_the_number(
    ledger: Ledger, staff: Principal, ada: str, configured: None, tmp_path: Path
) -> None:
    reminder = queue_sms(ledger, staff, ada)
    text_in(ledger, "STOP")

    asyncio.run(dispatcher_for(ledger, tmp_path).drain())

    [confirmation] = automatic_replies(ledger, staff, OPT_OUT_TRIGGER)
    assert get_message(ledger, staff, str(confirmation.id)).status == Status.SENT
    assert get_message(ledger, staff, str(reminder)).status == Status.FAILED
    [line] = (tmp_path / "sms.jsonl").read_text().splitlines()
    assert json.loads(line)["id"] == f"{confirmation.id}.1"
