"""How messages look to people and to JSON readers: the listing's columns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.history import HistoryEntry
from commands.send import Draft, SendReceipt
from ledger.message import Message
from ledger.values import SYSTEM, Direction

DIRECTION_MARK = {"outbound": "→", "inbound": "←"}


@dataclass(frozen=True)
class Column:
    title: str
    text: Callable[[dict[str, Any]], str]
    ratio: int | None = None
    wide_only: bool = False
    width: int | None = None


def message_row(message: Message) -> dict[str, Any]:
    """The listing's columns for one message, as plain values."""
    return {
        "message_id": str(message.id),
        "time": message.occurred_at.isoformat(),
        "direction": message.direction.value,
        "channel": message.channel,
        "subject": message.subject,
        "preview": message.preview,
        "from": message.sender,
        "to": message.to,
        "sent_by": sent_by(message),
        "trigger": message.sent_by.get("trigger"),
        "status": message.status.value,
        "replied": message.replied,
        "attachments": len(message.attachments),
    }


ROW_COLUMNS = (
    Column("Time", lambda r: short_time(r["time"], "%m-%d %H:%M"), width=11),
    Column("", lambda r: DIRECTION_MARK[r["direction"]], width=1),
    Column("Channel", lambda r: r["channel"], width=7),
    Column("Subject", lambda r: r["subject"] or "", 2),
    Column("Preview", lambda r: r["preview"], 3),
    Column(
        "From / To",
        lambda r: r["from"] if r["direction"] == "inbound" else ", ".join(r["to"]),
        2,
        wide_only=True,
    ),
    Column("Sent by", lambda r: r["sent_by"], 1, wide_only=True),
    Column("Status", lambda r: r["status"] + (" ↩" if r["replied"] else ""), width=11),
    Column("📎", lambda r: "📎" if r["attachments"] else "", width=2),
    Column("Id", lambda r: r["message_id"][:8], width=8),
)


WIDE = 120


def columns_for(width: int) -> list[Column]:
    """The listing's columns that fit a terminal `width` characters wide."""
    return [c for c in ROW_COLUMNS if width >= WIDE or not c.wide_only]


def message_detail(message: Message, history: list[HistoryEntry]) -> dict[str, Any]:
    """Everything recorded about one message, for `show`."""
    return {
        **message_row(message),
        "cc": message.cc,
        "bcc": message.bcc,
        "category": message.category,
        "template": message.template_id
        and f"{message.template_id} v{message.template_version}",
        "merge_values": message.merge_values,
        "sms_segments": message.sms_segments,
        "attempt": message.current_attempt,
        "attachments": message.attachments,
        "replies": message.replies,
        "idempotency_key": message.idempotency_key,
        "resend_of": message.resend_of,
        "text": message.text,
        "html": message.html,
        "history": [
            {
                "version": item.version,
                "event": item.event,
                "occurred_at": item.occurred_at,
                "recorded_at": item.recorded_at,
                "fields": item.fields,
            }
            for item in history
        ],
    }


SUMMARY_FIELDS = (
    "attempt",
    "provider",
    "reason",
    "recipient",
    "status_code",
    "to",
    "subject",
)


def sent_by(message: Message) -> str:
    """Who a message is attributed to: a user, System, or the customer."""
    if message.direction == Direction.INBOUND:
        return "Customer"
    return message.sent_by.get("user_id") or SYSTEM


def event_summary(fields: dict[str, Any]) -> str:
    parts = [f"{k}={fields[k]}" for k in SUMMARY_FIELDS if fields.get(k) is not None]
    return clip(", ".join(parts), 70)


def receipt_json(receipt: SendReceipt) -> dict[str, Any]:
    return {
        "message_id": str(receipt.message_id),
        "status": receipt.status.value,
        "created": receipt.created,
    }


def draft_json(draft: Draft) -> dict[str, Any]:
    return {
        "channel": draft.channel.value,
        "from": draft.sender,
        "to": draft.to,
        "cc": draft.cc,
        "bcc": draft.bcc,
        "subject": draft.subject,
        "text": draft.text,
        "html": draft.html,
        "template": draft.template_id
        and f"{draft.template_id} v{draft.template_version}",
    }


def short_time(value: datetime | str | None, layout: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime(layout)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
