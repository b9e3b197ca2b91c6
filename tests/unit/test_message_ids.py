"""Message ids drawn in blocks are still fresh version-4 UUIDs everywhere."""

from __future__ import annotations

import multiprocessing
import threading

from commands.message_ids import BLOCK, new_message_id


def ids_in_child(pipe) -> None:
    pipe.send([new_message_id() for _ in range(10)])


def test_ids_are_random_version_4_uuids_that_never_repeat():
    ids = [new_message_id() for _ in range(BLOCK * 3 + 7)]

    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4}
    assert {i.variant for i in ids} == {"specified in RFC 4122"}


def test_threads_draw_from_blocks_of_their_own():
    drawn: list[list[object]] = [[], []]

    def draw(into: list[object]) -> None:
        into.extend(new_message_id() for _ in range(BLOCK))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(drawn[0]).isdisjoint(drawn[1])


def test_a_forked_child_does_not_repeat_its_parents_next_ids():
    new_message_id()
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=ids_in_child, args=(sending,))
    child.start()
    from_child = receiving.recv()
    child.join()

    from_parent = [new_message_id() for _ in range(10)]

    assert set(from_child).isdisjoint(from_parent)
