"""The demo company: customers, templates and messages in every state.

Seeding is idempotent: sends carry idempotency keys and provider events carry
event ids, so running it again records nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.application import Ledger
from commands.delivery import record_delivery_event, retry_message
from commands.directory import register_company, upsert_customer
from commands.inbound import record_inbound
from commands.models import (
    RecordDeliveryEvent,
    RecordInbound,
    RegisterCompany,
    RetryMessage,
    SaveTemplate,
    SendMessage,
    UpsertCustomer,
)
from commands.send import send_message
from commands.templates import save_template
from ledger.message import Message
from ledger.template import Template
from ledger.values import Channel, Permission, Principal, Status

TENANT = "demo"
STAFF = Principal(TENANT, "maria.lopez", frozenset(Permission), "Maria Lopez")
SYSTEM = Principal(TENANT, None, frozenset(Permission))

CUSTOMERS = [
    ("c-1001", "Ada Fernsby", "individual", "ada.fernsby@example.com", "+12015550111"),
    ("c-1002", "Bram Okafor", "individual", "bram.okafor@example.org", "+12015550112"),
    ("c-1003", "Chen Wei", "individual", "chen.wei@example.net", "+12015550113"),
    ("c-1004", "Dolores O'Brien", "individual", "dolores@example.com", None),
    ("c-1005", "Evergreen Clinic", "business", "accounts@evergreen.example", None),
    ("c-1006", "Farid Haddad", "individual", None, "+12015550116"),
    ("c-1007", "Greta Lindqvist", "individual", "greta.l@example.org", "+12015550117"),
    ("c-1008", "Harbor Freight Co", "business", "ap@harbor.example", "+12015550118"),
]

TEMPLATES = [
    SaveTemplate(
        template_id="appointment-confirmation",
        channel=Channel.EMAIL,
        subject="Your appointment on {{ appointment_time }}",
        body=(
            "Hello {{ customer_first_name }},\n\nThis confirms your appointment on "
            "{{ appointment_time }} with {{ company_name }}.\n\nSee you then,\n"
            "{{ rep_name | default(company_name) }}"
        ),
        html=(
            "<p>Hello {{ customer_first_name }},</p><p>This confirms your "
            "appointment on <strong>{{ appointment_time }}</strong>.</p>"
        ),
        description="Sent when an appointment is booked.",
    ),
    SaveTemplate(
        template_id="due-reminder",
        channel=Channel.SMS,
        body=(
            "{{ company_name }}: hi {{ customer_first_name }}, ticket "
            "{{ ticket_number }} is due {{ due_date }}. Reply STOP to opt out."
        ),
        description="Text reminder before a due date.",
    ),
    SaveTemplate(
        template_id="payment-receipt",
        channel=Channel.EMAIL,
        subject="Receipt for your payment of {{ amount }}",
        body=(
            "Dear {{ customer_name }},\n\nWe received your payment of {{ amount }}. "
            "Thank you.\n\n{{ company_name }}"
        ),
        description="Sent when a payment is recorded.",
    ),
]


@dataclass(frozen=True)
class DemoSummary:
    customers: int
    templates: int
    messages: int


@dataclass(frozen=True)
class Scene:
    """One demo message: how it is sent and what then happens to it."""

    key: str
    customer: str
    channel: Channel
    command: dict[str, object]
    outcomes: tuple[str, ...] = ()
    reply: str | None = None


def scenes() -> list[Scene]:
    found = []
    states = [
        ("delivered",),
        ("delivered", "opened"),
        ("failed",),
        ("bounced",),
        (),
        ("delivered",),
        ("failed", "retry", "delivered"),
    ]
    for number, (customer_id, _, _, email, phone) in enumerate(CUSTOMERS * 4):
        outcomes = states[number % len(states)]
        if email and number % 3 != 2:
            command: dict[str, object] = {
                "channel": Channel.EMAIL,
                "template_id": "appointment-confirmation",
                "merge_values": {"appointment_time": f"June {number % 28 + 1} at 9:30"},
            }
            if number % 5 == 0:
                command = {
                    "channel": Channel.EMAIL,
                    "subject": "Your statement",
                    "body": "Hello,\nYour statement is attached.",
                    "attachments": [
                        {
                            "name": "statement.pdf",
                            "media_type": "application/pdf",
                            "content": b"%PDF-1.4 demo statement",
                        }
                    ],
                    "trigger": "StatementEmailed",
                }
        elif phone:
            outcomes = tuple(o for o in outcomes if o != "opened")
            command = {
                "channel": Channel.SMS,
                "template_id": "due-reminder",
                "merge_values": {
                    "ticket_number": f"T-{400 + number}",
                    "due_date": "Friday",
                },
                "trigger": "TicketDueSoon",
            }
        else:
            continue
        reply = "Thanks, see you then!" if number % 6 == 1 else None
        channel = Channel(str(command["channel"]))
        found.append(
            Scene(f"demo-{number}", customer_id, channel, command, outcomes, reply)
        )
    return found


def seed_demo(ledger: Ledger) -> DemoSummary:
    """Create (or find again) the demo company and its history."""
    register_company(
        ledger,
        STAFF,
        RegisterCompany(
            name="Brightside Dental",
            email_sender="office@brightside.example",
            sms_sender="+12015550100",
        ),
    )
    for customer_id, name, kind, email, phone in CUSTOMERS:
        upsert_customer(
            ledger,
            STAFF,
            UpsertCustomer(
                customer_id=customer_id,
                name=name,
                customer_type=kind,
                email=email,
                cell_phone=phone,
            ),
        )
    for template in TEMPLATES:
        if not template_exists(ledger, template.template_id):
            save_template(ledger, STAFF, template)
    played = [play(ledger, scene) for scene in scenes()]
    return DemoSummary(len(CUSTOMERS), len(TEMPLATES), len(played))


def template_exists(ledger: Ledger, template_id: str) -> bool:
    return ledger.load(Template, Template.id_for(TENANT, template_id)) is not None


def play(ledger: Ledger, scene: Scene) -> str:
    sender = SYSTEM if "trigger" in scene.command else STAFF
    receipt = send_message(
        ledger,
        sender,
        SendMessage.model_validate(
            {
                "customer_id": scene.customer,
                "idempotency_key": scene.key,
                **scene.command,
            }
        ),
    )
    message_id = str(receipt.message_id)
    attempt = 1
    for step, outcome in enumerate(scene.outcomes):
        if outcome == "retry":
            message = ledger.load(Message, receipt.message_id)
            if message is not None and message.status == Status.FAILED:
                retry_message(ledger, STAFF, RetryMessage(message_id=message_id))
            attempt += 1
            continue
        if step == 0 or scene.outcomes[step - 1] == "retry":
            report(ledger, message_id, "sent", attempt, f"{scene.key}-{attempt}-sent")
        report(ledger, message_id, outcome, attempt, f"{scene.key}-{attempt}-{outcome}")
    if scene.reply and receipt.created:
        record_inbound(
            ledger,
            SYSTEM,
            RecordInbound(
                customer_id=scene.customer,
                channel=scene.channel,
                sender=sender_of(scene.customer, scene.channel),
                body=scene.reply + "\n\nOn Monday you wrote:\n> Hello",
                in_reply_to=message_id,
            ),
        )
    return message_id


def report(
    ledger: Ledger,
    message_id: str,
    outcome: str,
    attempt: int,
    event_id: str,
) -> None:
    failure = {
        "failed": "Mailbox unavailable (550 5.1.1 user unknown)",
        "bounced": "550 5.1.1 The email account does not exist",
    }
    record_delivery_event(
        ledger,
        SYSTEM,
        RecordDeliveryEvent.model_validate(
            {
                "message_id": message_id,
                "outcome": outcome,
                "provider": "demo",
                "provider_event_id": event_id,
                "provider_message_id": f"{message_id}-{attempt}",
                "attempt": attempt,
                "reason": failure.get(outcome),
                "status_code": "5.1.1" if outcome == "bounced" else None,
            }
        ),
    )


def sender_of(customer_id: str, channel: Channel) -> str:
    for cid, _, _, email, phone in CUSTOMERS:
        if cid == customer_id:
            address = email if channel == Channel.EMAIL else phone
            return address or ""
    return ""
