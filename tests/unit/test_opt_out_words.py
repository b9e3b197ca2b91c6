"""Which whole messages are SMS keywords, and which are ordinary replies."""

from __future__ import annotations

import pytest

from commands.opt_out import Keyword, keyword_of


@pytest.mark.parametrize(
    "text",
    [
        "STOP",
        "stop",
        "Stop.",
        " STOPALL ",
        "Unsubscribe!",
        "cancel",
        "END",
        "quit",
        "Revoke",
        "OPTOUT",
        "opt out",
        "Opt Out!!",
        "please stop",
    ],
)
def test_opt_out_words_in_any_case_and_punctuation_are_stop(text: str) -> None:
    assert keyword_of(text) == Keyword.STOP


@pytest.mark.parametrize("text", ["START", "unstop", "Yes", "yes!"])
def test_opt_in_words_are_start(text: str) -> None:
    assert keyword_of(text) == Keyword.START


@pytest.mark.parametrize("text", ["HELP", "help?", "Info"])
def test_help_words_are_help(text: str) -> None:
    assert keyword_of(text) == Keyword.HELP


@pytest.mark.parametrize(
    "text",
    [
        "Cancel my appointment",
        "End of the day works",
        "Yes please, Tuesday is fine",
        "Can you help me reschedule?",
        "",
    ],
)
def test_sentences_that_contain_a_keyword_are_ordinary_replies(text: str) -> None:
    assert keyword_of(text) is None
