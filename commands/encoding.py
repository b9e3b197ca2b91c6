"""How event state becomes bytes and back: the library's JSON format, by orjson.

The stored format is exactly the eventsourcing library's `JSONTranscoder`
format (datetimes, UUIDs and decimals as `{"_type_": ..., "_data_": ...}`), so
the library's mapper, the projections and any other reader decode it as
before. Only the work is cheaper: orjson writes and parses, and the typed
values go through the same transcodings the library registers, at a fraction
of the cost of the stdlib encoder and its per-object decoding hook.

orjson writes a UUID as a plain string, which would decode as `str`; a state
holding a UUID anywhere, or anything else orjson cannot take as the library
would (a non-string dict key, say), is written by the library's own encoder.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import JSONTranscoder

ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
# Types that can hold no UUID, checked first because nearly every value is one.
PLAIN = frozenset({str, int, float, bool, type(None), datetime})


class LedgerTranscoder(JSONTranscoder):
    """`JSONTranscoder` whose encoding is done by orjson where that is exact."""

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, dict) or holds_uuid(obj):
            return super().encode(obj)
        try:
            return orjson.dumps(obj, default=self._encode_obj, option=ORJSON_OPTIONS)
        except TypeError:
            return super().encode(obj)

    def decode(self, data: bytes) -> Any:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            # JSON that only the stdlib parser accepts (NaN, say).
            return super().decode(data)
        return self._revive(parsed)

    def _revive(self, value: Any) -> Any:
        """Turn typed-value objects back into values, innermost first, in place."""
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, dict | list):
                    value[key] = self._revive(item)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._decode_obj(value)
            return value
        if not isinstance(value, list):
            return value
        for index, item in enumerate(value):
            if isinstance(item, dict | list):
                value[index] = self._revive(item)
        return value


def holds_uuid(state: dict[str, Any]) -> bool:
    """Whether a UUID sits anywhere in this JSON-like state."""
    pending: list[Any] = [state]
    while pending:
        container = pending.pop()
        items = container.values() if isinstance(container, dict) else container
        for item in items:
            if type(item) in PLAIN:
                continue
            if isinstance(item, UUID):
                return True
            if isinstance(item, dict | list | tuple):
                pending.append(item)
    return False
