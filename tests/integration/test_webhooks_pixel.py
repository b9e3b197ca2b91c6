"""The open-tracking pixel: a signed URL per attempt that records Opened once."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from adapters.webhooks import PIXEL, open_pixel_url
from commands.application import Ledger
from commands.delivery import get_message
from ledger.message import Message
from ledger.values import Principal, Status
from tests.integration.tracking_support import (
    TEST_URL,
    SendGridSigner,
    client_for,
    configure,
    queue_email,
    sqlite_only,
    store_position,
)

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15"


def pixel_path(ledger: Ledger, staff: Principal, message_id: uuid.UUID) -> str:
    settings = configure(ledger, staff, SendGridSigner(), open_tracking=True)
    url = open_pixel_url(TEST_URL, "brightside", message_id, 1, settings.secret)
    return urlsplit(url).path


def opens(ledger: Ledger, message_id: uuid.UUID) -> list[Message.Opened]:
    return [e for e in ledger.events.get(message_id) if isinstance(e, Message.Opened)]


def test_loading_the_pixel_records_one_open_however_often_it_loads(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    path = pixel_path(ledger, staff, sent)
    client = client_for(ledger)

    first = client.get(path, headers={"User-Agent": BROWSER})
    client.get(path, headers={"User-Agent": BROWSER})

    assert first.status_code == 200
    assert first.content == PIXEL
    assert first.headers["content-type"] == "image/gif"
    assert [o.machine for o in opens(ledger, sent)] == [False]
    assert get_message(ledger, staff, str(sent)).status == Status.OPENED


@sqlite_only
def test_a_privacy_proxy_fetch_is_marked_as_a_machine_open(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    path = pixel_path(ledger, staff, sent)

    client_for(ledger).get(path, headers={"User-Agent": "Mozilla/5.0"})

    assert [o.machine for o in opens(ledger, sent)] == [True]


@sqlite_only
def test_a_tampered_pixel_still_answers_but_records_nothing(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    path = pixel_path(ledger, staff, sent)
    before = store_position(ledger)

    response = client_for(ledger).get(path.replace(".1.", ".2."))

    assert response.content == PIXEL
    assert store_position(ledger) == before


def test_with_tracking_off_the_pixel_records_nothing(
    ledger: Ledger, staff: Principal, ada: str
) -> None:
    sent = queue_email(ledger, staff, ada)
    path = pixel_path(ledger, staff, sent)
    configure(ledger, staff, SendGridSigner(), open_tracking=False)
    before = store_position(ledger)

    client_for(ledger).get(path, headers={"User-Agent": BROWSER})

    assert store_position(ledger) == before
