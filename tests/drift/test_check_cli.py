"""``freshloop drift check-now`` and ``freshloop drift report`` on the real Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from freshloop.app.cli import cli
from freshloop.core.settings import load_settings
from tests.drift.check_fixtures import CheckWorld, check_world, vectors

__all__ = ["check_world"]

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(check_world: CheckWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[CheckWorld]:
    """The CLI reads its settings from the environment: point it at the world's namespace."""
    s = check_world.settings
    for name in (
        "redis_namespace",
        "drift_reference_size",
        "drift_current_size",
        "drift_min_samples",
    ):
        monkeypatch.setenv(f"FRESHLOOP_{name.upper()}", str(getattr(s, name)))
    load_settings.cache_clear()
    try:
        yield check_world
    finally:
        load_settings.cache_clear()


def test_check_now_then_report(cli_env: CheckWorld, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["drift", "report", "--latest"])
    assert missing.exit_code == 2
    assert "has no drift report yet" in missing.output

    now = datetime.now(UTC)
    cli_env.add(vectors(1, 300, shifted=False), start=now - timedelta(minutes=40))
    cli_env.add(vectors(2, 300, shifted=True), start=now - timedelta(minutes=10))
    checked = runner.invoke(cli, ["drift", "check-now", "--json"])
    assert checked.exit_code == 0, checked.output
    body = json.loads(checked.stdout)
    assert body["status"] == "drift" and body["namespace"] == cli_env.ns
    assert "html" not in body

    page = tmp_path / "report.html"
    shown = runner.invoke(cli, ["drift", "report", "--latest", "--html", str(page)])
    assert shown.exit_code == 0, shown.output
    assert f"drift report #{body['report_id']}" in shown.output
    assert "dataset_drift_share" in shown.output and "decision:" in shown.output
    assert page.read_text(encoding="utf-8").startswith("<!doctype html>")

    by_id = runner.invoke(cli, ["drift", "report", "--id", str(body["report_id"]), "--json"])
    assert json.loads(by_id.stdout)["summary"] == body["summary"]

    wrong = runner.invoke(cli, ["drift", "report", "--id", str(body["report_id"] + 10**9)])
    assert wrong.exit_code == 2 and "no drift report" in wrong.output
