"""The SMS provider on a Twilio-compatible REST API (httpx).

One form POST to `{base}/2010-04-01/Accounts/{sid}/Messages.json` with To,
From, Body and, when configured, StatusCallback; basic auth with the account
sid and auth token. The answer's `sid` is the provider message id that status
callbacks later name.

How answers map to outcomes: 2xx with a sid accepted; 429 and 5xx transient; a
connection that cannot be made transient; a timeout or a dropped connection
after the request went out unknown; error codes that name the recipient (21211
invalid number, 21610 opted out, 21614 not a mobile number, 21612 unreachable
route) permanent; any other 4xx permanent too, since sending the same request
again cannot succeed. Every try carries an `Idempotency-Key` header, the same
for every try of one attempt, for gateways that deduplicate on it; Twilio
itself documents no such key, so there an unknown outcome can become a
duplicate text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from commands.ports import OutcomeKind, OutgoingSms, SendOutcome

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.twilio.com"
RECIPIENT_ERRORS = {
    21211: "The number is not a valid phone number.",
    21610: "The recipient has opted out of texts from this number (replied STOP).",
    21612: "The number cannot be reached from this sender.",
    21614: "The number is not a mobile number.",
}


@dataclass(frozen=True)
class TwilioSettings:
    """The account and endpoint of a Twilio-compatible Messages API."""

    account_sid: str
    auth_token: str
    api_url: str = DEFAULT_API_URL
    status_callback: str | None = None
    timeout: float = 10.0

    @property
    def messages_url(self) -> str:
        base = self.api_url.rstrip("/")
        return f"{base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"


class TwilioSmsProvider:
    """Sends texts through the Messages resource; one HTTP client, kept open."""

    name = "twilio"

    def __init__(
        self, settings: TwilioSettings, client: httpx.AsyncClient | None = None
    ) -> None:
        self.settings = settings
        self.client = client or httpx.AsyncClient(timeout=settings.timeout)

    async def send_sms(self, sms: OutgoingSms) -> SendOutcome:
        """One try at handing the text to the API."""
        form = {"To": sms.to, "From": sms.sender, "Body": sms.body}
        if self.settings.status_callback:
            form["StatusCallback"] = self.settings.status_callback
        try:
            response = await self.client.post(
                self.settings.messages_url,
                data=form,
                auth=(self.settings.account_sid, self.settings.auth_token),
                headers={"Idempotency-Key": sms.idempotency_key},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return self.outcome(
                OutcomeKind.TRANSIENT,
                f"Could not reach the SMS API ({type(exc).__name__}).",
                {"error": type(exc).__name__, "response": str(exc)},
            )
        except httpx.HTTPError as exc:
            return self.outcome(
                OutcomeKind.UNKNOWN,
                f"The SMS API did not answer in time or dropped the connection "
                f"({type(exc).__name__}).",
                {"error": type(exc).__name__, "response": str(exc)},
            )
        return self.answer(sms, response)

    def answer(self, sms: OutgoingSms, response: httpx.Response) -> SendOutcome:
        """The outcome an HTTP answer means; the body is kept verbatim."""
        detail: dict[str, Any] = {"status": response.status_code, "body": response.text}
        body = parse_json(response)
        if response.is_success:
            sid = body.get("sid")
            if not isinstance(sid, str) or not sid:
                return self.outcome(
                    OutcomeKind.PERMANENT,
                    f"The SMS API answered {response.status_code} without a message "
                    "sid; check the provider's log before retrying.",
                    detail,
                )
            return SendOutcome(
                OutcomeKind.ACCEPTED,
                self.name,
                provider_message_id=sid,
                accepted=(sms.to,),
                detail=detail,
            )
        code = body.get("code")
        message = body.get("message") or response.reason_phrase
        reason = f"The SMS API answered {response.status_code}"
        reason += f" with error {code}: {message}" if code else f": {message}"
        if code in RECIPIENT_ERRORS:
            reason = f"{RECIPIENT_ERRORS[code]} ({reason})"
        if response.status_code == 429 or response.status_code >= 500:
            return self.outcome(OutcomeKind.TRANSIENT, reason, detail)
        return self.outcome(OutcomeKind.PERMANENT, reason, detail)

    def outcome(
        self, kind: OutcomeKind, reason: str, detail: dict[str, Any]
    ) -> SendOutcome:
        return SendOutcome(kind, self.name, reason, detail=detail)

    async def close(self) -> None:
        await self.client.aclose()


def parse_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object in the body, or an empty one if there is none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
