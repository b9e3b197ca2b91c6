"""Use cases for the suppression list."""

from __future__ import annotations

import uuid

from commands.access import require
from commands.application import Decision, Ledger
from commands.directory import company_of
from commands.models import Suppress, Unsuppress
from commands.ports import now
from ledger.addresses import normalise_email, normalise_phone
from ledger.directory import Company
from ledger.errors import NotFound, RecipientSuppressed
from ledger.message import Message
from ledger.suppression import ALL, MARKETING, Suppression, scopes_stopping
from ledger.values import Channel, Permission, Principal


def normal_address(company: Company, channel: Channel, address: str) -> str:
    """The form suppressions are keyed by: normalised email, or E.164."""
    if channel == Channel.EMAIL:
        return normalise_email(address, "address")
    return normalise_phone(address, company.default_region, "address")


def suppress(ledger: Ledger, principal: Principal, command: Suppress) -> Suppression:
    """Put an address on the suppression list (again)."""
    require(principal, Permission.CREATE)
    company = company_of(ledger, principal)
    address = normal_address(company, command.channel, command.address)
    source = principal.user_id or "System"
    return ledger.execute(
        lambda: decide_suppression(
            ledger,
            company.tenant_id,
            command.channel,
            address,
            command.reason,
            source,
            command.scope,
        )
    )


def decide_suppression(
    ledger: Ledger,
    tenant_id: str,
    channel: Channel,
    address: str,
    reason: str,
    source: str,
    scope: str = ALL,
) -> Decision[Suppression]:
    suppression_id = Suppression.id_for(tenant_id, channel, address, scope)
    suppression = ledger.load(Suppression, suppression_id)
    if suppression is None:
        suppression = Suppression._create(
            Suppression.Added,
            id=suppression_id,
            tenant_id=tenant_id,
            channel=channel.value,
            address=address,
            scope=scope,
            reason=reason,
            source=source,
            occurred_at=now(),
        )
    else:
        suppression.reinstate(reason, source, now())
    return Decision(suppression, [suppression])


ONE_CLICK_SOURCE = "list-unsubscribe-post"


def unsubscribe_by_link(ledger: Ledger, message_id: uuid.UUID) -> list[Suppression]:
    """Stop marketing email to the recipients of the email whose one-click link
    was used.

    The caller has checked the link's signature, which names the message (RFC
    8058). Its To recipients are suppressed for marketing on its channel, for
    its tenant, in one transaction; transactional email still reaches them. An
    address already suppressed is left as it is, so a mail client that posts
    the link twice records nothing the second time. Only marketing email
    carries the link: any other message is answered NotFound.
    """

    def decide() -> Decision[list[Suppression]]:
        message = ledger.load(Message, message_id)
        if message is None or message.category != "marketing":
            raise NotFound("marketing message", message_id)
        reason = f"unsubscribed with the one-click link of message {message_id}"
        decisions = [
            decide_suppression(
                ledger,
                message.tenant_id,
                Channel(message.channel),
                address,
                reason,
                ONE_CLICK_SOURCE,
                MARKETING,
            )
            for address in dict.fromkeys(a.lower() for a in message.to)
        ]
        return Decision(
            [d.result for d in decisions], [a for d in decisions for a in d.aggregates]
        )

    return ledger.execute(decide)


def unsuppress(
    ledger: Ledger, principal: Principal, command: Unsuppress
) -> Suppression:
    """Take an address off the suppression list."""
    require(principal, Permission.CREATE)
    company = company_of(ledger, principal)
    address = normal_address(company, command.channel, command.address)
    source = principal.user_id or "System"

    def decide() -> Decision[Suppression]:
        suppression = ledger.load(
            Suppression,
            Suppression.id_for(
                company.tenant_id, command.channel, address, command.scope
            ),
        )
        if suppression is None or not suppression.active:
            raise NotFound(
                "suppression", f"{command.channel.value} {address} ({command.scope})"
            )
        suppression.lift(command.reason, source, now())
        return Decision(suppression, [suppression])

    return ledger.execute(decide)


def suppression_ids(
    tenant_id: str, channel: Channel, addresses: list[str], category: str
) -> list[uuid.UUID]:
    """The suppressions that could stop a message of `category` to these addresses."""
    return [
        Suppression.id_for(tenant_id, channel, address, scope)
        for address in addresses
        for scope in scopes_stopping(category)
    ]


def check_not_suppressed(
    ledger: Ledger,
    tenant_id: str,
    channel: Channel,
    addresses: list[str],
    category: str = "transactional",
) -> None:
    """Refuse a message of `category` that names any address suppressed for it."""
    for address in addresses:
        for scope in scopes_stopping(category):
            suppression = ledger.load(
                Suppression, Suppression.id_for(tenant_id, channel, address, scope)
            )
            if suppression is not None and suppression.active:
                raise RecipientSuppressed(channel.value, address, suppression.reason)
