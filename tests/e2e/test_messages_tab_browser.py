"""The Messages tab in headless Chromium, driven as office staff would use it.

One server over a seeded demo ledger serves the whole module; each test works
on its own customer so the order of tests does not matter. Screenshots land in
LEDGER_SCREENSHOTS when set (to look at them), else in a temporary directory.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    expect,
    sync_playwright,
)

from adapters.blobs import FileBlobStore
from adapters.serve import DEMO_PASSWORD, build_app, seed_embedded
from adapters.store import store_environment
from adapters.wiring import Settings
from commands.application import Ledger
from commands.ports import SendPolicy

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ATTACHMENT_LIMIT = 64 * 1024

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ledger serve`'s app over a seeded SQLite ledger, with the demo users."""
    home = tmp_path_factory.mktemp("serve")
    env = {"LEDGER_HOME": str(home)}
    settings = Settings.from_env(env)
    ledger = Ledger(
        env=store_environment(settings.database_url),
        policy=SendPolicy(attachment_limit_bytes=ATTACHMENT_LIMIT),
        blobs=FileBlobStore(settings.blob_dir),
    )
    seed_embedded(ledger)
    port = free_port()
    app, reads = build_app(ledger, settings, env)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    reads.close()
    ledger.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("LEDGER_SCREENSHOTS", str(tmp_path)))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(browser: Browser, base_url: str, login: str) -> BrowserContext:
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/demo/customers")
    page.close()
    return context


@pytest.fixture(scope="module")
def maria(browser: Browser, base_url: str) -> Iterator[BrowserContext]:
    """A browser signed in as a user who may send."""
    context = sign_in(browser, base_url, "maria")
    yield context
    context.close()


@pytest.fixture(scope="module")
def sam(browser: Browser, base_url: str) -> Iterator[BrowserContext]:
    """A browser signed in as a user who may only read."""
    context = sign_in(browser, base_url, "sam")
    yield context
    context.close()


def opened(context: BrowserContext, path: str) -> Page:
    page = context.new_page()
    page.goto(path)
    return page


def tab(customer_id: str) -> str:
    return f"/demo/customers/{customer_id}/customer-messages"


def test_staff_sign_in_search_and_open_a_message(browser, base_url, shots):
    context = browser.new_context(
        base_url=base_url, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    page.goto(tab("c-1001"))
    page.screenshot(path=shots / "login.png")
    page.get_by_label("Login").fill("maria")
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{tab('c-1001')}")
    expect(page.get_by_test_id("message-count")).to_have_text(re.compile(r"\(\d+\)"))
    page.screenshot(path=shots / "tab.png", full_page=True)

    page.get_by_label("Search messages").fill("statement")
    page.get_by_role("button", name="Search").click()
    rows = page.locator("tbody tr.row")
    expect(rows.first).to_contain_text("Your statement")
    expect(page.get_by_test_id("match-count")).to_have_text("1 of 4 messages match.")
    rows.first.locator("td.party").click()

    detail = page.locator("#message-detail")
    expect(detail).to_contain_text("Your statement is attached.")
    expect(detail.get_by_role("link", name="statement.pdf")).to_be_visible()
    expect(detail.get_by_role("table")).to_contain_text("Queued")
    page.screenshot(path=shots / "detail.png", full_page=True)
    context.close()


def test_staff_retry_a_failed_message(maria, shots):
    page = opened(maria, tab("c-1003"))
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Search").click()
    page.locator("tbody tr.row").first.locator("td.time").click()
    expect(page.get_by_test_id("provider-response")).to_contain_text("550")
    page.screenshot(path=shots / "failed.png", full_page=True)

    page.get_by_role("button", name="Retry").click()

    detail = page.locator("#message-detail")
    expect(detail).to_contain_text("Retried")
    expect(detail).to_contain_text("attempt 2")


def test_staff_send_an_email_from_a_template_with_an_attachment(maria, shots, tmp_path):
    page = opened(maria, tab("c-1002"))
    page.get_by_role("button", name="+ New Message").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("To")).to_have_value("bram.okafor@example.org")

    dialog.get_by_label("Template").select_option("appointment-confirmation")
    dialog.get_by_label("appointment time").fill("July 4 at 10:00")
    expect(dialog.get_by_label("Subject")).to_have_value(
        "Your appointment on July 4 at 10:00"
    )
    expect(dialog.locator("#preview")).to_contain_text("Hello Bram")
    letter = tmp_path / "directions.txt"
    letter.write_text("Take the second left.")
    dialog.get_by_label("Attachments").set_input_files(str(letter))
    page.screenshot(path=shots / "new-email.png", full_page=True)
    dialog.get_by_role("button", name="Send").click()

    detail = page.locator("#message-detail")
    expect(detail).to_contain_text("Your appointment on July 4 at 10:00")
    expect(detail.get_by_role("link", name="directions.txt")).to_be_visible()
    expect(detail).to_contain_text("maria")


def test_sms_counts_segments_and_shows_errors_next_to_the_field(maria, shots):
    page = opened(maria, tab("c-1006"))
    page.get_by_role("button", name="+ New Message").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_label("Channel").locator("option")).to_have_count(1)
    expect(dialog.get_by_label("Subject")).to_be_hidden()

    dialog.get_by_label("Body").fill("x" * 170)
    expect(dialog.locator("#segments")).to_contain_text("2 segments")
    dialog.get_by_label("To").fill("12")
    dialog.get_by_role("button", name="Send").click()

    expect(dialog.locator("#err-to")).to_contain_text("12")
    expect(dialog.get_by_label("To")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=shots / "new-sms-error.png", full_page=True)


def test_an_attachment_over_the_limit_is_caught_before_sending(maria, tmp_path):
    page = opened(maria, tab("c-1007"))
    page.get_by_role("button", name="+ New Message").click()
    dialog = page.get_by_role("dialog")
    big = tmp_path / "scan.pdf"
    big.write_bytes(b"%" * (ATTACHMENT_LIMIT + 1))

    dialog.get_by_label("Attachments").set_input_files(str(big))

    expect(dialog.locator("#err-attachments")).to_contain_text("the limit is")
    expect(dialog.get_by_role("button", name="Send")).to_be_disabled()


def test_a_reader_sees_no_send_or_retry_controls(sam):
    page = opened(sam, tab("c-1008"))
    page.get_by_label("Status").select_option("bounced")
    page.get_by_role("button", name="Search").click()
    page.locator("tbody tr.row").first.locator("td.time").click()

    expect(page.locator("#message-detail")).to_contain_text("Bounced")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="+ New Message")).to_have_count(0)


def test_every_control_on_the_tab_has_a_label(maria):
    page = opened(maria, tab("c-1004"))
    page.get_by_role("button", name="+ New Message").click()

    unlabelled = page.evaluate(
        """() => Array.from(document.querySelectorAll("input, select, textarea"))
            .filter((c) => c.type !== "hidden" && c.labels.length === 0
                && !c.getAttribute("aria-label"))
            .map((c) => c.name || c.id)"""
    )

    assert unlabelled == []
