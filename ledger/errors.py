"""Errors the ledger raises, each with a message that says how to put it right.

LedgerError
├── InvalidCommand          a field of a command is wrong (carries the field)
│   ├── TemplateError       a template cannot be saved or rendered
│   │   └── MissingMergeTag a template uses a merge tag that has no value
│   └── IdempotencyKeyReused
├── RecipientSuppressed     the address is on the suppression list
├── NotFound                no such record in the principal's tenant
├── PermissionDenied        the principal lacks a permission
├── InvalidTransition       the message's state does not allow the command
├── StoreUnavailable        the event store failed; nothing was written
└── ProjectionError         a read model is unknown or cannot serve the request
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidCommand(LedgerError):
    """Raised when a command's field breaks a rule; `field` names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class TemplateError(InvalidCommand):
    """Raised when a template has a syntax error or cannot be rendered safely."""


class MissingMergeTag(TemplateError):
    """Raised when a template uses a merge tag that was given no value."""

    def __init__(self, field: str, tag: str) -> None:
        super().__init__(
            field,
            f"Merge tag '{tag}' has no value; pass it in merge_values or "
            f"write it as {{{{ {tag} | default('') }}}} in the template.",
        )
        self.tag = tag


class IdempotencyKeyReused(InvalidCommand):
    """Raised when an idempotency key comes back with a different command."""

    def __init__(self, key: str, message_id: object) -> None:
        super().__init__(
            "idempotency_key",
            f"Idempotency key '{key}' was already used for message {message_id} "
            "with different content; use a new key for a new message.",
        )
        self.key = key
        self.message_id = message_id


class RecipientSuppressed(LedgerError):
    """Raised when a send names an address on the tenant's suppression list."""

    def __init__(self, channel: str, address: str, reason: str) -> None:
        super().__init__(
            f"{address} is suppressed for {channel} ({reason}); lift the "
            "suppression before sending to it."
        )
        self.channel = channel
        self.address = address
        self.reason = reason


class NotFound(LedgerError):
    """Raised when a record does not exist in the principal's tenant."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"No {kind} '{key}' exists in this company.")
        self.kind = kind
        self.key = key


class PermissionDenied(LedgerError):
    """Raised when the principal lacks the permission a command needs."""

    def __init__(self, permission: str) -> None:
        super().__init__(
            f"This needs the '{permission}' permission, which you do not have."
        )
        self.permission = permission


class InvalidTransition(LedgerError):
    """Raised when a command does not fit the state the record is in."""


class StoreUnavailable(LedgerError):
    """Raised when the event store fails; the command's events were not written."""


class ProjectionError(LedgerError):
    """Raised when a read model is unknown, not built yet, or given a bad query."""
