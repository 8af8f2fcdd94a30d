"""Test tiers (see docs/architecture.md):

* ``tests/unit``: no torch, no aiortc (checked: a run of only this tier fails if either was
  imported);
* ``tests/model``: the FocalCodec model (torch);
* ``tests/integration``: real calls, subprocess CLI runs, fresh virtual environments, fuzzing at
  100k inputs; marked ``integration`` automatically.

CI runs all three (``.ci/run``). This file imports neither torch nor aiortc.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
INTEGRATION = TESTS / "integration"
HEAVY = ("torch", "aiortc")
"""Packages the unit tier must run without."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.integration)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    items = getattr(session, "items", [])
    if not items or not all(item.path.is_relative_to(UNIT) for item in items):
        return
    loaded = [name for name in HEAVY if name in sys.modules]
    if loaded:
        session.config.get_terminal_writer().line(
            f"unit tier imported {', '.join(loaded)}: tests/unit must run without torch and "
            "aiortc (move the test to tests/model or tests/integration)", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
