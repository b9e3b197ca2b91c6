"""The JSON API as a service uses it: tokens, company scoping, errors, sends, reads."""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from commands.application import Ledger
from commands.delivery import record_delivery_event
from commands.identity import AddUser, IssueToken, add_user, issue_token, revoke_token
from commands.inbound import record_inbound
from commands.models import RecordDeliveryEvent, RecordInbound
from commands.resend import resend_message
from ledger.access import parse_token
from ledger.errors import NotFound
from ledger.values import Permission, Principal

API = "/api/brightside"
EMAIL = {
    "customer_id": "c-ada",
    "channel": "email",
    "subject": "Your visit",
    "body": "See you on Monday.",
}


def events_in(ledger: Ledger) -> int:
    return ledger.recorder.max_notification_id() or 0


def fail_delivery(ledger: Ledger, staff: Principal, message_id: str) -> None:
    record_delivery_event(
        ledger,
        staff,
        RecordDeliveryEvent(
            message_id=message_id,
            outcome="failed",
            provider="smtp",
            provider_event_id=f"{message_id}-failed",
            reason="550 5.1.1 user unknown",
            detail={"code": 550, "text": "5.1.1 user unknown"},
        ),
    )


def test_a_request_without_credentials_is_refused_with_401(web, ledger, ada):
    before = events_in(ledger)

    response = web.post(f"{API}/messages", json=EMAIL)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthenticated"
    assert events_in(ledger) == before


def test_a_made_up_or_revoked_token_is_refused(web, ledger, staff, staff_auth):
    token_id, _ = parse_token(staff_auth["Authorization"].removeprefix("Bearer "))
    revoke_token(ledger, staff, token_id)

    revoked = web.get(f"{API}/templates", headers=staff_auth)
    made_up = web.get(
        f"{API}/templates",
        headers={"Authorization": f"Bearer mlt_{uuid.uuid4().hex}_x"},
    )

    assert revoked.status_code == 401
    assert made_up.status_code == 401


def test_a_reader_cannot_send_and_nothing_is_recorded(web, ledger, viewer_auth):
    before = events_in(ledger)

    response = web.post(f"{API}/messages", json=EMAIL, headers=viewer_auth)

    assert response.status_code == 403
    assert "messages:create" in response.json()["error"]["message"]
    assert events_in(ledger) == before


def test_another_companys_records_look_missing(web, staff_auth, outsider_auth):
    sent = web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()

    by_path = web.get(f"{API}/messages/{sent['message_id']}", headers=outsider_auth)
    own_path = web.get(
        f"/api/rival-clinic/messages/{sent['message_id']}", headers=outsider_auth
    )
    timeline = web.get(f"{API}/customers/c-ada/messages", headers=outsider_auth)
    missing_id = str(uuid.uuid4())
    missing = web.get(f"/api/rival-clinic/messages/{missing_id}", headers=outsider_auth)

    assert by_path.status_code == 404
    assert timeline.status_code == 404
    assert own_path.status_code == missing.status_code == 404
    assert own_path.text.replace(sent["message_id"], missing_id) == missing.text


def test_a_send_is_created_once_per_idempotency_key(web, ledger, staff_auth):
    headers = {**staff_auth, "Idempotency-Key": "visit-42"}

    first = web.post(f"{API}/messages", json=EMAIL, headers=headers)
    after_first = events_in(ledger)
    again = web.post(f"{API}/messages", json=EMAIL, headers=headers)
    changed = web.post(
        f"{API}/messages", json={**EMAIL, "body": "Other text"}, headers=headers
    )

    assert first.status_code == 201
    assert first.json()["created"] is True
    assert again.status_code == 200
    assert again.json()["message_id"] == first.json()["message_id"]
    assert changed.status_code == 409
    assert changed.json()["error"]["field"] == "idempotency_key"
    assert events_in(ledger) == after_first


def test_concurrent_sends_go_through_the_committer_and_each_gets_its_own_answer(
    web, ledger, staff_auth
):
    before = events_in(ledger)

    def send(number: int) -> Any:
        headers = {**staff_auth, "Idempotency-Key": f"burst-{number % 20}"}
        return web.post(f"{API}/messages", json=EMAIL, headers=headers)

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, range(40)))

    committer = web.app.state.services.sends._committer
    assert sorted(answer.status_code for answer in answers) == [200] * 20 + [201] * 20
    assert len({answer.json()["message_id"] for answer in answers}) == 20
    assert events_in(ledger) == before + 20
    assert committer.commands_committed == 20


def test_a_rejected_send_names_the_field_and_records_nothing(web, ledger, staff_auth):
    before = events_in(ledger)

    no_subject = web.post(
        f"{API}/messages", json={**EMAIL, "subject": None}, headers=staff_auth
    )
    no_customer = web.post(
        f"{API}/messages",
        json={k: v for k, v in EMAIL.items() if k != "customer_id"},
        headers=staff_auth,
    )
    bad_cc = web.post(
        f"{API}/messages", json={**EMAIL, "cc": ["not an address"]}, headers=staff_auth
    )

    assert no_subject.status_code == 422
    assert no_subject.json()["error"]["field"] == "subject"
    assert "subject" in no_subject.json()["error"]["message"]
    assert no_customer.status_code == 422
    assert no_customer.json()["error"]["field"] == "customer_id"
    assert bad_cc.json()["error"]["field"] == "cc"
    assert events_in(ledger) == before


def test_an_attachment_over_the_limit_is_refused(web, ledger, staff_auth):
    ledger.policy = type(ledger.policy)(attachment_limit_bytes=10)
    content = base64.b64encode(b"x" * 11).decode()

    response = web.post(
        f"{API}/messages",
        json={**EMAIL, "attachments": [{"name": "big.pdf", "content": content}]},
        headers=staff_auth,
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "attachments"


def test_the_timeline_searches_filters_and_pages_newest_first(web, staff_auth):
    for number in range(5):
        body = {**EMAIL, "subject": f"Visit {number}"}
        web.post(f"{API}/messages", json=body, headers=staff_auth)
    web.post(
        f"{API}/messages",
        json={"customer_id": "c-ada", "channel": "sms", "body": "Running late"},
        headers=staff_auth,
    )
    url = f"{API}/customers/c-ada/messages"

    first = web.get(url, params={"limit": 2}, headers=staff_auth).json()
    second = web.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=staff_auth
    ).json()
    searched = web.get(url, params={"q": "visit 3"}, headers=staff_auth).json()
    texts = web.get(url, params={"channel": "sms"}, headers=staff_auth).json()

    assert first["total"] == 6
    assert [m["subject"] for m in first["messages"]] == [None, "Visit 4"]
    assert [m["subject"] for m in second["messages"]] == ["Visit 3", "Visit 2"]
    assert [m["subject"] for m in searched["messages"]] == ["Visit 3"]
    assert [m["preview"] for m in texts["messages"]] == ["Running late"]


def test_the_projected_timeline_searches_filters_and_pages_the_same_way(
    projected_web, staff_auth
):
    web = projected_web
    for number in range(5):
        body = {**EMAIL, "subject": f"Visit {number}"}
        web.post(f"{API}/messages", json=body, headers=staff_auth)
    web.post(
        f"{API}/messages",
        json={"customer_id": "c-ada", "channel": "sms", "body": "Running late"},
        headers=staff_auth,
    )
    url = f"{API}/customers/c-ada/messages"

    first = web.get(url, params={"limit": 2}, headers=staff_auth).json()
    second = web.get(
        url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=staff_auth
    ).json()
    searched = web.get(url, params={"q": "running"}, headers=staff_auth).json()
    emails = web.get(url, params={"channel": "email"}, headers=staff_auth).json()
    bad_cursor = web.get(url, params={"cursor": "nonsense"}, headers=staff_auth)

    assert first["total"] == 6
    assert [m["subject"] for m in first["messages"]] == [None, "Visit 4"]
    assert [m["subject"] for m in second["messages"]] == ["Visit 3", "Visit 2"]
    assert [m["preview"] for m in searched["messages"]] == ["Running late"]
    assert emails["total"] == 5
    assert bad_cursor.json()["error"]["field"] == "cursor"


def test_a_cursor_that_was_not_given_out_is_refused_clearly(web, staff_auth):
    response = web.get(
        f"{API}/customers/c-ada/messages",
        params={"cursor": "garbage!"},
        headers=staff_auth,
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "cursor"


def test_the_detail_shows_history_and_the_providers_response(
    web, ledger, staff, staff_auth
):
    sent = web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()
    fail_delivery(ledger, staff, sent["message_id"])

    detail = web.get(f"{API}/messages/{sent['message_id']}", headers=staff_auth)

    body = detail.json()
    assert body["status"] == "failed"
    assert [h["event"] for h in body["history"]] == ["Queued", "Failed"]
    assert body["failure"]["detail"] == {"code": 550, "text": "5.1.1 user unknown"}
    assert body["to"] == ["ada.fernsby@example.com"]


def test_a_failed_message_can_be_retried_and_a_delivered_one_cannot(
    web, ledger, staff, staff_auth
):
    sent = web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()
    fail_delivery(ledger, staff, sent["message_id"])
    url = f"{API}/messages/{sent['message_id']}/retry"

    retried = web.post(url, headers=staff_auth)
    again = web.post(url, headers=staff_auth)

    assert retried.status_code == 200
    assert retried.json() == {
        "message_id": sent["message_id"],
        "status": "retried",
        "attempt": 2,
    }
    assert again.status_code == 409
    assert "only failed or bounced" in again.json()["error"]["message"]


def test_templates_are_saved_listed_and_previewed(web, staff_auth):
    saved = web.post(
        f"{API}/templates/welcome/versions",
        json={
            "channel": "email",
            "subject": "Welcome, {{ customer_first_name }}",
            "body": "Hello {{ customer_name }}, welcome to {{ company_name }}.",
        },
        headers=staff_auth,
    )
    listed = web.get(f"{API}/templates", headers=staff_auth)
    preview = web.post(
        f"{API}/messages/preview",
        json={"customer_id": "c-ada", "channel": "email", "template_id": "welcome"},
        headers=staff_auth,
    )

    assert saved.status_code == 201
    assert saved.json()["number"] == 1
    assert [t["template_id"] for t in listed.json()] == ["welcome"]
    assert preview.json()["subject"] == "Welcome, Ada"
    assert preview.json()["text"] == "Hello Ada Fernsby, welcome to Brightside Dental."


def test_a_template_with_a_syntax_error_names_the_field(web, ledger, staff_auth):
    before = events_in(ledger)

    response = web.post(
        f"{API}/templates/broken/versions",
        json={"channel": "sms", "body": "Hi {{ customer_name"},
        headers=staff_auth,
    )

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "body"
    assert events_in(ledger) == before


def test_sms_segments_are_counted_by_the_server(web, staff_auth):
    response = web.post(
        f"{API}/sms/segments", json={"body": "x" * 161}, headers=staff_auth
    )

    assert response.json() == {
        "encoding": "GSM-7",
        "segments": 2,
        "units": 161,
        "limit": 10,
    }


def test_customers_are_upserted_and_read_with_their_channels(web, staff_auth):
    saved = web.put(
        f"{API}/customers/c-bram",
        json={"name": "Bram Okafor", "email": "bram@example.org"},
        headers=staff_auth,
    )
    bad_phone = web.put(
        f"{API}/customers/c-bram",
        json={"name": "Bram Okafor", "cell_phone": "12"},
        headers=staff_auth,
    )
    read = web.get(f"{API}/customers/c-bram", headers=staff_auth)

    assert saved.status_code == 200
    assert read.json()["channels"] == ["email"]
    assert bad_phone.status_code == 422
    assert bad_phone.json()["error"]["field"] == "cell_phone"


def test_threads_group_replies_and_reports_count_statuses(
    web, ledger, staff, staff_auth
):
    sent = web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()
    fail_delivery(ledger, staff, sent["message_id"])
    web.post(f"{API}/messages", json={**EMAIL, "subject": "Other"}, headers=staff_auth)

    threads = web.get(f"{API}/customers/c-ada/threads", headers=staff_auth).json()
    report = web.get(f"{API}/reports/status", headers=staff_auth).json()

    assert len(threads["threads"]) == 2
    assert report == {
        "total": 2,
        "by_status": {"failed": 1, "queued": 1},
        "by_channel": {"email": {"failed": 1, "queued": 1}},
    }


def test_health_readiness_and_metrics_need_no_credentials(web, staff_auth):
    web.post(f"{API}/messages", json=EMAIL, headers=staff_auth)

    health = web.get("/health")
    ready = web.get("/ready")
    metrics = web.get("/metrics")

    assert health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready"}
    assert 'ledger_sends_total{channel="email",outcome="accepted"} 1.0' in metrics.text


def test_unknown_paths_answer_json_errors(web: TestClient):
    response = web.get("/api/brightside/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["code"] in {"http", "unauthenticated"}


def test_no_token_or_user_is_made_for_a_company_that_is_not_set_up(ledger):
    nobody = Principal("no-such-clinic", "eve", frozenset(Permission))

    with pytest.raises(NotFound):
        issue_token(ledger, nobody, IssueToken(name="x", permissions=[Permission.VIEW]))
    with pytest.raises(NotFound):
        add_user(
            ledger,
            nobody,
            AddUser(
                login="eve",
                display_name="Eve",
                password="long enough password",
                permissions=[Permission.VIEW],
            ),
        )


def test_delivery_reports_come_from_the_reporting_projection(
    projected_web, web, ledger, staff, staff_auth
):
    sent = projected_web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()
    fail_delivery(ledger, staff, sent["message_id"])
    projected_web.post(
        f"{API}/messages", json={**EMAIL, "subject": "Other"}, headers=staff_auth
    )

    funnel = projected_web.get(f"{API}/reports/delivery/funnel", headers=staff_auth)
    unknown = projected_web.get(f"{API}/reports/delivery/weekly", headers=staff_auth)
    without_projections = web.get(f"{API}/reports/delivery/funnel", headers=staff_auth)

    assert funnel.status_code == 200
    rows = [(r["provider"], r["queued"], r["failed"]) for r in funnel.json()]
    assert rows == [("none", 1, 0), ("smtp", 1, 1)]
    assert unknown.status_code == 422
    assert unknown.json()["error"]["field"] == "report"
    assert without_projections.status_code == 503


def reply_from_ada(ledger: Ledger, staff: Principal, to: str | None, body: str) -> str:
    return str(
        record_inbound(
            ledger,
            staff,
            RecordInbound(
                customer_id="c-ada",
                channel="email",
                sender="ada.fernsby@example.com",
                subject="Re: Your visit",
                body=body,
                in_reply_to=to,
            ),
        )
    )


def test_threads_and_the_status_report_read_the_same_from_projections_and_scan(
    projected_web, web, ledger, staff, staff_auth
):
    visit = web.post(f"{API}/messages", json=EMAIL, headers=staff_auth).json()
    fail_delivery(ledger, staff, visit["message_id"])
    resent = str(resend_message(ledger, staff, visit["message_id"]).message_id)
    first = reply_from_ada(ledger, staff, visit["message_id"], "Monday works.")
    second = reply_from_ada(ledger, staff, visit["message_id"], "Can I bring my son?")
    to_resend = reply_from_ada(ledger, staff, resent, "Got it twice!")
    unthreaded = reply_from_ada(ledger, staff, None, "Are you open on Saturdays?")
    sms = {"customer_id": "c-ada", "channel": "sms", "body": "See you Monday."}
    web.post(f"{API}/messages", json=sms, headers=staff_auth)

    scanned = web.get(f"{API}/customers/c-ada/threads", headers=staff_auth).json()
    projected = projected_web.get(
        f"{API}/customers/c-ada/threads", headers=staff_auth
    ).json()
    scanned_report = web.get(f"{API}/reports/status", headers=staff_auth).json()
    projected_report = projected_web.get(
        f"{API}/reports/status", headers=staff_auth
    ).json()

    assert projected == scanned
    shapes = {
        t["root"]["message_id"]: [r["message_id"] for r in t["replies"]]
        for t in projected["threads"]
    }
    assert shapes[visit["message_id"]] == [first, second]
    assert shapes[resent] == [to_resend]
    assert shapes[unthreaded] == []
    assert len(shapes) == 4
    assert projected["threads"][0]["root"]["channel"] == "sms"
    assert projected_report == scanned_report
    assert projected_report == {
        "total": 7,
        "by_status": {"failed": 1, "queued": 2, "received": 4},
        "by_channel": {
            "email": {"failed": 1, "queued": 1, "received": 4},
            "sms": {"queued": 1},
        },
    }


def test_the_projected_status_report_counts_from_since_and_checks_access(
    projected_web, ledger, staff, staff_auth, outsider_auth
):
    projected_web.post(f"{API}/messages", json=EMAIL, headers=staff_auth)

    future = projected_web.get(
        f"{API}/reports/status",
        params={"since": "2999-01-01T00:00:00"},
        headers=staff_auth,
    )
    past = projected_web.get(
        f"{API}/reports/status",
        params={"since": "2000-01-01T00:00:00+02:00"},
        headers=staff_auth,
    )
    outsider = projected_web.get(f"{API}/reports/status", headers=outsider_auth)
    missing = projected_web.get(f"{API}/customers/c-nobody/threads", headers=staff_auth)

    assert future.json() == {"total": 0, "by_status": {}, "by_channel": {}}
    assert past.json()["total"] == 1
    assert outsider.status_code == 404
    assert missing.status_code == 404
