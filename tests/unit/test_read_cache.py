"""The committer's read cache: what it keeps, extends and forgets."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from commands.read_cache import ReadCache


@dataclass(frozen=True)
class Event:
    originator_id: uuid.UUID
    originator_version: int


def events(aggregate_id: uuid.UUID, *versions: int) -> list[Event]:
    return [Event(aggregate_id, version) for version in versions]


A, B, C = (uuid.UUID(int=number) for number in (1, 2, 3))


def test_newer_events_follow_the_cached_ones() -> None:
    cache = ReadCache()
    cache.complete({A: events(A, 1, 2)})

    assert cache.known_versions([A, B]) == {A: 2}
    assert cache.complete({A: events(A, 3)}) == {A: events(A, 1, 2, 3)}
    assert cache.known_versions([A]) == {A: 3}


def test_an_aggregate_with_no_events_is_not_remembered() -> None:
    cache = ReadCache()

    assert cache.complete({A: []}) == {A: []}
    assert cache.known_versions([A]) == {}


def test_a_projection_is_reused_only_while_its_version_stands() -> None:
    cache = ReadCache()
    history = cache.complete({A: events(A, 1)})
    projection = object()
    cache.keep_projections({A: projection}, history)

    assert cache.projections(history) == {A: projection}
    assert cache.projections(cache.complete({A: events(A, 2)})) == {}


def test_written_events_extend_what_follows_on_and_drop_what_does_not() -> None:
    cache = ReadCache()
    cache.complete({A: events(A, 1), B: events(B, 1)})

    cache.remember_written([*events(A, 2), *events(B, 3), *events(C, 1)])

    assert cache.known_versions([A, B, C]) == {A: 2, C: 1}


def test_the_least_recently_read_aggregate_is_forgotten_first() -> None:
    cache = ReadCache(limit=2)
    cache.complete({A: events(A, 1)})
    cache.complete({B: events(B, 1)})
    cache.complete({A: []})
    cache.complete({C: events(C, 1)})

    assert cache.known_versions([A, B, C]) == {A: 1, C: 1}


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="set it to 1 or more"):
        ReadCache(limit=0)
