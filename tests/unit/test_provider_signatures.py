"""Provider signatures: Twilio's published example and SendGrid's ECDSA scheme."""

from __future__ import annotations

import base64

from adapters.webhooks import (
    twilio_signature,
    verify_sendgrid_signature,
    verify_twilio_signature,
)
from tests.integration.tracking_support import SendGridSigner

TWILIO_EXAMPLE_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_EXAMPLE_FORM = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]


def test_the_twilio_signature_matches_twilios_published_example() -> None:
    signature = twilio_signature("12345", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_FORM)

    assert signature == "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_the_twilio_signature_ignores_the_order_fields_arrive_in() -> None:
    shuffled = list(reversed(TWILIO_EXAMPLE_FORM))

    assert verify_twilio_signature(
        "12345", TWILIO_EXAMPLE_URL, shuffled, "GvWf1cFY/Q7PnoempGyD5oXAezc="
    )


def test_a_twilio_signature_from_another_token_fails() -> None:
    assert not verify_twilio_signature(
        "54321", TWILIO_EXAMPLE_URL, TWILIO_EXAMPLE_FORM, "GvWf1cFY/Q7PnoempGyD5oXAezc="
    )


def test_a_sendgrid_signature_covers_the_timestamp_and_the_raw_body() -> None:
    signer = SendGridSigner()
    body = b'[{"event":"delivered"}]'
    headers = signer.headers(body, timestamp=1764756126)
    signature = headers["X-Twilio-Email-Event-Webhook-Signature"]

    good = verify_sendgrid_signature(signer.public_key, signature, "1764756126", body)
    other_time = verify_sendgrid_signature(
        signer.public_key, signature, "1764756127", body
    )
    other_body = verify_sendgrid_signature(
        signer.public_key, signature, "1764756126", body + b" "
    )

    assert (good, other_time, other_body) == (True, False, False)


def test_garbage_keys_and_signatures_fail_instead_of_raising() -> None:
    signer = SendGridSigner()
    junk = base64.b64encode(b"not a key").decode()

    assert not verify_sendgrid_signature(junk, junk, "1", b"[]")
    assert not verify_sendgrid_signature(signer.public_key, "%%%", "1", b"[]")
