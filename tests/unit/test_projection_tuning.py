"""Interpreter settings a catch-up changes are put back when the last user leaves."""

from __future__ import annotations

import gc
import sys

from projections.runtime import InterpreterTuning


def test_settings_change_while_in_use_and_come_back_after_the_last_user():
    before = (sys.getswitchinterval(), gc.get_threshold())
    tuning = InterpreterTuning(switch_seconds=0.0002, collect_every=12_345)

    with tuning():
        with tuning():
            inner = (sys.getswitchinterval(), gc.get_threshold()[0])
        still = (sys.getswitchinterval(), gc.get_threshold()[0])
    after = (sys.getswitchinterval(), gc.get_threshold())

    assert inner == still
    assert abs(inner[0] - 0.0002) < 1e-9
    assert inner[1] == 12_345
    assert after == before


def test_settings_come_back_when_the_work_inside_fails():
    before = (sys.getswitchinterval(), gc.get_threshold())
    tuning = InterpreterTuning(switch_seconds=0.0002, collect_every=12_345)

    try:
        with tuning():
            raise RuntimeError("the catch-up failed")
    except RuntimeError:
        pass

    assert (sys.getswitchinterval(), gc.get_threshold()) == before
