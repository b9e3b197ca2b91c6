"""The status fold: where a message stands, whatever order its events arrived in.

Providers report outcomes late, twice and out of order. Rather than let each
event overwrite the status, every provider event sets a fact on the attempt it
belongs to, and the status is read off the facts by precedence. Setting a fact
is idempotent and commutative, so any permutation of the same events gives the
same status:

- an open proves delivery, and outranks a bounce reported after it;
- a bounce outranks a delivery (providers report delivered, then bounce);
- a failure outranks a delivery, since the provider later gave up;
- a late sent or delivered never moves a message backwards.

Each retry starts a new attempt; the message's status is its latest attempt's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.values import Status


@dataclass
class AttemptFacts:
    """What the provider has reported so far about one delivery attempt."""

    number: int
    sent: bool = False
    delivered: bool = False
    opened: bool = False
    bounced: bool = False
    failed: bool = False

    @property
    def status(self) -> Status:
        if self.opened:
            return Status.OPENED
        if self.bounced:
            return Status.BOUNCED
        if self.failed:
            return Status.FAILED
        if self.delivered:
            return Status.DELIVERED
        if self.sent:
            return Status.SENT
        return Status.QUEUED if self.number == 1 else Status.RETRIED

    @property
    def reached_recipient(self) -> bool:
        """Whether the attempt is known to have arrived (an open implies it)."""
        return self.opened or (self.delivered and not self.bounced)


RETRYABLE = frozenset({Status.FAILED, Status.BOUNCED})
