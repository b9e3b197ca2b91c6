"""Random ids for new messages, drawn from the operating system in blocks.

A message id is a version-4 UUID from the OS's random source, as
`uuid.uuid4` makes it. `uuid4` asks the OS for 16 bytes per id, and that
system call lets go of the interpreter lock; on the group committer's thread,
which decides a whole group while callers and the event loop wait for the
lock, each release can cost the committer a switch interval before it runs
again. Drawing the same random bytes a block at a time makes one call per
`BLOCK` ids. Each thread has its own block, and a forked child starts afresh,
so no two ids share bytes.
"""

from __future__ import annotations

import os
import threading
import uuid

BLOCK = 256
ID_BYTES = 16


class _Block(threading.local):
    """This thread's unused random bytes."""

    def __init__(self) -> None:
        self.data = b""
        self.offset = 0


_block = _Block()


def new_message_id() -> uuid.UUID:
    """A fresh random (version 4) UUID."""
    block = _block
    if block.offset >= len(block.data):
        block.data = os.urandom(ID_BYTES * BLOCK)
        block.offset = 0
    start = block.offset
    block.offset = start + ID_BYTES
    return uuid.UUID(bytes=block.data[start : start + ID_BYTES], version=4)


def _forget_block() -> None:
    global _block
    _block = _Block()


os.register_at_fork(after_in_child=_forget_block)
