"""Per-tenant settings for the providers that report back to the ledger.

The SendGrid public key and the Twilio auth token verify that a webhook really
comes from the tenant's provider account. The signing secret is the ledger's
own: it signs the tenant's open-tracking URLs, so nobody outside can forge an
open. (Reply plus-addresses are signed with the platform's
LEDGER_REPLY_SECRET instead, which the dispatcher also holds.) Secrets live
in the event store; run it with CIPHER_KEY set so they are encrypted at rest.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from eventsourcing.domain import Aggregate

SETTINGS_NAMESPACE = uuid.UUID("3c8f2a9e-5b71-4d0c-9e3a-7a6b1f4d2c88")

DEFAULT_HELP_TEXT = (
    "Reply STOP to stop messages, START to receive them again. "
    "Message and data rates may apply."
)


class ProviderSettings(Aggregate):
    """How one tenant's provider accounts are verified and what its SMS help says."""

    if TYPE_CHECKING:
        tenant_id: str
        signing_secret: str
        sendgrid_public_key: str | None
        twilio_auth_token: str | None
        sms_help_text: str
        open_tracking: bool
        import_address: str | None
        inbound_token: str | None

    @staticmethod
    def id_for(tenant_id: str) -> uuid.UUID:
        return uuid.uuid5(SETTINGS_NAMESPACE, f"provider-settings\x1f{tenant_id}")

    class Configured(Aggregate.Created):
        """The tenant's provider settings were recorded for the first time."""

        class_version = 1
        tenant_id: str
        signing_secret: str
        sendgrid_public_key: str | None
        twilio_auth_token: str | None
        sms_help_text: str
        open_tracking: bool
        import_address: str | None
        inbound_token: str | None

        def apply(self, settings: ProviderSettings) -> None:
            settings.tenant_id = self.tenant_id
            settings.signing_secret = self.signing_secret
            settings.settle(vars(self))

    class Changed(Aggregate.Event):
        """Some of the tenant's provider settings changed."""

        class_version = 1
        sendgrid_public_key: str | None
        twilio_auth_token: str | None
        sms_help_text: str
        open_tracking: bool
        import_address: str | None
        inbound_token: str | None

        def apply(self, settings: ProviderSettings) -> None:
            settings.settle(vars(self))

    def settle(self, fields: dict[str, Any]) -> None:
        self.sendgrid_public_key = fields["sendgrid_public_key"]
        self.twilio_auth_token = fields["twilio_auth_token"]
        self.sms_help_text = fields["sms_help_text"]
        self.open_tracking = fields["open_tracking"]
        self.import_address = fields["import_address"]
        self.inbound_token = fields["inbound_token"]

    def details(self) -> dict[str, Any]:
        return {
            "sendgrid_public_key": self.sendgrid_public_key,
            "twilio_auth_token": self.twilio_auth_token,
            "sms_help_text": self.sms_help_text,
            "open_tracking": self.open_tracking,
            "import_address": self.import_address,
            "inbound_token": self.inbound_token,
        }

    @property
    def secret(self) -> bytes:
        """The signing secret as bytes, the way the pixel URL's HMAC takes it."""
        return bytes.fromhex(self.signing_secret)
