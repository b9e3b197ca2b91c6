"""The SMS provider against a local HTTP server that speaks Twilio's Messages API."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from adapters.outbox import MaildirOutbox
from adapters.twilio_sms import TwilioSettings, TwilioSmsProvider
from commands.application import Ledger
from commands.delivery import get_message
from commands.dispatch import Dispatcher, DispatchPolicy
from commands.models import SendMessage
from commands.ports import OutcomeKind, OutgoingSms, SendOutcome
from commands.send import send_message
from ledger.message import Message
from ledger.values import Principal, Status
from tests.integration.smtp_sink import free_port

SID = "AC0123456789abcdef0123456789abcdef"
TOKEN = "test-auth-token"
SLOW_SECONDS = 1.0


@dataclass
class FakeTwilio:
    """Answers POSTs to the Messages resource as `script` says, one step each."""

    script: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def messages(self, request: Request) -> Response:
        expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return error(401, 20003, "Authentication Error - invalid username")
        form = await request.form()
        self.requests.append(
            {
                "account": request.path_params["account"],
                "form": dict(form),
                "idempotency_key": request.headers.get("idempotency-key"),
            }
        )
        step = self.script.pop(0) if self.script else "ok"
        if step == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if step == "429":
            return error(429, 20429, "Too Many Requests")
        if step == "500":
            return PlainTextResponse("upstream exploded", status_code=500)
        if step == "no-sid":
            return JSONResponse({"status": "queued"}, status_code=201)
        if step.isdigit():
            return error(400, int(step), f"Error {step} for {form['To']}")
        return JSONResponse(
            {"sid": f"SM{uuid.uuid4().hex}", "status": "queued", "to": form["To"]},
            status_code=201,
        )


def error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "status": status}, status_code=status
    )


@pytest.fixture
def twilio() -> Iterator[tuple[FakeTwilio, str]]:
    """The fake API running in a uvicorn thread; yields it and its base URL."""
    fake = FakeTwilio()
    app = Starlette(
        routes=[
            Route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                fake.messages,
                methods=["POST"],
            )
        ]
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield fake, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def provider(url: str, token: str = TOKEN) -> TwilioSmsProvider:
    return TwilioSmsProvider(
        TwilioSettings(
            account_sid=SID,
            auth_token=token,
            api_url=url,
            status_callback="https://ledger.brightside.example/webhooks/twilio",
            timeout=SLOW_SECONDS / 4,
        )
    )


def text() -> OutgoingSms:
    message_id = uuid.uuid4()
    return OutgoingSms(
        message_id=message_id,
        attempt=1,
        sender="+12015550100",
        to="+12015550111",
        body="Your appointment is confirmed.",
        idempotency_key=f"{message_id}.1",
    )


def send(sms_provider: TwilioSmsProvider, sms: OutgoingSms) -> SendOutcome:
    async def go() -> SendOutcome:
        try:
            return await sms_provider.send_sms(sms)
        finally:
            await sms_provider.close()

    return asyncio.run(go())


def test_accepted_text_returns_the_sid_and_posts_the_form(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, url = twilio
    sms = text()

    outcome = send(provider(url), sms)

    assert outcome.kind == OutcomeKind.ACCEPTED
    assert outcome.provider_message_id and outcome.provider_message_id.startswith("SM")
    assert outcome.accepted == ("+12015550111",)
    [request] = fake.requests
    assert request["account"] == SID
    assert request["form"] == {
        "To": "+12015550111",
        "From": "+12015550100",
        "Body": "Your appointment is confirmed.",
        "StatusCallback": "https://ledger.brightside.example/webhooks/twilio",
    }
    assert request["idempotency_key"] == sms.idempotency_key


@pytest.mark.parametrize("step", ["429", "500"])
def test_rate_limits_and_server_errors_are_transient(
    twilio: tuple[FakeTwilio, str], step: str
) -> None:
    fake, url = twilio
    fake.script = [step]

    outcome = send(provider(url), text())

    assert outcome.kind == OutcomeKind.TRANSIENT
    assert outcome.detail["status"] == int(step)


def test_unexpected_body_is_kept_verbatim(twilio: tuple[FakeTwilio, str]) -> None:
    fake, url = twilio
    fake.script = ["500"]

    outcome = send(provider(url), text())

    assert outcome.detail["body"] == "upstream exploded"


@pytest.mark.parametrize(
    ("code", "words"),
    [("21211", "not a valid phone number"), ("21610", "opted out")],
)
def test_recipient_error_codes_are_permanent(
    twilio: tuple[FakeTwilio, str], code: str, words: str
) -> None:
    fake, url = twilio
    fake.script = [code]

    outcome = send(provider(url), text())

    assert outcome.kind == OutcomeKind.PERMANENT
    assert words in outcome.reason and code in outcome.reason


def test_timeout_after_the_request_went_out_is_an_unknown_outcome(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, url = twilio
    fake.script = ["slow"]

    outcome = send(provider(url), text())

    assert outcome.kind == OutcomeKind.UNKNOWN
    assert len(fake.requests) == 1


def test_success_without_a_sid_fails_keeping_the_answer(
    twilio: tuple[FakeTwilio, str],
) -> None:
    fake, url = twilio
    fake.script = ["no-sid"]

    outcome = send(provider(url), text())

    assert outcome.kind == OutcomeKind.PERMANENT
    assert outcome.detail == {"status": 201, "body": '{"status":"queued"}'}


def test_wrong_credentials_are_a_permanent_failure(
    twilio: tuple[FakeTwilio, str],
) -> None:
    _, url = twilio

    outcome = send(provider(url, token="wrong"), text())

    assert outcome.kind == OutcomeKind.PERMANENT
    assert "401" in outcome.reason and "20003" in outcome.reason


def test_api_that_is_down_is_a_transient_failure() -> None:
    outcome = send(provider(f"http://127.0.0.1:{free_port()}"), text())

    assert outcome.kind == OutcomeKind.TRANSIENT


def dispatch(ledger: Ledger, url: str, tmp_path: Path) -> None:
    dispatcher = Dispatcher(
        ledger,
        MaildirOutbox(tmp_path / "mail"),
        provider(url),
        DispatchPolicy(max_tries=4, first_backoff=0.01),
    )

    async def go() -> None:
        try:
            await dispatcher.drain()
        finally:
            await dispatcher.sms.close()

    asyncio.run(go())


def queue_text(ledger: Ledger, staff: Principal, ada: str) -> str:
    command = SendMessage(customer_id=ada, channel="sms", body="See you Tuesday.")
    return str(send_message(ledger, staff, command).message_id)


def test_dispatcher_retries_with_the_same_key_until_the_text_is_accepted(
    ledger: Ledger,
    staff: Principal,
    ada: str,
    twilio: tuple[FakeTwilio, str],
    tmp_path: Path,
) -> None:
    fake, url = twilio
    fake.script = ["429", "slow", "ok"]
    message_id = queue_text(ledger, staff, ada)

    dispatch(ledger, url, tmp_path)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.SENT
    keys = {request["idempotency_key"] for request in fake.requests}
    assert keys == {f"{message_id}.1"}
    sent = [e for e in ledger.events.get(message.id) if isinstance(e, Message.Sent)]
    assert len(sent) == 1
    assert sent[0].provider == "twilio"
    assert sent[0].provider_message_id in message.provider_message_ids


def test_dispatcher_fails_an_opted_out_number_at_once(
    ledger: Ledger,
    staff: Principal,
    ada: str,
    twilio: tuple[FakeTwilio, str],
    tmp_path: Path,
) -> None:
    fake, url = twilio
    fake.script = ["21610"]
    message_id = queue_text(ledger, staff, ada)

    dispatch(ledger, url, tmp_path)

    message = get_message(ledger, staff, message_id)
    assert message.status == Status.FAILED
    [failed] = [
        e for e in ledger.events.get(message.id) if isinstance(e, Message.Failed)
    ]
    assert failed.permanent
    assert "opted out" in failed.reason
    assert '"code":21610' in failed.detail["body"]
    assert len(fake.requests) == 1
