"""Permission checks every handler starts with."""

from __future__ import annotations

from ledger.errors import PermissionDenied
from ledger.values import Permission, Principal


def require(principal: Principal, permission: Permission) -> None:
    """Refuse the command unless the principal holds `permission`."""
    if not principal.can(permission):
        raise PermissionDenied(permission.value)
