"""How many SMS segments a body is billed as, counted the way carriers count them.

A body that uses only the GSM 03.38 default alphabet and its extension table is
sent as GSM-7: up to 160 septets fit in one SMS, and a longer body is split into
segments of 153 septets (the concatenation header takes the rest). Extension
characters cost two septets, an escape and the character, and that pair is
never split across segments. Any other character makes the whole body UCS-2:
up to 70 UTF-16 code units fit in one SMS, a longer body is split into segments
of 67, and a segment never ends inside a user-perceived character (a grapheme
cluster such as a flag, an emoji with a skin tone, a ZWJ family or a letter
with combining marks).

The behaviour follows Twilio's open-source message segment calculator, without
its smart-encoding substitutions, which we never apply:

* The empty body is one GSM-7 segment of zero septets, as Twilio reports it.
* CR LF is two characters that may be split apart, although Unicode makes it
  one grapheme cluster; Twilio splits it the same way.
* Packing is greedy in body order, the same result as Twilio's repacking of the
  first segment once a second one is needed.

Deliberate differences from Twilio's calculator:

* A grapheme cluster longer than 67 code units cannot fit in any segment.
  Twilio keeps it whole and overfills a segment; we start it in a fresh segment
  and split it at code point boundaries, as Android's SmsMessage.fragmentText
  does. Twilio can also overfill its second segment: when a second segment
  becomes necessary, it moves the tail of the first one there and appends the
  arriving cluster without checking room, so two long clusters (together over
  67 units) can share one segment; we never overfill and count one more.
* Grapheme clusters come from the `regex` package's current Unicode rules, not
  the older rules of Twilio's grapheme-splitter dependency, so a recent emoji
  or Indic conjunct sequence may stay together here and split there.
* `units` reports UTF-16 code units for a UCS-2 body, where Twilio's
  character count reports graphemes; the segment count is not affected.
* Surrogate halves that a `str` carries as separate code points (text decoded
  with ``surrogatepass``) are joined when they form a pair, so the pair is never
  split; a lone surrogate counts as one code unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import regex  # type: ignore[import-untyped, unused-ignore]

SmsEncoding: TypeAlias = Literal["GSM-7", "UCS-2"]

GSM7: Final = "GSM-7"
UCS2: Final = "UCS-2"

_GSM7_SINGLE: Final = 160
_GSM7_MULTI: Final = 153
_UCS2_SINGLE: Final = 70
_UCS2_MULTI: Final = 67

# The 127 characters of the GSM 03.38 default table (0x1B is the escape).
_GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")
_GSM7_ALL: Final = _GSM7_BASIC | _GSM7_EXTENSION

_GRAPHEME: Final = regex.compile(r"\X")
_UTF16: Final = "utf-16-le"
_BMP_LIMIT: Final = 0xFFFF
_BMP_MAX: Final = chr(_BMP_LIMIT)


@dataclass(frozen=True)
class SegmentCount:
    """How a body is encoded and how many SMS segments it takes."""

    encoding: SmsEncoding
    segments: int
    # Septets for GSM-7 (an extension character counts two); UTF-16 code units
    # for UCS-2.
    units: int
    # The capacity applied: 160 or 153 septets, 70 or 67 code units.
    per_segment: int


def is_gsm7(body: str) -> bool:
    """Whether every character of body is in the GSM-7 default or extension table."""
    return _GSM7_ALL.issuperset(body)


def count_segments(body: str) -> SegmentCount:
    """Count the encoding, septets or code units, and segments of an SMS body."""
    if is_gsm7(body):
        # str.count runs in C, so ten scans beat one Python-level loop.
        septets = len(body) + sum(map(body.count, _GSM7_EXTENSION))
        if septets <= _GSM7_SINGLE:
            return SegmentCount(GSM7, 1, septets, _GSM7_SINGLE)
        return SegmentCount(GSM7, _pack_gsm7(body, septets), septets, _GSM7_MULTI)
    units = _utf16_units(body)
    if units <= _UCS2_SINGLE:
        return SegmentCount(UCS2, 1, units, _UCS2_SINGLE)
    return SegmentCount(UCS2, _pack_ucs2(body), units, _UCS2_MULTI)


def _utf16_units(text: str) -> int:
    # surrogatepass lets a lone surrogate count as the one unit it would occupy.
    return len(text.encode(_UTF16, "surrogatepass")) // 2


def _pack_gsm7(body: str, septets: int) -> int:
    if septets == len(body):
        # No escape pairs, so nothing can force a segment to end early.
        return -(-septets // _GSM7_MULTI)
    segments, used = 1, 0
    for char in body:
        width = 2 if char in _GSM7_EXTENSION else 1
        if used + width > _GSM7_MULTI:
            segments, used = segments + 1, 0
        used += width
    return segments


def _pack_ucs2(body: str) -> int:
    joined = body.encode(_UTF16, "surrogatepass").decode(_UTF16, "surrogatepass")
    segments, used = 1, 0
    for cluster in _clusters(joined):
        # Most clusters are BMP-only; max() in C skips an encode for each of them.
        width = len(cluster) if max(cluster) <= _BMP_MAX else _utf16_units(cluster)
        if width <= _UCS2_MULTI:
            if used + width > _UCS2_MULTI:
                segments, used = segments + 1, 0
            used += width
            continue
        # No segment can hold this cluster, so it gets its own run of segments,
        # cut between code points; its tail may share with what follows.
        if used:
            segments, used = segments + 1, 0
        for char in cluster:
            width = 2 if ord(char) > _BMP_LIMIT else 1
            if used + width > _UCS2_MULTI:
                segments, used = segments + 1, 0
            used += width
    return segments


def _clusters(text: str) -> list[str]:
    clusters: list[str] = []
    for cluster in _GRAPHEME.findall(text):
        if cluster == "\r\n":
            # Twilio counts CR and LF as two characters a segment may end between.
            clusters.extend(cluster)
        else:
            clusters.append(cluster)
    return clusters
