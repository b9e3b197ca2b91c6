"""Recipient addresses: email syntax checks and phone numbers in E.164.

Both checks are pure (no DNS look-up) and cached, because the same customers
are messaged over and over and each check costs tens of microseconds.
"""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from ledger.errors import InvalidCommand


def normalise_email(address: str, field: str) -> str:
    """The address in normal form, or InvalidCommand naming `field`."""
    normal = _normal_email(address.strip())
    if normal is None:
        raise InvalidCommand(
            field, f"'{address}' is not a valid email address; check its spelling."
        )
    return normal


def normalise_phone(number: str, region: str, field: str) -> str:
    """The number in E.164 form, or InvalidCommand naming `field`."""
    normal = _normal_phone(number.strip(), region.upper())
    if normal is None:
        raise InvalidCommand(
            field,
            f"'{number}' is not a valid phone number for region {region.upper()}; "
            "write it with its country code, such as +15555550123.",
        )
    return normal


def split_addresses(value: str | list[str] | None) -> list[str]:
    """Addresses from a comma-separated string or a list, blanks dropped."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for part in items for item in part.split(",") if item.strip()]


@lru_cache(maxsize=65536)
def _normal_email(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


@lru_cache(maxsize=65536)
def _normal_phone(number: str, region: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
