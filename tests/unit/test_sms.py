"""Tests for SMS segment counting, cross-checked against a slow reference splitter."""

from __future__ import annotations

import dataclasses
import math

import pytest
import regex  # type: ignore[import-untyped, unused-ignore]
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.sms import SegmentCount, SmsEncoding, count_segments, is_gsm7

# The GSM 03.38 default alphabet in code order, 0x00 to 0x7F; 0x1B is the escape
# to the extension table and is no character of its own.
GSM_DEFAULT_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
GSM_EXTENSION_CODES = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
GSM_BASIC_CHARS = sorted(set(GSM_DEFAULT_TABLE) - {"\x1b"})
GSM_EXTENSION_CHARS = sorted(GSM_EXTENSION_CODES)

THUMBS_UP_MEDIUM = "\U0001f44d\U0001f3fd"
ITALY = "\U0001f1ee\U0001f1f9"
FRANCE = "\U0001f1eb\U0001f1f7"
FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
RAINBOW_FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"
GRINNING = "\U0001f600"
E_ACUTE_DECOMPOSED = "e\u0301"


def ucs2_filler(count: int) -> str:
    return "á" * count


# --- a slow reference, written independently of ledger.sms -------------------


def utf16_units(text: str) -> list[int]:
    raw = text.encode("utf-16-be", "surrogatepass")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def cut(
    units: list[int],
    preferred: set[int],
    fallback: set[int],
    single: int,
    multi: int,
) -> list[list[int]]:
    """Cut units into segments, each ending at the furthest break that fits."""
    if len(units) <= single:
        return [units]
    segments: list[list[int]] = []
    start = 0
    while start < len(units):
        limit = start + multi
        fitting = [b for b in preferred if start < b <= limit]
        if not fitting:
            fitting = [b for b in fallback if start < b <= limit]
        end = max(fitting)
        segments.append(units[start:end])
        start = end
    return segments


def reference_gsm7(body: str) -> list[list[int]] | None:
    septets: list[int] = []
    breaks = {0}
    for char in body:
        if char in GSM_EXTENSION_CODES:
            septets += [ESCAPE, GSM_EXTENSION_CODES[char]]
        elif char in GSM_BASIC_CHARS:
            septets.append(GSM_DEFAULT_TABLE.index(char))
        else:
            return None
        breaks.add(len(septets))
    return cut(septets, breaks, breaks, 160, 153)


def reference_ucs2(body: str) -> list[list[int]]:
    units = utf16_units(body)
    code_point_breaks = {
        i
        for i in range(len(units) + 1)
        if not (
            0 < i < len(units)
            and 0xDC00 <= units[i] <= 0xDFFF
            and 0xD800 <= units[i - 1] <= 0xDBFF
        )
    }
    grapheme_breaks = {0}
    offset = 0
    for cluster in regex.findall(r"\X", body):
        if cluster == "\r\n":
            grapheme_breaks.add(offset + 1)
        offset += len(utf16_units(cluster))
        grapheme_breaks.add(offset)
    return cut(units, grapheme_breaks, code_point_breaks, 70, 67)


def reference_count(body: str) -> SegmentCount:
    """Build the actual segments and describe them."""
    gsm7 = reference_gsm7(body)
    if gsm7 is not None:
        return describe("GSM-7", gsm7, 160, 153)
    return describe("UCS-2", reference_ucs2(body), 70, 67)


def describe(
    encoding: SmsEncoding, segments: list[list[int]], single: int, multi: int
) -> SegmentCount:
    per_segment = single if len(segments) == 1 else multi
    assert all(len(segment) <= per_segment for segment in segments)
    return SegmentCount(
        encoding=encoding,
        segments=len(segments),
        units=sum(len(segment) for segment in segments),
        per_segment=per_segment,
    )


# --- generated bodies ---------------------------------------------------------

MIXED_POOL = [
    *GSM_BASIC_CHARS,
    *"abcdefghij klmnop 0123456789 ",
    *GSM_EXTENSION_CHARS,
    *"áçíóúÁÍ`\t漢\u201c\u201d\u2018\u2019",
    "\r",
    "\n",
    "\r\n",
    "\u0301",
    "\u200d",
    "\ufe0f",
    "\U0001f3fd",
    "\U0001f1ee",
    GRINNING,
    THUMBS_UP_MEDIUM,
    ITALY,
    FRANCE,
    FAMILY,
    RAINBOW_FLAG,
    E_ACUTE_DECOMPOSED,
    "e\u0301\u0301\u0301",
]
LONG_CLUSTERS = st.one_of(
    st.integers(60, 150).map(lambda n: "e" + "\u0301" * n),
    st.integers(20, 50).map(lambda n: "\U0001f468" + "\u200d\U0001f468" * n),
)


def bodies_of(fragment: st.SearchStrategy[str], most: int) -> st.SearchStrategy[str]:
    # Runs of a repeated fragment reach past the 70 and 160 limits in few draws,
    # and a uniform piece count keeps Hypothesis from favouring tiny bodies.
    run = st.tuples(fragment, st.integers(2, 40)).map(lambda pair: pair[0] * pair[1])
    piece = st.one_of(fragment, run)
    return st.integers(0, most).flatmap(
        lambda n: st.lists(piece, min_size=n, max_size=n).map("".join)
    )


GSM7_BODIES = bodies_of(st.sampled_from(GSM_BASIC_CHARS + GSM_EXTENSION_CHARS), 30)
MIXED_BODIES = bodies_of(st.sampled_from(MIXED_POOL), 24)
BODIES_WITH_LONG_CLUSTERS = bodies_of(
    st.one_of(st.sampled_from(MIXED_POOL), LONG_CLUSTERS), 6
)


GSM7_PIECES = st.sampled_from([*GSM_EXTENSION_CHARS, "a", "\r", "\n", "\r\n"])
ANY_PIECES = st.one_of(st.sampled_from(MIXED_POOL), LONG_CLUSTERS)
# Each of these has a place where a careless splitter would cut it.
TRICKY_PIECES = st.sampled_from(
    ["\r\n", "€", "]", GRINNING, THUMBS_UP_MEDIUM, ITALY, FAMILY, E_ACUTE_DECOMPOSED]
)


@st.composite
def bodies_at_a_limit(draw: st.DrawFn) -> str:
    """A short core padded to sit right at a segment limit.

    Random bodies rarely land where an unsplittable character changes the
    count. Here the filler packs perfectly, so losing a single unit to a
    character that must not be split costs a whole extra segment.
    """
    pieces = draw(
        st.one_of(
            st.lists(GSM7_PIECES, max_size=6),
            st.lists(TRICKY_PIECES, max_size=6),
            st.lists(st.one_of(GSM7_PIECES, ANY_PIECES), max_size=6),
        )
    )
    body = "".join(pieces)
    gsm7 = reference_gsm7(body) is not None
    single, multi = (160, 153) if gsm7 else (70, 67)
    sizes = [reference_units(piece, gsm7) for piece in pieces]
    units = sum(sizes)
    if draw(st.booleans()):
        before = draw(st.integers(0, max(0, single - units)))
        after = max(0, single - units - before + draw(st.integers(0, 1)))
    else:
        # Put a segment boundary just inside one of the pieces, where a split
        # would happen, then fill the last segment to within a unit or two.
        piece = draw(st.integers(0, len(pieces)))
        cut_at = sum(sizes[:piece]) + draw(st.integers(0, 2))
        before = max(0, draw(st.integers(2, 3)) * multi - cut_at)
        used = before + units
        after = max(0, -(-used // multi) * multi - used - draw(st.integers(0, 2)))
    return "a" * before + body + "a" * after


def reference_units(text: str, gsm7: bool) -> int:
    if gsm7:
        return sum(2 if char in GSM_EXTENSION_CODES else 1 for char in text)
    return len(utf16_units(text))


ANY_BODY = st.one_of(
    GSM7_BODIES,
    MIXED_BODIES,
    BODIES_WITH_LONG_CLUSTERS,
    bodies_at_a_limit(),
)
ONE_CHARACTER = st.one_of(
    st.sampled_from([c for c in MIXED_POOL if len(c) == 1]), st.characters()
)


# --- encoding -----------------------------------------------------------------


def test_an_empty_body_is_one_gsm7_segment_of_zero_septets() -> None:
    result = count_segments("")

    assert result == SegmentCount("GSM-7", segments=1, units=0, per_segment=160)


def test_the_reference_table_holds_127_characters_besides_the_escape() -> None:
    assert len(GSM_DEFAULT_TABLE) == 128
    assert len(GSM_BASIC_CHARS) == 127


def test_no_character_outside_the_two_tables_is_gsm7() -> None:
    below_cjk = (chr(code) for code in range(0x3000))

    gsm7 = sorted(char for char in below_cjk if is_gsm7(char))

    assert gsm7 == sorted(GSM_BASIC_CHARS + GSM_EXTENSION_CHARS)


@pytest.mark.parametrize("char", GSM_BASIC_CHARS)
def test_every_default_table_character_is_one_gsm7_septet(char: str) -> None:
    result = count_segments(char)

    assert (result.encoding, result.units) == ("GSM-7", 1)


@pytest.mark.parametrize("char", GSM_EXTENSION_CHARS)
def test_every_extension_character_is_two_gsm7_septets(char: str) -> None:
    result = count_segments(char)

    assert (result.encoding, result.units) == ("GSM-7", 2)


def test_the_euro_sign_counts_two_septets() -> None:
    result = count_segments("Total: 5€")

    assert (result.encoding, result.units) == ("GSM-7", 10)


@pytest.mark.parametrize(
    "char",
    [
        "á",
        "ç",
        "í",
        "ó",
        "ú",
        "Á",
        "\u201c",
        "\u201d",
        "\u2019",
        "`",
        "\t",
        "\x1b",
        GRINNING,
        "漢",
    ],
)
def test_a_character_outside_the_gsm7_tables_forces_ucs2(char: str) -> None:
    body = f"Hello {char} there"

    result = count_segments(body)

    assert not is_gsm7(body)
    assert (result.encoding, result.units) == ("UCS-2", 12 + len(utf16_units(char)))


def test_capital_c_cedilla_is_gsm7_but_small_c_cedilla_is_not() -> None:
    assert is_gsm7("Ç")
    assert not is_gsm7("ç")


def test_a_combining_accent_forces_ucs2_even_on_a_gsm7_letter() -> None:
    result = count_segments(E_ACUTE_DECOMPOSED)

    assert (result.encoding, result.units) == ("UCS-2", 2)


def test_is_gsm7_accepts_the_empty_body() -> None:
    assert is_gsm7("")


# --- GSM-7 segments -----------------------------------------------------------


def test_160_septets_fit_in_one_segment() -> None:
    result = count_segments("a" * 160)

    assert result == SegmentCount("GSM-7", segments=1, units=160, per_segment=160)


def test_161_septets_need_two_segments_of_153() -> None:
    result = count_segments("a" * 161)

    assert result == SegmentCount("GSM-7", segments=2, units=161, per_segment=153)


def test_two_full_segments_hold_306_septets_and_one_more_needs_a_third() -> None:
    two = count_segments("a" * 153 * 2)
    three = count_segments("a" * (153 * 2 + 1))

    assert (two.segments, three.segments) == (2, 3)


def test_an_escape_pair_counts_toward_the_single_segment_limit() -> None:
    fits = count_segments("|" + "1" * 158)
    spills = count_segments("|" + "1" * 159)

    assert (fits.units, fits.segments) == (160, 1)
    assert (spills.units, spills.segments) == (161, 2)


def test_80_euro_signs_fill_one_segment_and_81_need_two() -> None:
    assert count_segments("€" * 80).segments == 1
    assert count_segments("€" * 81).segments == 2


def test_an_escape_pair_is_never_split_across_segments() -> None:
    body = "a" * 152 + "€" + "a" * 152

    result = count_segments(body)

    # 306 septets would fill two segments exactly, but the pair cannot start at
    # septet 153, so the first segment carries 152 and a third is needed.
    assert (result.units, result.segments) == (306, 3)


def test_an_escape_pair_ending_exactly_on_the_boundary_stays_in_the_segment() -> None:
    body = "a" * 151 + "€" + "a" * 153

    result = count_segments(body)

    assert (result.units, result.segments) == (306, 2)


def test_153_closing_brackets_take_three_segments() -> None:
    result = count_segments("]" * 153)

    assert (result.units, result.segments) == (306, 3)


def test_crlf_counts_two_septets() -> None:
    result = count_segments("Hi\r\nthere")

    assert (result.encoding, result.units) == ("GSM-7", 9)


# --- UCS-2 segments -----------------------------------------------------------


def test_70_units_fit_in_one_ucs2_segment() -> None:
    result = count_segments(ucs2_filler(70))

    assert result == SegmentCount("UCS-2", segments=1, units=70, per_segment=70)


def test_71_units_need_two_ucs2_segments_of_67() -> None:
    result = count_segments(ucs2_filler(71))

    assert result == SegmentCount("UCS-2", segments=2, units=71, per_segment=67)


def test_a_non_bmp_emoji_counts_two_code_units() -> None:
    assert count_segments(GRINNING).units == 2
    assert count_segments(GRINNING * 35).segments == 1
    assert count_segments(GRINNING * 36).segments == 2


def test_gsm7_characters_in_a_ucs2_body_count_one_unit_each() -> None:
    fits = count_segments(GRINNING + "]" * 68)
    spills = count_segments(GRINNING + "]" * 69)

    assert (fits.units, fits.segments) == (70, 1)
    assert (spills.units, spills.segments) == (71, 2)


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    body = ucs2_filler(66) + GRINNING + ucs2_filler(66)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_a_skin_toned_emoji_that_would_straddle_unit_67_moves_whole() -> None:
    body = ucs2_filler(66) + THUMBS_UP_MEDIUM + ucs2_filler(64)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_a_skin_toned_emoji_ending_exactly_at_unit_67_stays() -> None:
    body = ucs2_filler(63) + THUMBS_UP_MEDIUM + ucs2_filler(67)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 2)


def test_a_flag_is_never_split_across_segments() -> None:
    body = ucs2_filler(65) + ITALY + ucs2_filler(65)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_two_adjacent_flags_may_be_split_between_them() -> None:
    body = ucs2_filler(63) + ITALY + FRANCE + ucs2_filler(63)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 2)


def test_a_zwj_family_is_never_split_across_segments() -> None:
    body = ucs2_filler(60) + FAMILY + ucs2_filler(63)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_a_letter_with_combining_marks_is_never_split_across_segments() -> None:
    body = ucs2_filler(66) + E_ACUTE_DECOMPOSED + ucs2_filler(66)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_crlf_may_be_split_between_ucs2_segments() -> None:
    body = ucs2_filler(66) + "\r\n" + ucs2_filler(66)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 2)


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("e\u0301\u0301\u0301" + "a" * 66, 1),
        ("e\u0301\u0301\u0301" + "a" * 67, 2),
        (ITALY + "2" * 66, 1),
        (ITALY + "2" * 67, 2),
        (RAINBOW_FLAG + "2" * 64, 1),
        (RAINBOW_FLAG + "2" * 65, 2),
        ("\U0001f61c" + "2" * 68, 1),
        ("\U0001f61c" + "2" * 69, 2),
        ("\U0001f61c" + "2" * 133, 3),
    ],
)
def test_the_twilio_calculator_examples_give_the_same_segment_counts(
    body: str, segments: int
) -> None:
    assert count_segments(body).segments == segments


def test_a_cluster_longer_than_a_segment_is_split_between_code_points() -> None:
    body = "e" + "\u0301" * 100

    result = count_segments(body)

    assert (result.units, result.segments) == (101, 2)


def test_a_cluster_longer_than_a_segment_starts_a_fresh_segment() -> None:
    body = "x" * 10 + "e" + "\u0301" * 100

    result = count_segments(body)

    assert (result.units, result.segments) == (111, 3)


def test_a_long_emoji_sequence_is_split_without_breaking_a_surrogate_pair() -> None:
    chain = "\U0001f468" + "\u200d\U0001f468" * 22
    body = chain + ucs2_filler(66)

    result = count_segments(body)

    # A cut after unit 67 would fall inside a pair, so the first segment ends
    # after 66 units and the body needs a third segment.
    assert (len(regex.findall(r"\X", chain)), result.units) == (1, 134)
    assert result.segments == 3


def test_surrogate_halves_stored_apart_are_still_kept_together() -> None:
    body = ucs2_filler(66) + "\ud83d\ude00" + ucs2_filler(66)

    result = count_segments(body)

    assert (result.units, result.segments) == (134, 3)


def test_a_lone_surrogate_counts_one_code_unit() -> None:
    result = count_segments("\ud800")

    assert result == SegmentCount("UCS-2", segments=1, units=1, per_segment=70)


def test_a_segment_count_cannot_be_changed() -> None:
    result = count_segments("hi")

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.segments = 2  # type: ignore[misc]


# --- properties ---------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(ANY_BODY)
def test_count_segments_agrees_with_a_reference_that_cuts_real_segments(
    body: str,
) -> None:
    assert count_segments(body) == reference_count(body)


@settings(max_examples=2000, deadline=None)
@given(bodies_at_a_limit())
def test_count_segments_agrees_with_the_reference_right_at_the_limits(
    body: str,
) -> None:
    assert count_segments(body) == reference_count(body)


@settings(max_examples=300, deadline=None)
@given(ANY_BODY, ONE_CHARACTER)
def test_appending_a_character_never_lowers_the_segment_count(
    body: str, char: str
) -> None:
    assert count_segments(body + char).segments >= count_segments(body).segments


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(GSM_BASIC_CHARS), min_size=161, max_size=1200))
def test_a_long_body_of_basic_gsm7_characters_takes_ceil_n_over_153_segments(
    body: str,
) -> None:
    assert count_segments(body).segments == math.ceil(len(body) / 153)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_BODY, st.text()))
def test_units_are_septets_for_gsm7_and_utf16_code_units_otherwise(
    body: str,
) -> None:
    result = count_segments(body)

    if is_gsm7(body):
        extension = sum(char in GSM_EXTENSION_CODES for char in body)
        assert result.units == len(body) + extension
    else:
        assert result.units == len(utf16_units(body))


@settings(max_examples=300, deadline=None)
@given(st.one_of(ANY_BODY, st.text()))
def test_one_segment_exactly_when_the_body_fits_the_single_segment_limit(
    body: str,
) -> None:
    result = count_segments(body)
    single = 160 if result.encoding == "GSM-7" else 70

    assert (result.segments == 1) == (result.units <= single)
    assert result.segments * result.per_segment >= result.units
