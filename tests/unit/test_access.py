"""Passwords, API tokens and session cookies: stored and checked without secrets."""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import ValidationError

from adapters.http.sessions import session_user, session_value
from commands.identity import AddUser
from ledger.access import (
    hash_password,
    parse_token,
    password_matches,
    secret_digest,
    token_text,
)

SECRET = b"k" * 64


def test_a_password_hash_holds_no_password_and_checks_only_that_password():
    encoded = hash_password("correct horse battery")

    assert "correct horse" not in encoded
    assert encoded.startswith("scrypt$16384$8$1$")
    assert password_matches("correct horse battery", encoded)
    assert not password_matches("correct horse batterz", encoded)


def test_two_hashes_of_one_password_differ_by_their_salt():
    assert hash_password("same password!") != hash_password("same password!")


def test_a_token_reads_back_to_its_id_and_secret():
    token_id = uuid.uuid4()

    parsed = parse_token(token_text(token_id, "abc_def-ghi"))

    assert parsed == (token_id, "abc_def-ghi")


def test_text_that_is_not_a_token_is_not_parsed():
    assert parse_token("Bearer something") is None
    assert parse_token("mlt_nothex_secret") is None
    assert parse_token(f"mlt_{uuid.uuid4().hex}_") is None


def test_a_token_secret_is_stored_as_its_digest_only():
    assert secret_digest("s3cret") != "s3cret"
    assert len(secret_digest("s3cret")) == 64


def test_a_session_cookie_names_its_user_until_it_expires():
    user_id = uuid.uuid4()

    fresh = session_value(SECRET, user_id, hours=1)
    expired = session_value(SECRET, user_id, hours=-1)

    assert session_user(SECRET, fresh) == user_id
    assert session_user(SECRET, expired) is None


def test_a_forged_or_damaged_session_cookie_names_nobody():
    user_id = uuid.uuid4()
    value = session_value(SECRET, user_id, hours=1)
    payload, _, mac = value.rpartition(".")
    later = f"{user_id.hex}.{int(time.time()) + 99999}"

    assert session_user(b"other" * 13, value) is None
    assert session_user(SECRET, f"{later}.{mac}") is None
    assert session_user(SECRET, "garbage") is None
    assert session_user(SECRET, payload) is None


def test_a_password_shorter_than_ten_characters_is_refused():
    with pytest.raises(ValidationError, match="use at least 10"):
        AddUser(
            login="omar",
            display_name="Omar Said",
            password="short",
            permissions=["messages:view"],
        )
