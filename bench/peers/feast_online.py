"""Peer of the online-read benchmark: Feast with its Redis online store, on the running Redis.

Runs in the peers' virtualenv (``.venv-bench``), started by ``bench/reads.py``; imports nothing
of Freshloop. A Feast repo is created in a temporary folder (its own project name, so its
Redis keys are its own; they are deleted at the end), with one feature view holding the same
customer features Freshloop serves. The values Freshloop computed are written with
``write_to_online_store`` (rows/s reported), then read back with ``get_online_features`` for
one entity and for batches, from Python, and over HTTP through Feast's own feature server
(``feast serve``, its Python FastAPI server, on a loopback port) when it starts here. A sample
of what Feast returns is checked against what was written.

Prints one JSON line. Usage: python bench/peers/feast_online.py --values FILE --redis-url URL
       --reads N --batch-reads M --batch 100
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float64, Int64


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)
    return {
        f"p{int(q * 100)}": round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
        for q in (0.5, 0.95, 0.99)
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _repo(root: Path, project: str, redis_url: str) -> None:
    url = urlparse(redis_url)
    db = int((url.path or "/0").lstrip("/") or 0)
    login = ""  # Redis's ACL: the user and password of the URL, as Feast's redis kwargs
    if url.username:
        login += f",username={unquote(url.username)}"
    if url.password:
        login += f",password={unquote(url.password)}"
    (root / "feature_store.yaml").write_text(
        "\n".join(
            [
                f"project: {project}",
                f"registry: {root / 'registry.db'}",
                "provider: local",
                "online_store:",
                "  type: redis",
                f'  connection_string: "{url.hostname}:{url.port or 6379},db={db}{login}"',
                "offline_store:",
                "  type: file",
                "entity_key_serialization_version: 3",
                "",
            ]
        )
    )


def _time_calls(fn: Any, args: list[Any]) -> list[float]:
    out = []
    for arg in args:
        started = time.perf_counter()
        fn(arg)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", required=True, help="JSON: {features: {name: kind}, rows}")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--batch-reads", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()

    spec = json.loads(Path(args.values).read_text())
    kinds: dict[str, str] = spec["features"]  # name -> "int" | "float"
    rows: list[dict[str, Any]] = spec["rows"]
    keys = [int(r["customer_id"]) for r in rows]
    project = f"fb{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix="feast-repo-"))
    redis_url = os.environ.get("BENCH_REDIS_URL") or args.redis_url  # with the ACL's login
    client = redis.Redis.from_url(redis_url)
    result: dict[str, Any] = {"feast": version("feast"), "project": project}
    server: subprocess.Popen[bytes] | None = None
    try:
        _repo(root, project, redis_url)
        now = datetime.now(UTC)
        frame = pd.DataFrame(rows)
        frame["event_timestamp"] = now
        for name, kind in kinds.items():
            frame[name] = frame[name].astype("int64" if kind == "int" else "float64")
        frame.to_parquet(root / "customers.parquet")
        customer = Entity(name="customer", join_keys=["customer_id"])
        view = FeatureView(
            name="customer_features",
            entities=[customer],
            schema=[
                Field(name=name, dtype=Int64 if kind == "int" else Float64)
                for name, kind in kinds.items()
            ],
            source=FileSource(
                path=str(root / "customers.parquet"), timestamp_field="event_timestamp"
            ),
            online=True,
        )
        store = FeatureStore(repo_path=str(root))
        store.apply([customer, view])

        started = time.perf_counter()
        store.write_to_online_store("customer_features", frame)
        write_s = time.perf_counter() - started
        result["write"] = {"rows": len(frame), "rows_per_s": len(frame) / write_s}

        refs = [f"customer_features:{name}" for name in kinds]
        rng = random.Random(3)

        def one(key: int) -> dict[str, Any]:
            return store.get_online_features(
                features=refs, entity_rows=[{"customer_id": key}]
            ).to_dict()

        def many(batch: list[int]) -> dict[str, Any]:
            return store.get_online_features(
                features=refs, entity_rows=[{"customer_id": k} for k in batch]
            ).to_dict()

        # correctness: what Feast returns is what was written
        sample = rng.sample(rows, min(50, len(rows)))
        got = many([int(r["customer_id"]) for r in sample])
        mismatches = sum(
            1
            for i, row in enumerate(sample)
            for name in kinds
            if got[name][i] is not None
            and abs(float(got[name][i]) - float(row[name])) > 1e-6
            or got[name][i] is None
        )
        result["values_checked"] = len(sample) * len(kinds)
        result["mismatches"] = mismatches

        for key in rng.sample(keys, min(50, len(keys))):  # warm up
            one(key)
        singles = _time_calls(one, [rng.choice(keys) for _ in range(args.reads)])
        batches = _time_calls(many, [rng.sample(keys, args.batch) for _ in range(args.batch_reads)])
        result["python"] = {"one": percentiles(singles), f"batch{args.batch}": percentiles(batches)}

        if args.no_http:
            result["http"] = None
            result["http_note"] = "not measured (--no-http)"
        else:
            port = _free_port()
            feast_bin = shutil.which("feast", path=str(Path(sys.executable).parent))
            server = subprocess.Popen(
                [
                    feast_bin or "feast",
                    "serve",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "--no-access-log",
                    "--max-requests",
                    "1000000",  # no worker restart in the middle of the measurement
                ],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=open(root / "serve.log", "wb"),  # noqa: SIM115 - closed with the folder
                start_new_session=True,
            )
            conn = None
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request("GET", "/health")
                    health = conn.getresponse()
                    health.read()
                    if health.status == 200:
                        break
                except OSError:
                    pass
                conn = None
                time.sleep(0.3)
            if conn is None:
                log = (root / "serve.log").read_text(errors="replace")[-1500:]
                result["http"] = None
                result["http_note"] = f"feast serve did not start here: {log}"
            else:

                def post(keys_: list[int]) -> None:
                    body = json.dumps({"features": refs, "entities": {"customer_id": keys_}})
                    assert conn is not None  # noqa: S101
                    conn.request(
                        "POST",
                        "/get-online-features",
                        body=body,
                        headers={"Content-Type": "application/json"},
                    )
                    response = conn.getresponse()
                    data = response.read()
                    if response.status != 200:
                        msg = f"feast serve answered {response.status}: {data[:300]!r}"
                        raise RuntimeError(msg)

                for key in rng.sample(keys, min(50, len(keys))):
                    post([key])
                http_one = _time_calls(post, [[rng.choice(keys)] for _ in range(args.reads)])
                http_many = _time_calls(
                    post, [rng.sample(keys, args.batch) for _ in range(args.batch_reads)]
                )
                result["http"] = {
                    "one": percentiles(http_one),
                    f"batch{args.batch}": percentiles(http_many),
                }
                result["http_note"] = "feast serve (Python feature server), one worker"
                conn.close()
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        removed = 0
        for key in client.scan_iter(match=f"*{project}*", count=5000):
            removed += int(client.delete(key))
        result["keys_removed"] = removed
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
