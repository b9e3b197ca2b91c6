"""The staff pages over HTTP: sign-in, sessions and who sees which controls."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from commands.identity import deactivate_user
from tests.e2e.conftest import PASSWORD, form_token, sign_in_form

PAGE = "/brightside/customers/c-ada/customer-messages"
EMAIL = {
    "customer_id": "c-ada",
    "channel": "email",
    "subject": "Your visit",
    "body": "See you on Monday.",
}
SAME_SITE = {"X-Requested-With": "ledger"}


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    """Pages read what the API reads; one backend is enough here."""
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def sign_in(web: TestClient, login: str, password: str = PASSWORD) -> None:
    token = sign_in_form(web)
    response = web.post(
        "/login",
        data={"login": login, "password": password, "next": PAGE, "csrf_token": token},
    )
    assert response.status_code == 303, response.text


def test_a_page_without_a_session_redirects_to_the_sign_in_form(web, ada):
    response = web.get(PAGE)

    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={PAGE}"


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(
    web, staff_login
):
    token = sign_in_form(web)
    wrong_password = web.post(
        "/login", data={"login": "maria", "password": "nope", "csrf_token": token}
    )
    unknown_login = web.post(
        "/login", data={"login": "nobody", "password": "nope", "csrf_token": token}
    )

    assert wrong_password.status_code == unknown_login.status_code == 401
    assert "do not match" in wrong_password.text
    assert "ledger_session" not in wrong_password.headers.get("set-cookie", "")


def test_a_signed_in_sender_sees_the_tab_with_send_controls(web, staff_login):
    sign_in(web, staff_login)

    page = web.get(PAGE)

    assert page.status_code == 200
    assert "Messages <span" in page.text
    assert "+ New Message" in page.text


def test_a_reader_sees_no_send_or_retry_controls_and_is_refused_anyway(
    web, viewer_login
):
    sign_in(web, viewer_login)

    page = web.get(PAGE)
    send = web.post("/api/brightside/messages", json=EMAIL, headers=SAME_SITE)

    assert page.status_code == 200
    assert "New Message" not in page.text
    assert "Retry" not in page.text
    assert send.status_code == 403


def test_a_session_write_without_the_same_site_header_is_refused(
    web, ledger, staff_login
):
    sign_in(web, staff_login)
    before = ledger.recorder.max_notification_id()

    refused = web.post("/api/brightside/messages", json=EMAIL)
    accepted = web.post("/api/brightside/messages", json=EMAIL, headers=SAME_SITE)

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "cross_site"
    assert accepted.status_code == 201
    assert ledger.recorder.max_notification_id() == before + 1


def test_the_tab_lists_opens_and_filters_messages(web, staff_login):
    sign_in(web, staff_login)
    sent = web.post("/api/brightside/messages", json=EMAIL, headers=SAME_SITE).json()

    listed = web.get(PAGE)
    opened = web.get(PAGE, params={"message": sent["message_id"]})
    filtered = web.get(PAGE, params={"channel": "sms"})
    wrong_filter = web.get(PAGE, params={"channel": "fax"})

    assert "(1)" in listed.text
    assert "See you on Monday." in opened.text
    assert "Status history" in opened.text
    assert "(1)" in filtered.text
    assert "0 of 1 messages match." in filtered.text
    assert wrong_filter.status_code == 422
    assert "fax" in wrong_filter.text


def test_another_companys_page_is_not_found(web, staff_login, outsider_auth):
    sign_in(web, staff_login)

    response = web.get("/rival-clinic/customers/c-ada/customer-messages")

    assert response.status_code == 404


def test_signing_out_ends_the_session(web, staff_login):
    sign_in(web, staff_login)
    token = form_token(web.get(PAGE).text)

    web.post("/logout", data={"csrf_token": token})
    response = web.get(PAGE)

    assert response.status_code == 303


def test_sign_in_never_sends_the_browser_to_another_host(web, staff_login):
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example"):
        token = sign_in_form(web)
        response = web.post(
            "/login",
            data={
                "login": "maria",
                "password": PASSWORD,
                "next": target,
                "csrf_token": token,
            },
        )

        assert response.headers["location"] == "/brightside/customers"


def test_a_deactivated_users_session_stops_working(web, ledger, staff, staff_login):
    sign_in(web, staff_login)

    deactivate_user(ledger, staff, staff_login)
    page = web.get(PAGE)
    again = web.post(
        "/login",
        data={"login": "maria", "password": PASSWORD, "csrf_token": sign_in_form(web)},
    )

    assert page.status_code == 303
    assert again.status_code == 401


def test_a_sign_in_without_the_form_token_is_refused_with_a_clear_message(
    web, staff_login
):
    sign_in_form(web)

    refused = web.post("/login", data={"login": "maria", "password": PASSWORD})

    assert refused.status_code == 403
    assert "security token is missing or does not match" in refused.text
    assert "Reload the page" in refused.text
    assert "ledger_session" not in refused.headers.get("set-cookie", "")


def test_a_token_from_another_browser_does_not_sign_in(web, staff_login):
    with TestClient(web.app, follow_redirects=False) as attacker:
        attackers_token = sign_in_form(attacker)
    sign_in_form(web)

    refused = web.post(
        "/login",
        data={"login": "maria", "password": PASSWORD, "csrf_token": attackers_token},
    )

    assert refused.status_code == 403
    assert "ledger_session" not in refused.headers.get("set-cookie", "")


def test_a_form_posted_without_the_presession_cookie_names_the_cookie(web, staff_login):
    token = sign_in_form(web)
    web.cookies.clear()

    refused = web.post(
        "/login", data={"login": "maria", "password": PASSWORD, "csrf_token": token}
    )

    assert refused.status_code == 403
    assert "allow cookies for this site" in refused.text


def test_signing_in_replaces_the_presession_so_older_tokens_stop_working(
    web, staff_login
):
    before = sign_in_form(web)
    sign_in(web, staff_login)

    stale = web.post("/logout", data={"csrf_token": before})
    page = web.get(PAGE)

    assert stale.status_code == 403
    assert page.status_code == 200
    assert form_token(page.text) != before


def test_signing_out_without_the_form_token_is_refused(web, staff_login):
    sign_in(web, staff_login)

    refused = web.post("/logout")
    page = web.get(PAGE)

    assert refused.status_code == 403
    assert "security token" in refused.text
    assert page.status_code == 200
