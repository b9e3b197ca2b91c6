"""The status fold does not depend on the order provider events arrive in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidTransition
from ledger.message import Message
from ledger.values import Status

NOW = datetime(2026, 6, 3, 9, 30, tzinfo=UTC)

OUTCOMES: dict[str, tuple[type[Message.ProviderEvent], dict[str, Any]]] = {
    "sent": (
        Message.Sent,
        {"provider_message_id": "pm-1", "accepted": [], "refused": {}},
    ),
    "delivered": (Message.Delivered, {"recipient": None}),
    "opened": (Message.Opened, {"recipient": None, "machine": False}),
    "bounced": (
        Message.Bounced,
        {"recipient": None, "hard": True, "status_code": "5.1.1", "diagnostic": "x"},
    ),
    "failed": (Message.Failed, {"reason": "refused", "permanent": True}),
}


def queued_message() -> Message:
    return Message._create(
        Message.Queued,
        id=uuid.uuid4(),
        tenant_id="brightside",
        customer_id="c-ada",
        occurred_at=NOW,
        direction="outbound",
        channel="email",
        category="transactional",
        sender="office@brightside.example",
        to=["ada.fernsby@example.com"],
        cc=[],
        bcc=[],
        subject="Your visit",
        text="See you soon.",
        html=None,
        template_id=None,
        template_version=None,
        merge_values={},
        attachments=[],
        sent_by={"user_id": "maria.lopez", "trigger": None},
        idempotency_key=None,
        fingerprint="",
        sms_encoding=None,
        sms_segments=None,
        resend_of=None,
    )


def report(message: Message, outcome: str, event_id: str, attempt: int = 1) -> bool:
    event_class, fields = OUTCOMES[outcome]
    return message.record_provider_event(
        event_class,
        attempt=attempt,
        occurred_at=NOW,
        provider="sendgrid",
        provider_event_id=event_id,
        detail={},
        **fields,
    )


def status_after(reports: list[tuple[str, str]]) -> Status:
    message = queued_message()
    for outcome, event_id in reports:
        report(message, outcome, event_id)
    return message.status


provider_reports = st.lists(
    st.tuples(st.sampled_from(sorted(OUTCOMES)), st.sampled_from(["e1", "e2", "e3"])),
    max_size=8,
).map(lambda pairs: [(o, f"{o}-{e}") for o, e in pairs])


@given(provider_reports, st.randoms())
def test_every_permutation_of_the_same_events_yields_the_same_status(reports, rng):
    shuffled = list(reports)
    rng.shuffle(shuffled)

    assert status_after(shuffled) == status_after(reports)


@given(provider_reports)
def test_repeating_every_event_changes_nothing(reports):
    assert status_after(reports + reports) == status_after(reports)


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        (["opened"], Status.OPENED),
        (["delivered", "sent"], Status.DELIVERED),
        (["delivered", "bounced"], Status.BOUNCED),
        (["bounced", "delivered"], Status.BOUNCED),
        (["delivered", "opened", "bounced"], Status.OPENED),
        (["failed", "sent"], Status.FAILED),
        (["sent"], Status.SENT),
        ([], Status.QUEUED),
    ],
)
def test_the_fold_ranks_outcomes(outcomes, expected):
    assert status_after([(o, f"{o}-1") for o in outcomes]) == expected


def test_a_duplicate_provider_event_is_not_recorded_twice():
    message = queued_message()
    report(message, "delivered", "sg-1")

    appended = report(message, "delivered", "sg-1")

    assert appended is False
    assert message.version == 2


def test_a_retry_starts_a_new_attempt_and_keeps_the_old_one():
    message = queued_message()
    report(message, "failed", "f-1")

    attempt = message.retry({"user_id": "maria.lopez", "trigger": None}, NOW)
    report(message, "failed", "f-1-late")

    assert attempt == 2
    assert message.status == Status.RETRIED
    assert message.attempts[1].status == Status.FAILED


def test_a_late_event_of_an_old_attempt_does_not_move_the_new_one():
    message = queued_message()
    report(message, "failed", "f-1")
    message.retry({"user_id": None, "trigger": None}, NOW)
    report(message, "sent", "s-2", attempt=2)

    report(message, "delivered", "d-1", attempt=1)

    assert message.status == Status.SENT
    assert message.current_attempt == 2


def test_only_failed_or_bounced_messages_can_be_retried():
    message = queued_message()
    report(message, "delivered", "d-1")

    with pytest.raises(InvalidTransition, match="only failed or bounced"):
        message.retry({"user_id": None, "trigger": None}, NOW)
