"""An email as the dispatcher hands it to a provider, for provider tests."""

from __future__ import annotations

import uuid

from commands.ports import OutgoingEmail


def outgoing_email(**fields: object) -> OutgoingEmail:
    """A one-recipient appointment email; `fields` replace any of its values."""
    message_id = uuid.uuid4()
    values: dict[str, object] = {
        "message_id": message_id,
        "attempt": 1,
        "message_id_header": f"<{message_id}.1@reply.brightside.example>",
        "sender": "office@brightside.example",
        "to": ("ada.fernsby@example.com",),
        "subject": "Your appointment on Tuesday",
        "text": "See you at 10:00.",
    }
    values.update(fields)
    return OutgoingEmail(**values)  # type: ignore[arg-type]
