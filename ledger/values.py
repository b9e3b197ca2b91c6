"""Value objects shared by the ledger's aggregates and commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"


class Direction(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Permission(StrEnum):
    VIEW = "messages:view"
    CREATE = "messages:create"


class Status(StrEnum):
    """Where a message stands, as folded from its events (see ledger.status)."""

    QUEUED = "queued"
    RETRIED = "retried"
    SENT = "sent"
    DELIVERED = "delivered"
    OPENED = "opened"
    BOUNCED = "bounced"
    FAILED = "failed"
    RECEIVED = "received"


SYSTEM = "System"


@dataclass(frozen=True)
class Principal:
    """Who issues a command: a staff user or a service, always within one tenant."""

    tenant_id: str
    user_id: str | None = None
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    display_name: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


@dataclass(frozen=True)
class Attribution:
    """Who a message is attributed to: a user, or System and what triggered it."""

    user_id: str | None
    trigger: str | None = None

    @property
    def label(self) -> str:
        return self.user_id or SYSTEM

    def as_dict(self) -> dict[str, str | None]:
        return {"user_id": self.user_id, "trigger": self.trigger}


@dataclass(frozen=True)
class Attachment:
    """An attachment's metadata; the bytes live in the blob store under sha256."""

    name: str
    media_type: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "media_type": self.media_type,
            "size": self.size,
            "sha256": self.sha256,
        }
