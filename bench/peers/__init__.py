"""Peers measured in the same run as Freshloop (Quix Streams, Feast, a batch SQL baseline).

``quix_replay.py`` and ``feast_online.py`` run in the peers' own virtualenv (``.venv-bench``)
as subprocesses and import nothing of Freshloop; ``batch_sql.py`` needs only Postgres and runs
in the project's virtualenv. ``peer_python`` finds the peers' interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["PEERS", "PeerMissing", "peer_python", "run_peer"]

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent


class PeerMissing(RuntimeError):
    """The peers' virtualenv is not there: run ``make bench-peers``."""


def peer_python() -> Path:
    """The interpreter of ``.venv-bench`` (or ``BENCH_PEERS_PYTHON``)."""
    path = Path(os.environ.get("BENCH_PEERS_PYTHON", ROOT / ".venv-bench" / "bin" / "python"))
    if not path.exists():
        msg = f"no peers' virtualenv at {path}: run `make bench-peers` first"
        raise PeerMissing(msg)
    return path


def run_peer(
    script: str, args: list[str], timeout: float, redis_url: str | None = None
) -> dict[str, Any]:
    """Run ``bench/peers/<script>`` with the peers' interpreter; its last stdout line is JSON.
    ``redis_url`` (with the user and password Redis asks for) goes in the environment as
    ``BENCH_REDIS_URL``, not on the command line, where every process could read it."""
    env = {**os.environ, "BENCH_REDIS_URL": redis_url} if redis_url else None
    proc = subprocess.run(
        [str(peer_python()), str(PEERS / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"{script} failed (exit {proc.returncode}): {proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        msg = f"{script} printed no JSON result; stderr: {proc.stderr[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(lines[-1])
    return result
