"""Setup per target: the demo installs what the service needs, the tests add theirs.

The headless browser (only the dashboard's test uses it) is installed by ``make test``'s set-up
(``freshloop stack setup --for-tests``), never by ``make demo`` or by ``freshloop stack up``;
the dev extras (pytest, mypy, ...) likewise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from freshloop.stack import setup

ROOT = Path(__file__).resolve().parents[2]


def test_the_browser_is_missing_only_for_the_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(setup.shutil, "which", lambda _binary: None)  # nothing installed
    monkeypatch.setattr(setup, "find_postgres_bindir", lambda: None)
    for_service, extra = setup.missing_packages()
    assert "chromium" not in for_service and extra == []
    assert {"redis-server", "postgresql"} <= set(for_service)
    for_service_too, for_tests = setup.missing_packages(for_tests=True)
    assert for_service_too == for_service and for_tests == ["chromium"]


def _dry_run(target: str) -> str:
    """What ``make <target>`` would run, every prerequisite taken as out of date."""
    done = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_demo_sets_up_no_test_tools_and_make_test_does() -> None:
    demo = _dry_run("demo")
    assert "freshloop stack setup" in demo and "freshloop demo" in demo
    assert "--for-tests" not in demo and "[dev]" not in demo
    test = _dry_run("test")
    assert "freshloop stack setup --for-tests" in test and "'.[dev]'" in test
    assert test.index("--for-tests") < test.index("pytest")
