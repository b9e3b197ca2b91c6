"""The ledger's transcoder writes and reads exactly the library's JSON format."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from commands.encoding import LedgerTranscoder


def registered(transcoder: JSONTranscoder) -> JSONTranscoder:
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    return transcoder


LIBRARY = registered(JSONTranscoder())
LEDGER = registered(LedgerTranscoder())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.uuids()
    | st.datetimes(timezones=st.just(UTC))
    | st.decimals(allow_nan=False, allow_infinity=False)
)
states = st.dictionaries(
    st.text(),
    st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
        ),
        max_leaves=12,
    ),
    max_size=8,
)


@given(states)
def test_each_reads_what_the_other_wrote(state: dict[str, Any]) -> None:
    assert LEDGER.decode(LIBRARY.encode(state)) == LIBRARY.decode(LIBRARY.encode(state))
    assert LIBRARY.decode(LEDGER.encode(state)) == LIBRARY.decode(LIBRARY.encode(state))
    assert LEDGER.decode(LEDGER.encode(state)) == LIBRARY.decode(LIBRARY.encode(state))


def test_typed_values_keep_their_types() -> None:
    state = {
        "at": datetime(2026, 12, 3, 9, 30, tzinfo=UTC),
        "nested": {"ids": [uuid.UUID(int=7)], "amount": Decimal("12.50")},
        "looks_typed": {"_type_": "note", "other": 1},
    }
    decoded = LEDGER.decode(LEDGER.encode(state))
    assert decoded == state
    assert type(decoded["nested"]["ids"][0]) is uuid.UUID


def test_a_state_with_a_uuid_is_written_as_the_library_writes_it() -> None:
    state = {"reply_id": uuid.UUID(int=1), "at": datetime(2026, 1, 1, tzinfo=UTC)}
    assert LEDGER.encode(state) == LIBRARY.encode(state)
