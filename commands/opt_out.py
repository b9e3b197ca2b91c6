"""SMS keywords: STOP and its synonyms, START to come back, HELP for help.

A keyword is the whole message once case, surrounding spaces and punctuation
are set aside ("Stop.", " UNSUBSCRIBE! "), or one of a few unambiguous
phrases ("please stop", "stop texting me"). Words that are also ordinary
replies in a sentence ("Cancel my appointment", "End of the day works") are
left alone: a false opt-out silences a customer who asked for the opposite.

An opt-out suppresses the number for every one of the tenant's numbers (the
suppression list is keyed by tenant, channel and address) and queues one
confirmation; a repeated STOP finds the number already suppressed and queues
nothing. The confirmation and the HELP answer are queued past the suppression
check on purpose: carriers expect exactly these two to reach an opted-out
number. Their `sent_by.trigger` says which they are.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from commands.application import Decision, Ledger, Recordable
from commands.ports import now
from commands.suppressions import decide_suppression
from ledger.directory import Company
from ledger.message import Message
from ledger.provider_settings import DEFAULT_HELP_TEXT, ProviderSettings
from ledger.sms import count_segments
from ledger.suppression import HELP_ANSWER, OPT_OUT_CONFIRMATION, Suppression
from ledger.values import Attribution, Channel, Direction

logger = logging.getLogger(__name__)

REPLY_NAMESPACE = uuid.UUID("a41e6f0b-93c2-4d57-8b1a-0c7e2f9d3b64")
STOP_WORDS = frozenset(
    {"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"}
)
STOP_PHRASES = frozenset(
    {
        "opt out",
        "opt-out",
        "please stop",
        "stop please",
        "stop texting me",
        "stop messaging me",
        "unsubscribe me",
        "opt me out",
    }
)
START_WORDS = frozenset({"start", "unstop", "yes"})
HELP_WORDS = frozenset({"help", "info"})
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")

OPT_OUT_TRIGGER = OPT_OUT_CONFIRMATION
HELP_TRIGGER = HELP_ANSWER


class Keyword(StrEnum):
    """What a whole SMS asks for."""

    STOP = "stop"
    START = "start"
    HELP = "help"


def keyword_of(text: str) -> Keyword | None:
    """The keyword a whole SMS amounts to, or None for an ordinary message."""
    words = " ".join(_EDGE.sub("", text.strip()).casefold().split())
    if words in STOP_WORDS or words in STOP_PHRASES:
        return Keyword.STOP
    if words in START_WORDS:
        return Keyword.START
    if words in HELP_WORDS:
        return Keyword.HELP
    return None


@dataclass(frozen=True)
class KeywordOutcome:
    """What a keyword did: the suppression's state and any reply queued."""

    keyword: Keyword
    suppressed: bool
    reply_id: uuid.UUID | None


def apply_keyword(
    ledger: Ledger,
    tenant_id: str,
    keyword: Keyword,
    number: str,
    our_number: str,
    customer_id: str | None,
    inbound_key: str,
) -> KeywordOutcome:
    """Suppress, lift or answer, once per inbound message, in one transaction."""
    outcome = ledger.execute(
        lambda: decide_keyword(
            ledger, tenant_id, keyword, number, our_number, customer_id, inbound_key
        )
    )
    logger.info(
        "sms keyword %s from a customer number: reply %s", keyword, outcome.reply_id
    )
    return outcome


def decide_keyword(
    ledger: Ledger,
    tenant_id: str,
    keyword: Keyword,
    number: str,
    our_number: str,
    customer_id: str | None,
    inbound_key: str,
) -> Decision[KeywordOutcome]:
    """Decide the suppression change and automatic answer a keyword calls for."""
    aggregates: list[Recordable] = []
    text: str | None = None
    trigger = HELP_TRIGGER
    if keyword == Keyword.STOP:
        decision = decide_suppression(
            ledger, tenant_id, Channel.SMS, number, "replied STOP", "sms-keyword"
        )
        if decision.writes:
            aggregates.extend(decision.aggregates)
            text = confirmation_text(ledger, tenant_id)
            trigger = OPT_OUT_TRIGGER
    elif keyword == Keyword.START:
        suppression = ledger.load(
            Suppression, Suppression.id_for(tenant_id, Channel.SMS, number)
        )
        if suppression is not None and suppression.active:
            suppression.lift("replied START", "sms-keyword", now())
            aggregates.append(suppression)
    else:
        settings = ledger.load(ProviderSettings, ProviderSettings.id_for(tenant_id))
        text = settings.sms_help_text if settings else DEFAULT_HELP_TEXT

    reply_id = None
    if text is not None and customer_id is not None:
        reply_id = reply_id_for(tenant_id, trigger, inbound_key)
        if ledger.load(Message, reply_id) is None:
            aggregates.append(
                queue_reply(
                    tenant_id, customer_id, our_number, number, text, trigger, reply_id
                )
            )
    suppressed = keyword == Keyword.STOP or (
        keyword == Keyword.HELP and is_suppressed(ledger, tenant_id, number)
    )
    outcome = KeywordOutcome(keyword, suppressed, reply_id)
    return Decision(outcome, aggregates)


def reply_id_for(tenant_id: str, trigger: str, inbound_key: str) -> uuid.UUID:
    """One automatic answer per inbound message, however often it is delivered."""
    return uuid.uuid5(REPLY_NAMESPACE, f"{tenant_id}\x1f{trigger}\x1f{inbound_key}")


def is_suppressed(ledger: Ledger, tenant_id: str, number: str) -> bool:
    """Whether the number is on the tenant's SMS suppression list."""
    suppression = ledger.load(
        Suppression, Suppression.id_for(tenant_id, Channel.SMS, number)
    )
    return suppression is not None and suppression.active


def confirmation_text(ledger: Ledger, tenant_id: str) -> str:
    """The one opt-out confirmation, naming the company."""
    company = ledger.load(Company, Company.id_for(tenant_id))
    name = company.name if company else "us"
    return f"You will get no more texts from {name}. Reply START to get them again."


def queue_reply(
    tenant_id: str,
    customer_id: str,
    our_number: str,
    number: str,
    text: str,
    trigger: str,
    reply_id: uuid.UUID,
) -> Message:
    """An automatic SMS answer to a keyword, queued past the suppression check."""
    segments = count_segments(text)
    return Message._create(
        Message.Queued,
        id=reply_id,
        tenant_id=tenant_id,
        customer_id=customer_id,
        occurred_at=now(),
        direction=Direction.OUTBOUND.value,
        channel=Channel.SMS.value,
        category="transactional",
        sender=our_number,
        to=[number],
        cc=[],
        bcc=[],
        subject=None,
        text=text,
        html=None,
        template_id=None,
        template_version=None,
        merge_values={},
        attachments=[],
        sent_by=Attribution(None, trigger).as_dict(),
        idempotency_key=None,
        fingerprint=hashlib.sha256(text.encode()).hexdigest(),
        sms_encoding=segments.encoding,
        sms_segments=segments.segments,
        resend_of=None,
    )
