"""Twilio status callbacks: signed forms land on the right SMS once."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from commands.application import Ledger
from commands.delivery import get_message
from ledger.suppression import Suppression
from ledger.values import Channel, Principal, Status
from tests.integration.tracking_support import (
    TEST_URL,
    SendGridSigner,
    client_for,
    configure,
    queue_sms,
    record_sent,
    sqlite_only,
    store_position,
    twilio_form,
    twilio_headers,
)

PATH = "/webhooks/brightside/twilio/status"
DELIVERED_SID = "SM5f2b9c1e7a3d4f60b8e21c9a4d7f3e10"
UNDELIVERED_SID = "SM7c1a4e9b2d5f48a3b6e0c2d8f1a7b4e9"


@pytest.fixture
def configured(ledger: Ledger, staff: Principal, company: None) -> None:
    configure(ledger, staff, SendGridSigner())


def post_form(ledger: Ledger, form: list[tuple[str, str]], **options: object):
    headers = twilio_headers(TEST_URL + PATH, form)
    return client_for(ledger, **options).post(
        PATH, content=urlencode(form), headers=headers
    )


def test_a_delivered_callback_marks_the_sms_delivered(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    message_id = queue_sms(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "twilio", DELIVERED_SID)

    response = post_form(ledger, twilio_form("status_delivered.txt"))

    assert response.status_code == 200
    assert response.json()["state"] == "recorded"
    assert get_message(ledger, staff, str(message_id)).status == Status.DELIVERED


@sqlite_only
def test_a_bad_signature_is_refused_with_401_and_records_nothing(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    message_id = queue_sms(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "twilio", DELIVERED_SID)
    form = twilio_form("status_delivered.txt")
    headers = twilio_headers(TEST_URL + PATH, form)
    tampered = twilio_form("status_delivered.txt", MessageStatus="failed")
    before = store_position(ledger)

    response = client_for(ledger).post(
        PATH, content=urlencode(tampered), headers=headers
    )

    assert response.status_code == 401
    assert store_position(ledger) == before


@sqlite_only
def test_a_callback_without_a_status_is_refused_with_400_and_records_nothing(
    ledger: Ledger, configured: None
) -> None:
    form = [(k, v) for k, v in twilio_form("status_delivered.txt") if "Status" not in k]
    before = store_position(ledger)

    response = post_form(ledger, form)

    assert response.status_code == 400
    assert "MessageStatus" in response.json()["detail"]
    assert store_position(ledger) == before


def test_an_undelivered_landline_bounces_the_sms_and_suppresses_the_number(
    ledger: Ledger, staff: Principal, farid: str, configured: None
) -> None:
    message_id = queue_sms(ledger, staff, farid)
    record_sent(ledger, staff, message_id, "twilio", UNDELIVERED_SID)

    response = post_form(ledger, twilio_form("status_undelivered.txt"))

    message = get_message(ledger, staff, str(message_id))
    assert message.status == Status.BOUNCED
    assert response.json()["suppressed"] == "+12015550116"
    suppression = ledger.load(
        Suppression, Suppression.id_for("brightside", Channel.SMS, "+12015550116")
    )
    assert suppression is not None and suppression.active


@sqlite_only
def test_the_signature_is_checked_against_the_public_url_behind_a_proxy(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    message_id = queue_sms(ledger, staff, ada)
    record_sent(ledger, staff, message_id, "twilio", DELIVERED_SID)
    form = twilio_form("status_delivered.txt")
    public = "https://ledger.brightside.example/hooks"
    headers = twilio_headers(public + PATH, form)

    response = client_for(ledger, public_url=public).post(
        PATH, content=urlencode(form), headers=headers
    )

    assert response.status_code == 200
    assert get_message(ledger, staff, str(message_id)).status == Status.DELIVERED


def test_a_callback_for_an_unsent_sms_is_parked_until_the_send_is_recorded(
    ledger: Ledger, staff: Principal, ada: str, configured: None
) -> None:
    message_id = queue_sms(ledger, staff, ada)
    early = post_form(ledger, twilio_form("status_delivered.txt"))
    record_sent(ledger, staff, message_id, "twilio", DELIVERED_SID)

    post_form(ledger, twilio_form("status_delivered.txt", MessageStatus="sent"))

    assert early.json()["state"] == "parked"
    assert get_message(ledger, staff, str(message_id)).status == Status.DELIVERED
