"""How stored events become the library's event objects, for reads of thousands.

`EventReader` gives exactly what the library's `mapper.to_domain_event` gives,
for about three quarters of its CPU, when the states are the library's plain
JSON (no cipher, no compressor): orjson parses the state where the library's
scanner would, and only the typed values at the top level of the state (an
event's times) are revived, through the transcoder's own transcodings.

Everything else takes the library's path, so the result never differs:

- a typed value anywhere but the top level, or a top-level one the library
  would not revive: the state spells out more `"_type_"` keys than were
  revived. Neither of the ledger's encoders (orjson, the library's JSON
  encoder) escapes an ASCII character, so every such key is in the bytes;
- a run of 19 or more digits: orjson reads an integer beyond 64 bits as a
  float, the library keeps it an int;
- anything orjson refuses (NaN, a lone surrogate, invalid UTF-8), which the
  library then decodes or refuses in its own words;
- an event class above version 1, or a state naming a `class_version`,
  whose upcasts the library runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    Transcoding,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

from commands.encoding import LedgerTranscoder

# Transcoders whose bytes are the library's plain JSON format.
PLAIN_JSON_TRANSCODERS = (JSONTranscoder, LedgerTranscoder)
TYPED_KEY = b'"_type_"'
ALL_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
LONG_NUMBER = b"0" * 19

IdConvertor = Callable[[UUID | str], UUID | str]


class EventReader:
    """Turns stored events into the event objects the library's mapper makes."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        transcoder = mapper.transcoder
        self.plain = (
            type(transcoder) in PLAIN_JSON_TRANSCODERS
            and not mapper.cipher
            and not mapper.compressor
        )
        names = transcoder.names if isinstance(transcoder, JSONTranscoder) else {}
        self.revivers = {name: reviver(t) for name, t in names.items()}
        self.classes: dict[tuple[str, type], tuple[type, IdConvertor] | None] = {}
        self.typed_keys: dict[str, tuple[str, ...]] = {}

    def __call__(self, stored: StoredEvent) -> Any:
        known = self.event_class(stored.topic, type(stored.originator_id))
        fields = None if known is None else self.fields(stored.topic, stored.state)
        if known is None or fields is None:
            return self.mapper.to_domain_event(stored)
        cls, convertor = known
        fields["originator_id"] = convertor(stored.originator_id)
        fields["originator_version"] = stored.originator_version
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", fields)
        return event

    def event_class(self, topic: str, id_type: type) -> tuple[type, IdConvertor] | None:
        """The topic's class and id conversion, or None for the library's path."""
        key = (topic, id_type)
        if key not in self.classes:
            cls = resolve_topic(topic)
            simple = self.plain and getattr(cls, "class_version", 1) == 1
            self.classes[key] = (
                (cls, find_id_convertor(cls, id_type)) if simple else None
            )
        return self.classes[key]

    def fields(self, topic: str, state: bytes) -> dict[str, Any] | None:
        """The decoded state, or None where only the library's decoding is exact."""
        if LONG_NUMBER in state.translate(ALL_DIGITS_AS_ZERO):
            return None
        try:
            fields = orjson.loads(state)
        except orjson.JSONDecodeError:
            return None
        if type(fields) is not dict or "class_version" in fields:
            return None
        typed = state.count(TYPED_KEY)
        if typed and not self.revive(topic, fields, typed):
            return None
        return fields

    def revive(self, topic: str, fields: dict[str, Any], typed: int) -> bool:
        """Revive the `typed` typed values at the top level, in place.

        The keys that held them in the topic's earlier events are tried
        first; only when those do not account for all of them are the other
        keys looked at (and remembered). False if some typed value is not
        at the top level or cannot be revived: the library then decodes the
        state, or says why it cannot.
        """
        known = self.typed_keys.get(topic, ())
        revived = self.revive_keys(fields, known)
        if revived == typed or revived < 0:
            return revived == typed
        others = [k for k in fields if k not in known and is_typed(fields[k])]
        more = self.revive_keys(fields, others)
        self.typed_keys[topic] = (*known, *others)
        return more >= 0 and revived + more == typed

    def revive_keys(self, fields: dict[str, Any], keys: Iterable[str]) -> int:
        """Revive the typed values under `keys`; how many there were (-1 if
        one cannot be revived)."""
        revived = 0
        for key in keys:
            value = fields.get(key)
            if (
                type(value) is dict
                and len(value) == 2
                and "_type_" in value
                and "_data_" in value
            ):
                try:
                    fields[key] = self.revivers[value["_type_"]](value["_data_"])
                except Exception:
                    return -1
                revived += 1
        return revived


def is_typed(value: Any) -> bool:
    """Whether the library's decoder would revive this JSON value."""
    return (
        type(value) is dict
        and len(value) == 2
        and "_type_" in value
        and "_data_" in value
    )


def reviver(transcoding: Transcoding) -> Callable[[Any], Any]:
    """How a transcoding's data becomes its value again.

    The library's times are read by `datetime.fromisoformat` directly, which
    is all their transcoding does once its check that the data is text has
    passed (where it fails, `fromisoformat` fails too, and the library then
    raises its own error).
    """
    if type(transcoding) is DatetimeAsISO:
        return datetime.fromisoformat
    return transcoding.decode
