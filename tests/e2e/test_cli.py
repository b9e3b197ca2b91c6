"""The `ledger` command as an operator runs it, on a fresh embedded store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LEDGER = Path(sys.executable).with_name("ledger")


def runner(home: Path):
    env = {
        **os.environ,
        "LEDGER_HOME": str(home),
        "LEDGER_USER": "maria.lopez",
        "COLUMNS": "160",
    }
    env.pop("LEDGER_DATABASE_URL", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(LEDGER), *args], env=env, capture_output=True, text=True, timeout=60
        )

    return run


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home seeded by `ledger demo` once; each test works on its own copy."""
    home = tmp_path_factory.mktemp("demo") / "home"
    result = runner(home)("demo")
    assert result.returncode == 0, result.stderr
    return home


@pytest.fixture
def run_ledger(tmp_path: Path):
    return runner(tmp_path / "home")


@pytest.fixture
def run_demo(tmp_path: Path, demo_home: Path):
    shutil.copytree(demo_home, tmp_path / "home")
    return runner(tmp_path / "home")


def test_the_demo_creates_a_company_and_lists_a_customers_messages(run_ledger):
    result = run_ledger("demo")

    assert result.returncode == 0, result.stderr
    assert "Demo company demo: 8 customers, 3 templates" in result.stdout
    assert "Messages (" in result.stdout


def test_running_the_demo_twice_records_nothing_new(run_ledger):
    run_ledger("demo")
    before = json.loads(run_ledger("messages", "c-1002", "--json").stdout)

    run_ledger("demo")
    after = json.loads(run_ledger("messages", "c-1002", "--json").stdout)

    assert after == before


def test_a_send_then_shows_in_the_listing_and_its_history(run_demo):
    sent = run_demo(
        "send",
        "c-1003",
        "--channel",
        "email",
        "--subject",
        "Hello",
        "--body",
        "First line\nsecond line",
        "--json",
    )
    receipt = json.loads(sent.stdout)
    listing = json.loads(run_demo("messages", "c-1003", "--json").stdout)
    shown = json.loads(run_demo("show", receipt["message_id"], "--json").stdout)

    assert sent.returncode == 0, sent.stderr
    assert listing["messages"][0]["message_id"] == receipt["message_id"]
    assert listing["messages"][0]["preview"] == "First line"
    assert listing["messages"][0]["sent_by"] == "maria.lopez"
    assert [entry["event"] for entry in shown["history"]] == ["Queued"]


def test_a_user_mistake_prints_one_sentence_and_exits_non_zero(run_demo):
    result = run_demo(
        "send", "c-1006", "--channel", "email", "--subject", "Hi", "--body", "Hi"
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no email address on file" in result.stderr


def test_preview_counts_sms_segments_and_records_nothing(run_demo):
    before = json.loads(run_demo("messages", "c-1006", "--json").stdout)["count"]

    result = run_demo(
        "preview",
        "c-1006",
        "--channel",
        "sms",
        "--template",
        "due-reminder",
        "--merge",
        "ticket_number=T-1",
        "--merge",
        "due_date=Monday",
        "--json",
    )
    after = json.loads(run_demo("messages", "c-1006", "--json").stdout)["count"]

    shown = json.loads(result.stdout)
    assert shown["sms"] == {
        "encoding": "GSM-7",
        "segments": 1,
        "units": len(shown["text"]),
    }
    assert after == before


def test_retry_of_a_failed_message_starts_attempt_two(run_demo):
    listing = json.loads(run_demo("messages", "c-1002", "--json").stdout)
    failed = next(m for m in listing["messages"] if m["status"] == "failed")

    result = run_demo("retry", failed["message_id"])
    shown = json.loads(run_demo("show", failed["message_id"], "--json").stdout)

    assert result.returncode == 0, result.stderr
    assert shown["status"] == "retried"
    assert shown["attempt"] == 2


def test_an_unknown_message_is_reported_without_a_traceback(run_ledger):
    result = run_ledger("show", "not-a-message")

    assert result.returncode == 1
    assert "No message 'not-a-message' exists in this company." in result.stderr


def test_resend_queues_a_linked_copy_to_the_customers_current_address(run_demo):
    listing = json.loads(run_demo("messages", "c-1002", "--json").stdout)
    original = next(
        m
        for m in listing["messages"]
        if m["direction"] == "outbound" and m["channel"] == "email"
    )
    before = json.loads(run_demo("show", original["message_id"], "--json").stdout)
    moved = run_demo(
        "customers",
        "add",
        "c-1002",
        "--name",
        "Bram Okafor",
        "--email",
        "bram@okafor.example.net",
        "--phone",
        "+1 201 555 0112",
    )
    assert moved.returncode == 0, moved.stderr

    result = run_demo("resend", original["message_id"])

    assert result.returncode == 0, result.stderr
    found = re.search(r"Queued message (\S+), a resend of (\S+)\.", result.stdout)
    assert found is not None, result.stdout
    copy_id, resent_id = found.groups()
    assert resent_id == original["message_id"] and copy_id != resent_id
    copy = json.loads(run_demo("show", copy_id, "--json").stdout)
    assert copy["resend_of"] == original["message_id"]
    assert copy["to"] == ["bram@okafor.example.net"]
    assert (copy["subject"], copy["text"], copy["html"]) == (
        before["subject"],
        before["text"],
        before["html"],
    )
    assert copy["status"] == "queued"
    assert [entry["event"] for entry in copy["history"]] == ["Queued"]
    after = json.loads(run_demo("show", original["message_id"], "--json").stdout)
    assert after == before
    listing_after = json.loads(run_demo("messages", "c-1002", "--json").stdout)
    assert listing_after["count"] == listing["count"] + 1
