"""The dashboard in a real headless browser (Debian's chromium): the page loads from a live
server, its script fetches the summary and shows the numbers put in Redis and Postgres, and a
screenshot is taken. The browser gives the token once (``/?token=``); the page then reads the
summary with the session cookie it got."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from freshloop.core.settings import Settings
from tests.freshloop.app.api.fixtures import ApiHandle, api, api_ns, insert_report, write_stats

pytestmark = pytest.mark.integration

__all__ = ["api", "api_ns"]  # fixtures, re-exported for pytest

_BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert _BROWSER is not None
    command = [
        _BROWSER,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match is not None, f"no element #{element_id} in the page"
    return match.group(1)


@pytest.mark.skipif(
    _BROWSER is None,
    reason="no chromium: 'make test' ('freshloop stack setup --for-tests') installs it as "
    "root (else: sudo apt-get install chromium)",
)
def test_the_dashboard_shows_live_numbers_in_a_browser(
    api: ApiHandle, api_ns: Settings, tmp_path: Path
) -> None:
    write_stats(
        api_ns,
        "browser-test",
        applied=321,
        lags_ms=[6.5] * 10,
        applied_total=987654,
        dead_lettered_total=3,
    )
    insert_report(api_ns, "ok", {"dataset_drift_share": 0.125})
    report = insert_report(
        api_ns,
        "drift",
        {"dataset_drift_share": 0.625, "skew_status": "ok", "skew_beyond_share": 0.0},
        decision={"action": "retrain"},
    )

    done = _chromium(tmp_path, "--dump-dom", f"{api.url}/?token={api.token}")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Filled in by the page's script from /api/summary (the served HTML holds only dashes).
    assert _text_of(dom, "namespace") == api_ns.namespace
    assert _text_of(dom, "applied-total") == "987,654"
    assert _text_of(dom, "events-per-s") == "321.0"
    assert _text_of(dom, "lag-p50") == "6.5"
    assert _text_of(dom, "dead-lettered") == "3"
    assert _text_of(dom, "drift-status") == "drift"
    assert _text_of(dom, "drift-share") == "0.625"
    assert _text_of(dom, "skew-status") == "ok (0.000 beyond tolerance)"
    assert f'href="/drift/reports/{report}"' in dom
    assert "<polyline" in dom  # the drift chart: one line through the two reports

    shot = tmp_path / "dashboard.png"
    done = _chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,1000",
        "--hide-scrollbars",
        f"{api.url}/?token={api.token}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
