"""A catch-up's chunk decoding gives what decoding each event on its own gives."""

from __future__ import annotations

from typing import Any

from eventsourcing.utils import get_topic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.message import Message
from projections.log import LoggedEvent
from projections.runtime import EventDecoder, attempt_state
from projections.timeline import TimelineProjection
from tests.unit.test_replay_decoding import LEDGER, MAPPER, history, steps, words


def logged(events: list[Any], first: int) -> list[LoggedEvent]:
    """The events as the log reader hands them over, from position `first`."""
    rows = []
    for position, event in enumerate(events, start=first):
        stored = MAPPER.to_stored_event(event)
        rows.append(
            (
                position,
                str(stored.originator_id),
                stored.originator_version,
                stored.topic,
                stored.state,
            )
        )
    return rows


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), words, steps), min_size=1, max_size=4))
def test_a_chunk_decodes_as_its_events_do_one_by_one(
    messages: list[tuple[bool, str, list[tuple[Any, ...]]]],
) -> None:
    events = [e for one in messages for e in history(*one)]
    chunk = logged(events, first=7)
    decode = EventDecoder(LEDGER, TimelineProjection.attempt_only)
    expected = [EventDecoder(LEDGER)(one) for one in chunk]

    decoded = decode.decode_all(chunk)

    assert [e[:4] for e in decoded] == [e[:4] for e in expected]
    for event, full in zip(decoded, expected, strict=True):
        if event.topic in TimelineProjection.attempt_only and event.state != full.state:
            assert event.state == {"attempt": full.state["attempt"]}
        else:
            assert event.state == full.state


BOUNCED = get_topic(Message.Bounced)


def test_a_state_orjson_refuses_is_read_as_the_library_wrote_it() -> None:
    """The library's encoder writes a non-finite float as `Infinity`."""
    state = b'{"timestamp":1,"attempt":1,"detail":{"score":Infinity},"provider":"x"}'
    [event] = EventDecoder(LEDGER).decode_all(
        [(1, "9587d1d1-219a-40af-9e83-48e40b570eac", 2, BOUNCED, state)]
    )

    assert event.state["detail"]["score"] == float("inf")


def state_of(**fields: Any) -> bytes:
    return MAPPER.transcoder.encode({"timestamp": 1, **fields, "provider": "smtp"})


def test_the_attempt_is_read_from_the_bytes_only_where_that_is_exact() -> None:
    assert attempt_state(state_of(attempt=2, detail={})) == {"attempt": 2}
    assert attempt_state(state_of(detail={"x": '"attempt":7'}, attempt=3)) == {
        "attempt": 3
    }
    for unclear in (
        state_of(attempt=2, detail={"attempt": 1}),
        state_of(attempt=2, detail={'x"attempt': 1}),
        state_of(attempt=2, class_version=2),
        state_of(attempt="2"),
        state_of(attempt=2.0),
        state_of(attempt=-1),
        state_of(attempt=10**12),
    ):
        assert attempt_state(unclear) is None
