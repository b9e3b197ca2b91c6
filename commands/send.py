"""The send use case: turn a SendMessage into a Queued message, or refuse it.

The decision runs in this order, and nothing is stored unless every step passes:
permission, idempotent repeat, company and customer, template render, channel
rules, recipients, suppression, attachments. Attachment bytes are written to
the blob store only after the rules pass; a save that then fails leaves at most
an unreferenced, content-addressed blob behind.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from commands.access import require
from commands.application import Creation, Decision, Ledger
from commands.directory import company_of
from commands.message_ids import new_message_id
from commands.models import MergeValue, SendMessage
from commands.ports import now
from commands.suppressions import check_not_suppressed
from commands.templates import template_content
from ledger.addresses import normalise_email, normalise_phone
from ledger.directory import Company, Customer
from ledger.errors import IdempotencyKeyReused, InvalidCommand, NotFound
from ledger.message import Message, idempotent_message_id
from ledger.rendering import RenderedContent, render
from ledger.sms import count_segments
from ledger.template import Template
from ledger.values import Attribution, Channel, Direction, Permission, Principal, Status

MAX_SUBJECT = 200


@dataclass(frozen=True)
class SendReceipt:
    """The answer to a send: the message, and whether this call created it."""

    message_id: uuid.UUID
    status: Status
    created: bool


@dataclass
class Draft:
    """A message as the rules decided it, before it is recorded."""

    channel: Channel
    sender: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str | None = None
    text: str = ""
    html: str | None = None
    template_id: str | None = None
    template_version: int | None = None
    merge_values: dict[str, Any] = field(default_factory=dict)
    sms_encoding: str | None = None
    sms_segments: int | None = None


def send_message(
    ledger: Ledger, principal: Principal, command: SendMessage
) -> SendReceipt:
    """Record a message to a customer as Queued and return its receipt."""
    return ledger.execute(lambda: decide_send(ledger, principal, command))


def decide_send(
    ledger: Ledger, principal: Principal, command: SendMessage
) -> Decision[SendReceipt]:
    require(principal, Permission.CREATE)
    # Only a keyed command can come again, so only it needs a fingerprint.
    fingerprint = ""
    if command.idempotency_key:
        fingerprint = command.fingerprint()
        message_id = idempotent_message_id(principal.tenant_id, command.idempotency_key)
        original = ledger.load(Message, message_id)
        if original is not None:
            return Decision(repeat_of(original, command, fingerprint))
    else:
        message_id = new_message_id()

    draft = draft_message(ledger, principal, command)
    check_not_suppressed(
        ledger,
        principal.tenant_id,
        draft.channel,
        draft.to + draft.cc + draft.bcc,
        command.category,
    )
    attachments = store_attachments(ledger, command)

    attribution = Attribution(principal.user_id, command.trigger)
    queued = Message.queue(
        message_id,
        tenant_id=principal.tenant_id,
        customer_id=command.customer_id,
        occurred_at=now(),
        direction=Direction.OUTBOUND.value,
        channel=draft.channel.value,
        category=command.category,
        sender=draft.sender,
        to=draft.to,
        cc=draft.cc,
        bcc=draft.bcc,
        subject=draft.subject,
        text=draft.text,
        html=draft.html,
        template_id=draft.template_id,
        template_version=draft.template_version,
        merge_values=draft.merge_values,
        attachments=attachments,
        sent_by=attribution.as_dict(),
        idempotency_key=command.idempotency_key,
        fingerprint=fingerprint,
        sms_encoding=draft.sms_encoding,
        sms_segments=draft.sms_segments,
        resend_of=command.resend_of,
    )
    receipt = SendReceipt(message_id, Status.QUEUED, created=True)
    return Decision(receipt, [Creation(queued)])


def repeat_of(original: Message, command: SendMessage, fingerprint: str) -> SendReceipt:
    """The original message's receipt, if this really is the same command."""
    if original.fingerprint != fingerprint:
        raise IdempotencyKeyReused(command.idempotency_key or "", original.id)
    return SendReceipt(original.id, original.status, created=False)


def draft_message(ledger: Ledger, principal: Principal, command: SendMessage) -> Draft:
    """Apply the send rules to a command; raises InvalidCommand on the first fault."""
    company = company_of(ledger, principal)
    customer = ledger.load(
        Customer, Customer.id_for(principal.tenant_id, command.customer_id)
    )
    if customer is None:
        raise NotFound("customer", command.customer_id)

    content, template = render_content(ledger, principal, command, company, customer)
    draft = address(company, customer, command)
    draft.subject = command.subject or content.subject
    draft.text = command.body or content.text
    draft.html = command.html or content.html
    if template is not None:
        draft.template_id = template.template_id
        draft.template_version = command.template_version or len(template.versions)
        draft.merge_values = dict(command.merge_values)
    check_content(ledger, command, draft)
    return draft


def address(company: Company, customer: Customer, command: SendMessage) -> Draft:
    """Sender and recipients: To defaults to what the customer record holds."""
    if command.channel == Channel.EMAIL:
        if not customer.email:
            raise InvalidCommand(
                "channel",
                f"Customer '{customer.customer_id}' has no email address on file, "
                "so they cannot be emailed; add one to the customer first.",
            )
        if not company.email_sender:
            raise InvalidCommand(
                "channel",
                "The company has no email sender set up; set its email sender first.",
            )
        return Draft(
            channel=Channel.EMAIL,
            sender=company.email_sender,
            to=[normalise_email(command.to or customer.email, "to")],
            cc=[normalise_email(a, "cc") for a in command.cc],
            bcc=[normalise_email(a, "bcc") for a in command.bcc],
        )

    if not customer.cell_phone:
        raise InvalidCommand(
            "channel",
            f"Customer '{customer.customer_id}' has no cell phone on file, "
            "so they cannot be texted; add one to the customer first.",
        )
    if not company.sms_sender:
        raise InvalidCommand(
            "channel",
            "The company has no SMS number set up; set its SMS sender first.",
        )
    for name in ("cc", "bcc", "attachments"):
        if getattr(command, name):
            raise InvalidCommand(name, f"{name} is for email only; remove it for SMS.")
    if command.html:
        raise InvalidCommand("html", "SMS bodies are plain text; remove the HTML.")
    to = command.to or customer.cell_phone
    return Draft(
        channel=Channel.SMS,
        sender=company.sms_sender,
        to=[normalise_phone(to, company.default_region, "to")],
    )


def render_content(
    ledger: Ledger,
    principal: Principal,
    command: SendMessage,
    company: Company,
    customer: Customer,
) -> tuple[RenderedContent, Template | None]:
    """The template's render with this customer's merge values, if one is named."""
    if command.template_id is None:
        return RenderedContent(subject=None, text="", html=None), None
    template = ledger.load(
        Template, Template.id_for(principal.tenant_id, command.template_id)
    )
    if template is None or not template.versions:
        raise NotFound("template", command.template_id)
    if template.channel != command.channel:
        raise InvalidCommand(
            "template_id",
            f"Template '{command.template_id}' is for {template.channel}, "
            f"not {command.channel.value}; pick a {command.channel.value} template.",
        )
    version = template.pick_version(command.template_version)
    values = merge_values(principal, company, customer, command.merge_values)
    return render(template_content(version), values, command.channel), template


def merge_values(
    principal: Principal,
    company: Company,
    customer: Customer,
    given: dict[str, MergeValue],
) -> dict[str, MergeValue]:
    """The standard merge tags, overridden by whatever the caller passed."""
    values: dict[str, MergeValue] = {
        "customer_name": customer.name,
        "customer_first_name": customer.first_name,
        "customer_email": customer.email,
        "customer_phone": customer.cell_phone,
        "company_name": company.name,
    }
    if principal.display_name:
        values["rep_name"] = principal.display_name
    values.update(given)
    return values


def check_content(ledger: Ledger, command: SendMessage, draft: Draft) -> None:
    """Subject and body rules, per channel."""
    if draft.channel == Channel.EMAIL:
        check_subject(draft.subject)
    elif command.subject:
        raise InvalidCommand("subject", "SMS has no subject; remove it.")
    else:
        draft.subject = None
    if not draft.text.strip():
        raise InvalidCommand("body", "The body is empty; write at least one character.")
    if draft.channel == Channel.SMS:
        count = count_segments(draft.text)
        limit = ledger.policy.max_sms_segments
        if count.segments > limit:
            raise InvalidCommand(
                "body",
                f"The SMS is {count.segments} segments ({count.encoding}); the limit "
                f"is {limit}. Shorten it"
                + (
                    " or avoid characters outside GSM-7."
                    if count.encoding == "UCS-2"
                    else "."
                ),
            )
        draft.sms_encoding = count.encoding
        draft.sms_segments = count.segments


def check_subject(subject: str | None) -> None:
    if not subject or not subject.strip():
        raise InvalidCommand("subject", "An email needs a subject; write one.")
    if "\n" in subject or "\r" in subject:
        raise InvalidCommand(
            "subject", "The subject has a line break; write it on one line."
        )
    if len(subject) > MAX_SUBJECT:
        raise InvalidCommand(
            "subject",
            f"Subject is {len(subject)} characters; the limit is {MAX_SUBJECT}.",
        )


def store_attachments(ledger: Ledger, command: SendMessage) -> list[dict[str, Any]]:
    """Check the size limit, store the bytes and return the metadata to record."""
    total = sum(len(a.content) for a in command.attachments)
    limit = ledger.policy.attachment_limit_bytes
    if total > limit:
        raise InvalidCommand(
            "attachments",
            f"Attachments total {total / 1048576:.1f} MB; the limit is "
            f"{limit / 1048576:.1f} MB. Send fewer or smaller files.",
        )
    return [
        {
            "name": a.name,
            "media_type": a.resolved_media_type,
            "size": len(a.content),
            "sha256": ledger.blobs.put(a.content),
        }
        for a in command.attachments
    ]


def preview_message(
    ledger: Ledger, principal: Principal, command: SendMessage
) -> Draft:
    """The message a send would record, rendered and checked; nothing is stored."""
    require(principal, Permission.CREATE)
    return draft_message(ledger, principal, command)
