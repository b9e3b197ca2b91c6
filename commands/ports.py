"""What the use cases need from the outside world, and the send policy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class SendPolicy:
    """Limits on what one send may contain; set from configuration."""

    max_sms_segments: int = 10
    attachment_limit_bytes: int = 25 * MEGABYTE


class BlobStore(Protocol):
    """Content-addressed storage for attachment bytes, keyed by SHA-256."""

    def put(self, content: bytes) -> str: ...

    def get(self, sha256: str) -> bytes: ...


class MemoryBlobStore:
    """A BlobStore in memory, for tests and throwaway ledgers."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def put(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        self._blobs[digest] = content
        return digest

    def get(self, sha256: str) -> bytes:
        return self._blobs[sha256]


def now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)
