"""One-click unsubscribe (RFC 8058), from the link in a real email to the send refused.

The marketing email goes through the SMTP provider to a real SMTP server; the
link is taken from the List-Unsubscribe header of what that server received,
and followed as a mail client or a person does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from adapters.dispatcher import WorkerOptions, dispatch_policy, email_provider
from adapters.http import WebSettings, create_app
from adapters.http.unsubscribe import link_path
from adapters.outbox import JsonLinesSmsOutbox
from adapters.wiring import Settings
from commands.application import Ledger
from commands.dispatch import Dispatcher
from commands.models import SendMessage
from commands.send import send_message
from commands.suppressions import ONE_CLICK_SOURCE
from ledger.errors import LedgerError, RecipientSuppressed
from ledger.suppression import ALL, MARKETING, Suppression
from ledger.values import Channel, Principal
from tests.integration.smtp_sink import Sink, smtp_server

ADA = "ada.fernsby@example.com"
UNSUBSCRIBE_URL = "https://brightside.example/unsubscribe"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
LINK = re.compile(r"<(https://[^>]+)>")


def settings_for(port: int, tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "LEDGER_HOME": str(tmp_path),
            "LEDGER_SMTP_URL": f"smtp://127.0.0.1:{port}?tls=none",
            "LEDGER_REPLY_SECRET": "brightside reply secret, long and random",
            "LEDGER_UNSUBSCRIBE_URL": UNSUBSCRIBE_URL,
        }
    )


def newsletter(ada: str, **fields: object) -> SendMessage:
    command = {
        "customer_id": ada,
        "channel": "email",
        "subject": "Spring whitening offer",
        "body": "Book before May for 20% off.",
        "category": "marketing",
    }
    return SendMessage.model_validate({**command, **fields})


def dispatch(ledger: Ledger, settings: Settings, tmp_path: Path) -> None:
    dispatcher = Dispatcher(
        ledger,
        email_provider(settings),
        JsonLinesSmsOutbox(tmp_path / "sms.jsonl"),
        dispatch_policy(settings, WorkerOptions(first_backoff=0.01)),
    )

    async def go() -> None:
        try:
            await dispatcher.drain()
        finally:
            await dispatcher.email.close()

    asyncio.run(go())


@pytest.fixture
def mailed(
    ledger: Ledger, staff: Principal, ada: str, tmp_path: Path
) -> Iterator[tuple[Settings, Sink]]:
    """A newsletter and an appointment note to Ada, sent over SMTP."""
    send_message(ledger, staff, newsletter(ada))
    send_message(ledger, staff, newsletter(ada, category="transactional"))
    sink = Sink()
    with smtp_server(sink) as port:
        settings = settings_for(port, tmp_path)
        dispatch(ledger, settings, tmp_path)
        yield settings, sink


@pytest.fixture
def site(ledger: Ledger, mailed: tuple[Settings, Sink]) -> Iterator[TestClient]:
    """The served app with the providers' routes, as `ledger serve` mounts them."""
    settings, _ = mailed
    app = create_app(ledger, WebSettings(session_secret=b"u" * 64), providers=settings)
    with TestClient(app, follow_redirects=False) as client:
        yield client


def one_click_path(sink: Sink) -> str:
    """The path of the one-click link in the marketing email the server received."""
    [marketing] = [r for r in sink.received if "List-Unsubscribe" in r.message]
    assert marketing.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = LINK.search(str(marketing.message["List-Unsubscribe"]))
    assert found is not None
    url = urlsplit(found[1])
    assert f"{url.scheme}://{url.netloc}" == "https://brightside.example"
    return url.path


def suppression_of(
    ledger: Ledger, address: str, scope: str = MARKETING
) -> Suppression | None:
    return ledger.load(
        Suppression, Suppression.id_for("brightside", Channel.EMAIL, address, scope)
    )


def events_in(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def test_the_one_click_post_stops_marketing_to_the_recipient_but_not_receipts(
    site, ledger, staff, ada, mailed
):
    _, sink = mailed
    path = one_click_path(sink)

    answer = site.post(path, data=ONE_CLICK)

    assert answer.status_code == 200
    assert "Unsubscribed" in answer.text
    assert ADA in answer.text
    suppression = suppression_of(ledger, ADA)
    assert suppression is not None and suppression.active
    [added] = ledger.events.get(suppression.id)
    assert isinstance(added, Suppression.Added)
    assert added.source == ONE_CLICK_SOURCE
    assert "one-click link" in added.reason
    assert added.scope == MARKETING
    assert suppression_of(ledger, ADA, ALL) is None
    with pytest.raises(RecipientSuppressed):
        send_message(ledger, staff, newsletter(ada, subject="Summer offer"))
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=ada,
            channel=Channel.EMAIL,
            subject="Your receipt",
            body="Thank you for your payment.",
        ),
    )
    assert receipt.created


def test_posting_the_link_again_records_nothing_more(site, ledger, mailed):
    path = one_click_path(mailed[1])
    site.post(path, data=ONE_CLICK)
    before = events_in(ledger)

    again = site.post(path, files={"List-Unsubscribe": (None, "One-Click")})
    opened = site.get(path)

    assert again.status_code == 200
    assert events_in(ledger) == before
    assert "Unsubscribed" in opened.text
    assert "<form" not in opened.text


def test_opening_the_link_asks_to_confirm_and_records_nothing(site, ledger, mailed):
    path = one_click_path(mailed[1])
    before = events_in(ledger)

    page = site.get(path)

    assert page.status_code == 200
    assert '<form method="post">' in page.text
    assert 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert "Brightside Dental will send no more marketing email to" in page.text
    assert events_in(ledger) == before
    assert suppression_of(ledger, ADA) is None


def test_a_tampered_or_foreign_token_is_refused_and_suppresses_nobody(
    site, ledger, mailed
):
    path = one_click_path(mailed[1])
    base, _, token = path.rpartition("/")
    message_hex, _, mac = token.partition(".")
    wrong_mac = f"{base}/{message_hex}.{'0' * len(mac)}"
    other_message = f"{base}/{'ab' * 16}.{mac}"
    [note] = [r for r in mailed[1].received if "List-Unsubscribe" not in r.message]
    reply_token = str(note.message["Reply-To"]).partition("+")[2].partition("@")[0]
    before = events_in(ledger)

    answers = [
        site.post(wrong_mac, data=ONE_CLICK),
        site.post(other_message, data=ONE_CLICK),
        site.post(f"{base}/not-a-token", data=ONE_CLICK),
        site.post(f"{base}/{reply_token}", data=ONE_CLICK),
        site.get(wrong_mac),
    ]

    assert [a.status_code for a in answers] == [404] * 5
    assert all("This link does not work" in a.text for a in answers)
    assert events_in(ledger) == before


def test_a_post_without_the_one_click_body_changes_nothing(site, ledger, mailed):
    path = one_click_path(mailed[1])
    before = events_in(ledger)

    answer = site.post(path, data={"List-Unsubscribe": "yes please"})

    assert answer.status_code == 400
    assert "List-Unsubscribe=One-Click" in answer.text
    assert events_in(ledger) == before


def test_the_links_are_answered_at_the_configured_path() -> None:
    assert link_path(None) == "/unsubscribe"
    assert link_path("https://mail.brightside.example/u/") == "/u"
    with pytest.raises(LedgerError, match="has no path"):
        link_path("https://brightside.example")
