"""Pulling deliveries from a durable JetStream consumer a batch at a time.

nats-py's `PullSubscription.fetch` waits for each message of a batch with its
own task and timeout, which costs about three times as much per delivery as
the rest of the client (docs/performance.md, "Broker intake"). `BatchPuller`
asks the server for the same thing with the same JetStream pull request
(`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>` with a batch size and either
`no_wait` or `expires`), on an inbox subscription whose callback only keeps
what arrives, and hands the caller everything that has arrived at once.

The server answers a pull request with up to `batch` deliveries; a request it
ends early is closed by a status message: 404 (nothing to deliver now), 408
(the request expired), 409 (the consumer's in-flight cap was reached, or the
consumer went away). A 100 is an idle heartbeat. None of these is a delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

logger = logging.getLogger(__name__)

STATUS_HEADER = "Status"
HEARTBEAT = "100"
STATUS_EXPLAINED = {
    "404": "nothing to deliver",
    "408": "the request expired",
    "409": "the consumer refused the request",
}


class BatchPuller:
    """One outstanding conversation with a pull consumer, batch after batch."""

    def __init__(
        self,
        client: Client,
        stream: str,
        consumer: str,
        batch_size: int,
        wait: float,
    ) -> None:
        self.client = client
        self.request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.batch_size = batch_size
        self.wait = wait
        self.inbox = client.new_inbox()
        self.arrived: list[Msg] = []
        self.ended = 0
        self.signal = asyncio.Event()
        self.interrupted = False
        self.subscription: Subscription | None = None

    async def start(self, pending_limit: int) -> None:
        """Listen on the inbox; it may hold up to `pending_limit` deliveries."""
        self.subscription = await self.client.subscribe(
            self.inbox, cb=self.receive, pending_msgs_limit=pending_limit
        )

    def interrupt(self) -> None:
        """Make a fetch that is waiting return now, with what it has."""
        self.interrupted = True
        self.signal.set()

    async def stop(self) -> None:
        """Stop listening, and hand deliveries not yet taken back to the server.

        A negative acknowledgement without delay lets another worker take
        them at once rather than after the ack wait.
        """
        if self.subscription is not None:
            await self.subscription.unsubscribe()
            self.subscription = None
        left, self.arrived = self.arrived, []
        for message in left:
            await message.nak()
        if left:
            await self.client.flush()

    async def receive(self, message: Msg) -> None:
        headers = message.headers or {}
        status = headers.get(STATUS_HEADER)
        if status is None:
            self.arrived.append(message)
        elif status == HEARTBEAT:
            return
        else:
            self.ended += 1
            if status not in ("404", "408"):
                reason = STATUS_EXPLAINED.get(status, "unexpected status")
                description = headers.get("Description", "")
                logger.info(
                    "pull request on %s ended: %s %s (%s)",
                    self.request_subject,
                    status,
                    description,
                    reason,
                )
        self.signal.set()

    async def fetch(self) -> list[Msg]:
        """Up to `batch_size` deliveries: those there now, else the first to come.

        Returns an empty list when nothing came within `wait`. Deliveries that
        arrive after a batch was taken (from a request still open) start the
        next one.
        """
        if not self.arrived:
            await self.ask(no_wait=True)
        if not self.arrived:
            await self.ask(no_wait=False)
        batch = self.arrived[: self.batch_size]
        del self.arrived[: self.batch_size]
        return batch

    async def ask(self, *, no_wait: bool) -> None:
        """Send one pull request and wait until it is answered enough to go on.

        A no-wait request is answered at once: by a full batch, or by what
        there is and a 404. A waiting request returns with its first delivery
        (the rest may follow), or with its 408 when `wait` passes.
        """
        request: dict[str, object] = {"batch": self.batch_size - len(self.arrived)}
        if no_wait:
            request["no_wait"] = True
        else:
            request["expires"] = int(self.wait * 1_000_000_000)
        ended = self.ended
        self.signal.clear()
        await self.client.publish(
            self.request_subject, json.dumps(request).encode(), reply=self.inbox
        )
        deadline = asyncio.get_running_loop().time() + self.wait + 1.0
        while (
            self.ended == ended and self.wanting_more(no_wait) and not self.interrupted
        ):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                # No answer at all: the server or the connection is gone;
                # the caller asks again, and nats-py reconnects meanwhile.
                return
            try:
                await asyncio.wait_for(self.signal.wait(), remaining)
            except TimeoutError:
                return
            self.signal.clear()

    def wanting_more(self, no_wait: bool) -> bool:
        if no_wait:
            return len(self.arrived) < self.batch_size
        return not self.arrived
