"""Dispatch rules that need no store: partitions, reasons, composed emails."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy

import pytest

from adapters.smtp import compose_email
from adapters.workers import parse_partition
from commands.dispatch import Partition, failure_reason
from commands.ports import OutcomeKind, OutgoingEmail, SendOutcome
from ledger.errors import InvalidCommand, LedgerError


def test_partitions_of_one_count_share_every_message_exactly_once() -> None:
    halves = [Partition(0, 3), Partition(1, 3), Partition(2, 3)]
    ids = [uuid.uuid4() for _ in range(300)]

    owners = [[p for p in halves if p.owns(i)] for i in ids]

    assert all(len(found) == 1 for found in owners)
    assert {p.tracking_name for p in halves} == {
        "dispatch-0-of-3",
        "dispatch-1-of-3",
        "dispatch-2-of-3",
    }


@pytest.mark.parametrize(("index", "count"), [(2, 2), (-1, 2), (0, 0)])
def test_partition_outside_its_count_is_refused(index: int, count: int) -> None:
    with pytest.raises(InvalidCommand, match="does not exist"):
        Partition(index, count)


@pytest.mark.parametrize("text", ["1", "a/2", "1/", "/2"])
def test_partition_option_must_read_index_slash_count(text: str) -> None:
    with pytest.raises(LedgerError, match="INDEX/COUNT"):
        parse_partition(text)


def test_transient_failure_reason_says_a_later_retry_may_help() -> None:
    outcome = SendOutcome(OutcomeKind.TRANSIENT, "smtp", "The server answered 451.")

    reason = failure_reason(outcome, 4)

    assert (
        reason
        == "The server answered 451. Gave up after 4 tries; retry the message later."
    )


def test_unknown_outcome_reason_warns_that_it_may_have_arrived() -> None:
    outcome = SendOutcome(OutcomeKind.UNKNOWN, "twilio", "No answer in time.")

    reason = failure_reason(outcome, 2)

    assert "unknown whether the last of 2 tries was delivered" in reason


def test_composed_email_keeps_bcc_out_of_the_headers_unless_asked() -> None:
    message_id = uuid.uuid4()
    email = OutgoingEmail(
        message_id=message_id,
        attempt=3,
        message_id_header=f"<{message_id}.3@reply.brightside.example>",
        sender="office@brightside.example",
        to=("ada.fernsby@example.com",),
        bcc=("records@brightside.example",),
        subject="Statement",
        text="Attached.",
        automated=True,
    )

    sent = message_from_bytes(compose_email(email), policy=policy.default)
    kept = message_from_bytes(
        compose_email(email, with_bcc=True), policy=policy.default
    )

    assert sent["Bcc"] is None
    assert kept["Bcc"] == "records@brightside.example"
    assert sent["Message-ID"] == f"<{message_id}.3@reply.brightside.example>"
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sent["Reply-To"] is None
