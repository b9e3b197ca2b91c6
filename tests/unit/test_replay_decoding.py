"""The replay's reader and fold give exactly what the library's mapper and fold give.

Histories are drawn at random: either kind of creation, provider events of
every kind for any attempt (repeats included), retries, replies, and provider
details holding anything JSON can carry and more (integers beyond 64 bits,
times, UUIDs and decimals at any depth, text that looks like the library's
typed values).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from commands.application import Ledger
from commands.decoding import EventReader
from commands.history import entry
from ledger.message import Message
from ledger.status import RETRYABLE

LEDGER = Ledger()
MAPPER = LEDGER.mapper
PROVIDER_EVENTS: dict[type[Message.ProviderEvent], dict[str, Any]] = {
    Message.Sent: {
        "provider_message_id": "<a1@mail.example>",
        "accepted": ["ada@example.com"],
        "refused": {"bob@example.com": "550 no such user"},
    },
    Message.Delivered: {"recipient": "ada@example.com"},
    Message.Opened: {"recipient": None, "machine": True},
    Message.Bounced: {
        "recipient": "ada@example.com",
        "hard": True,
        "status_code": "5.1.1",
        "diagnostic": 'said "no"\\',
    },
    Message.Failed: {"reason": "Connection refused\n\t", "permanent": False},
}

LOOKALIKES = [
    '"_type_"',
    '\\"_type_\\"',
    "_data_",
    "datetime_iso",
    "\\u005f",
    "é\u2028",
    "attempt",
    'x"attempt',
    '"attempt":7',
]
words = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(LOOKALIKES)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | words
    | st.uuids()
    | st.datetimes(timezones=st.just(UTC))
    | st.decimals(allow_nan=False, allow_infinity=False)
)
details = st.dictionaries(
    words,
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(words, inner, max_size=3)
            | st.fixed_dictionaries({"_type_": words, "_data_": inner})
        ),
        max_leaves=8,
    ),
    max_size=4,
)
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("provider"),
            st.sampled_from(sorted(PROVIDER_EVENTS, key=lambda c: c.__name__)),
            st.integers(0, 2),
            st.sampled_from([None, "sg-1", "sg-2"]),
            details,
        ),
        st.tuples(st.just("retry")),
        st.tuples(st.just("reply"), st.booleans()),
    ),
    max_size=8,
)


def created(inbound: bool, subject: str) -> Message:
    common: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": "brightside",
        "customer_id": "c-ada",
        "occurred_at": datetime(2026, 3, 1, 17, 0, tzinfo=UTC),
        "channel": "email",
        "to": ["ada@example.com"],
        "cc": [],
        "subject": subject,
        "text": f"Hello Ada,\n{subject}",
        "html": None,
        "attachments": [{"name": "x-ray.pdf", "size": 12}],
        "sent_by": {"user_id": "maria.lopez", "trigger": None},
    }
    if inbound:
        return Message._create(
            Message.Received,
            sender="ada@example.com",
            provider="smtp",
            provider_message_id="<r1@mail.example>",
            in_reply_to=None,
            auto_reply=False,
            headers={"X-Mailer": "Mail"},
            **common,
        )
    return Message._create(
        Message.Queued,
        direction="outbound",
        category="transactional",
        sender="office@brightside.example",
        bcc=["audit@brightside.example"],
        template_id="recall",
        template_version=2,
        merge_values={"name": "Ada"},
        idempotency_key=None,
        fingerprint="f1",
        sms_encoding=None,
        sms_segments=None,
        resend_of=None,
        **common,
    )


def history(inbound: bool, subject: str, plan: list[tuple[Any, ...]]) -> list[Any]:
    """The events of one message that went through `plan`."""
    message = created(inbound, subject)
    moment = datetime(2026, 3, 1, 18, 0, tzinfo=UTC)
    for step in plan:
        if step[0] == "provider":
            _, kind, ahead, event_id, detail = step
            message.record_provider_event(
                kind,
                occurred_at=moment,
                attempt=message.current_attempt + ahead,
                provider="sendgrid",
                provider_event_id=event_id,
                detail=detail,
                **PROVIDER_EVENTS[kind],
            )
        elif step[0] == "retry" and not inbound and message.status in RETRYABLE:
            message.retry({"user_id": "maria.lopez", "trigger": None}, moment)
        elif step[0] == "reply":
            reply = created(True, "Re: " + subject)
            reply.auto_reply = step[1]
            message.add_reply(reply, moment)
    return list(message.collect_events())


def library_fold(events: list[Any]) -> Any:
    """The library's own fold: its Created.mutate, then each event's mutate."""
    message = Aggregate.Created.mutate(events[0], None)
    for event in events[1:]:
        message = event.mutate(message)
    return message


def assert_same_object(expected: Any, actual: Any) -> None:
    assert type(actual) is type(expected)
    assert vars(actual) == vars(expected)
    assert list(vars(actual)) == list(vars(expected))


def outcome(read: Any, stored: StoredEvent) -> Any:
    """The event read, or the error raised in its place, as text."""
    try:
        return read(stored)
    except Exception as error:
        return f"{type(error).__name__}: {error}"


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), words, steps)
def test_each_event_reads_back_as_the_library_reads_it(
    inbound: bool, subject: str, plan: list[tuple[Any, ...]]
) -> None:
    reader = EventReader(MAPPER)
    for event in history(inbound, subject, plan):
        stored = MAPPER.to_stored_event(event)

        read = outcome(reader, stored)

        expected = outcome(MAPPER.to_domain_event, stored)
        if isinstance(expected, str):
            assert read == expected
        else:
            assert_same_object(expected, read)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), words, steps)
def test_a_message_folds_to_the_same_state_as_the_library_folds_it(
    inbound: bool, subject: str, plan: list[tuple[Any, ...]]
) -> None:
    stored = [MAPPER.to_stored_event(e) for e in history(inbound, subject, plan)]
    reader = EventReader(MAPPER)
    assume(all(not isinstance(outcome(reader, s), str) for s in stored))
    expected = library_fold([MAPPER.to_domain_event(s) for s in stored])

    folded: Message | None = None
    for event in map(reader, stored):
        folded = event.mutate(folded)

    assert_same_object(expected, folded)


def test_a_creation_event_makes_its_message_as_the_library_makes_it() -> None:
    for inbound in (False, True):
        event = history(inbound, "Your appointment", [])[0]

        message = event.mutate(None)

        assert_same_object(Aggregate.Created.mutate(event, None), message)


def test_typed_values_below_the_top_level_take_the_library_path() -> None:
    detail = {
        "at": datetime(2026, 3, 1, tzinfo=UTC),
        "ids": [uuid.UUID(int=5)],
        "amount": Decimal("1.10"),
        "big": 2**70,
        "note": 'a "_type_" in text',
    }
    events = history(False, "Cleaning", [("provider", Message.Sent, 0, None, detail)])
    stored = MAPPER.to_stored_event(events[1])

    read = EventReader(MAPPER)(stored)

    assert read.detail == detail
    assert type(read.detail["big"]) is int
    assert_same_object(MAPPER.to_domain_event(stored), read)


def test_a_history_entry_shows_the_event_fields_without_the_bookkeeping() -> None:
    event = history(False, "Cleaning", [])[0]

    shown = entry(event)

    hidden = {"originator_id", "originator_version", "timestamp", "originator_topic"}
    assert shown.fields == {
        k: v for k, v in vars(event).items() if k not in {*hidden, "occurred_at"}
    }
    assert (shown.version, shown.event) == (1, "Queued")
    assert (shown.recorded_at, shown.occurred_at) == (
        event.timestamp,
        event.occurred_at,
    )
