"""Helpers for the provider-tracking tests: signed requests and sent messages."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.webhooks import provider_router, twilio_signature
from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.models import RecordDeliveryEvent, SendMessage
from commands.send import send_message
from commands.tracking import ConfigureProviderSettings, configure_provider_settings
from ledger.provider_settings import ProviderSettings
from ledger.values import Principal

FIXTURES = Path(__file__).parent.parent / "fixtures"
TWILIO_TOKEN = "f3b1c9e27d4a58b6c0e9d2a4f7b1c3e5"
INBOUND_TOKEN = "inbound-7Qm2pX9vT4eLh1sY"
REPLY_SECRET = b"reply-secret-for-tests-only"
TEST_URL = "http://testserver"


class SendGridSigner:
    """A key pair standing in for SendGrid's, signing as SendGrid does."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(
            stamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
                signature
            ).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }


def configure(
    ledger: Ledger, staff: Principal, signer: SendGridSigner, **changes: Any
) -> ProviderSettings:
    fields: dict[str, Any] = {
        "sendgrid_public_key": signer.public_key,
        "twilio_auth_token": TWILIO_TOKEN,
        "inbound_token": INBOUND_TOKEN,
        "sms_help_text": "Brightside Dental: call 201-555-0100. Reply STOP to opt out.",
    }
    fields.update(changes)
    return configure_provider_settings(
        ledger, staff, ConfigureProviderSettings(**fields)
    )


def client_for(ledger: Ledger, **options: Any) -> TestClient:
    app = FastAPI()
    app.include_router(provider_router(ledger, reply_secret=REPLY_SECRET, **options))
    return TestClient(app)


def queue_email(
    ledger: Ledger,
    staff: Principal,
    customer_id: str,
    to: str | None = None,
    subject: str = "Your appointment on Tuesday",
) -> uuid.UUID:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=customer_id,
            channel="email",
            to=to,
            subject=subject,
            body="Hello,\n\nThis is a reminder of your appointment on Tuesday at 3pm.",
        ),
    )
    return receipt.message_id


def queue_sms(ledger: Ledger, staff: Principal, customer_id: str) -> uuid.UUID:
    receipt = send_message(
        ledger,
        staff,
        SendMessage(
            customer_id=customer_id,
            channel="sms",
            body="Brightside Dental: your appointment is Tuesday at 3pm.",
        ),
    )
    return receipt.message_id


def record_sent(
    ledger: Ledger,
    staff: Principal,
    message_id: uuid.UUID,
    provider: str,
    provider_message_id: str,
) -> None:
    """Record Sent the way the dispatcher does: straight onto the message."""
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=str(message_id),
            outcome="sent",
            provider=provider,
            provider_event_id="dispatch-1",
            provider_message_id=provider_message_id,
        ),
    )


def sendgrid_events(name: str, message_id: uuid.UUID) -> list[dict[str, Any]]:
    text = (FIXTURES / "sendgrid" / name).read_text()
    events: list[dict[str, Any]] = json.loads(
        text.replace("@@MESSAGE_ID@@", str(message_id))
    )
    return events


def mail_fixture(name: str, **placeholders: str) -> bytes:
    raw = (FIXTURES / "mail" / name).read_bytes()
    for key, value in placeholders.items():
        raw = raw.replace(f"@@{key.upper()}@@".encode(), value.encode())
    return raw


def twilio_form(name: str, **changes: str) -> list[tuple[str, str]]:
    text = (FIXTURES / "twilio" / name).read_text().strip()
    form = dict(parse_qsl(text, keep_blank_values=True))
    form.update(changes)
    return list(form.items())


def twilio_headers(url: str, form: list[tuple[str, str]]) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, url, form),
    }


def store_position(ledger: Ledger) -> int:
    """How many events the store holds: a rejected request must not move it."""
    return ledger.recorder.max_notification_id() or 0


# For checks that end before the store is touched (signatures, malformed
# bodies): the backend cannot change their outcome, so one is enough.
sqlite_only = pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
