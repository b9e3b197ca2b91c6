"""Sends from HTTP requests, committed together while the app runs.

Request handlers run on a thread pool, so concurrent sends arrive on many
threads at once; a `GroupCommitter` gives them shared transactions, each
request still answered only after its own message is durable. The committer
starts with the application's lifespan and is closed with it; before the
app has started (a test client used without its lifespan), or once it has
stopped, each send commits on its own, with the same rules and answers.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from commands.application import Ledger
from commands.grouping import CommitterClosed, GroupCommitter
from commands.models import SendMessage
from commands.send import SendReceipt, send_message
from ledger.values import Principal


class SendGroup:
    """The app's group committer for sends, while the app is running."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._committer: GroupCommitter | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._committer is None:
                self._committer = GroupCommitter(self.ledger)

    def stop(self) -> None:
        with self._lock:
            committer, self._committer = self._committer, None
        if committer is not None:
            committer.close()

    def send(self, principal: Principal, command: SendMessage) -> SendReceipt:
        """Queue the message, grouped with concurrent sends when the app runs."""
        committer = self._committer
        if committer is not None:
            try:
                return committer.send(principal, command)
            except CommitterClosed:
                pass
        return send_message(self.ledger, principal, command)


def lifespan_of(
    group: SendGroup,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The FastAPI lifespan that runs `group` for as long as the app serves."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        group.start()
        try:
            yield
        finally:
            group.stop()

    return lifespan
