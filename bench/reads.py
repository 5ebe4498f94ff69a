"""Online reads: latency of one entity and of batches of 100, from Python and over HTTP, next to
Feast's Redis online store holding the same values, measured in the same run.

Features of 2,000 customers (the scoring feature set: 11 per customer, windowed and lifetime)
are built in Redis by the real planner and batch writer under a namespace of the bench's own,
whose writes drop bucket fields past every window as a running pipeline's do.
Each repeat measures, one after the other:
- Freshloop from Python: ``FeatureStore.get`` and ``get_many`` (one Redis round trip, the
  window fold done inside Redis);
- Freshloop over HTTP: ``freshloop api serve`` in its own process on a free loopback port
  (``GET /features/customer/{key}``, ``POST /features/customer/batch``), one keep-alive
  connection, like the Feast side;
- Feast (``bench/peers/feast_online.py`` in ``.venv-bench``): the values Freshloop serves,
  written with ``write_to_online_store`` and read with ``get_online_features`` and through
  ``feast serve``.
Freshloop computes windowed values at read time (it folds buckets); Feast returns stored values.
Usage: python -m bench.reads [--reads N] [--batch-reads M] [--repeat R]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.common import drop_keys, percentiles, ratio, save, spread
from bench.learning import _build_features, _payments
from bench.peers import PeerMissing, run_peer
from feature_pipelines import FeatureStore
from freshloop.core.settings import Settings
from online_learning import SCORING_FEATURES

BATCH = 100


def _time_calls(fn: Callable[[Any], Any], args: list[Any]) -> list[float]:
    out = []
    for arg in args:
        started = time.perf_counter()
        fn(arg)
        out.append((time.perf_counter() - started) * 1000)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ApiProcess:
    """``freshloop api serve`` for namespace ``ns`` on a free loopback port; stopped by pid."""

    def __init__(self, ns: str) -> None:
        self.port = _free_port()
        # anonymous on loopback: the peer (feast serve) reads without authentication too
        env = {
            **os.environ,
            "FRESHLOOP_REDIS_NAMESPACE": ns,
            "FRESHLOOP_METRICS_PORT": "0",
            "FRESHLOOP_API_ANONYMOUS": "true",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "freshloop.app.cli",
                "api",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get(1)
                return
            except (OSError, http.client.HTTPException, RuntimeError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    msg = "freshloop api serve did not answer within 60 s"
                    raise RuntimeError(msg) from None
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                time.sleep(0.3)

    def reconnect(self) -> None:
        """A fresh keep-alive connection (uvicorn closes idle ones after 5 s)."""
        self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def _answer(self) -> Any:
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            msg = f"the API answered {response.status}: {data[:300]!r}"
            raise RuntimeError(msg)
        return orjson.loads(data)

    def get(self, key: int) -> Any:
        self.conn.request("GET", f"/features/customer/{key}")
        return self._answer()

    def batch(self, keys: list[int]) -> Any:
        self.conn.request(
            "POST",
            "/features/customer/batch",
            body=orjson.dumps({"keys": keys}),
            headers={"Content-Type": "application/json"},
        )
        return self._answer()

    def stop(self) -> None:
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _feast_values(store: FeatureStore, keys: list[int], path: Path) -> None:
    """What Freshloop serves now, as the rows Feast will store (Feast has no exact decimals)."""
    features = store.features.for_entity("customer")
    kinds = {f.name: "int" if f.agg in ("count", "distinct") else "float" for f in features}
    rows = []
    for entity in store.get_many("customer", keys):
        row: dict[str, Any] = {"customer_id": int(entity.key)}
        for name, value in entity.values.items():
            row[name] = float(value) if isinstance(value, Decimal) else value
        rows.append(row)
    path.write_text(json.dumps({"features": kinds, "rows": rows}))


def measure_freshloop(
    store: FeatureStore,
    api: ApiProcess | None,
    keys: list[int],
    reads: int,
    batch_reads: int,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    singles = [rng.choice(keys) for _ in range(reads)]
    batches = [rng.sample(keys, BATCH) for _ in range(batch_reads)]
    for key in keys[:50]:  # warm up (script load, connections)
        store.get("customer", key)
    out: dict[str, Any] = {
        # the floor under every read: a Redis round trip from the same client, same moment
        "redis_ping": percentiles(_time_calls(lambda _k: store.client.ping(), singles)),
        "python": {
            "one": percentiles(_time_calls(lambda k: store.get("customer", k), singles)),
            f"batch{BATCH}": percentiles(
                _time_calls(lambda ks: store.get_many("customer", ks), batches)
            ),
        },
    }
    if api is not None:
        api.reconnect()
        for key in keys[:50]:
            api.get(key)
        out["http"] = {
            "one": percentiles(_time_calls(api.get, singles)),
            f"batch{BATCH}": percentiles(_time_calls(api.batch, batches)),
        }
    return out


def _check_http(store: FeatureStore, api: ApiProcess, key: int) -> bool:
    """The API serves what the Python read gives (same values, as JSON numbers/text)."""
    over_http = api.get(key)["values"]
    direct = store.get("customer", key).values
    return all(
        (value is None and over_http[name] is None)
        or (value is not None and Decimal(str(over_http[name])) == Decimal(value))
        for name, value in direct.items()
    )


def _pick(runs: list[dict[str, Any]], side: str, shape: str, q: str) -> list[float | None]:
    out: list[float | None] = []
    for run in runs:
        part = run.get(side)
        out.append(None if not part else part[shape][q])
    return out


def run(
    reads: int,
    batch_reads: int,
    repeat: int,
    with_feast: bool = True,
    with_http: bool = True,
    n_payments: int = 20_000,
) -> dict[str, Any]:
    settings = Settings()
    ns = f"benchreads{uuid.uuid4().hex[:6]}"
    payments = _payments(n_payments, seed=5)
    _build_features(settings, ns, payments, SCORING_FEATURES)
    store = FeatureStore.connect(settings.redis_conninfo(), SCORING_FEATURES, ns)
    keys = sorted({p.customer_id for p, _ in payments})
    ours: list[dict[str, Any]] = []
    feast: list[dict[str, Any]] = []
    feast_note, http_ok, feast_meta = None, None, {}
    api = ApiProcess(ns) if with_http else None
    values_file = Path(tempfile.mkdtemp()) / "values.json"
    try:
        if api is not None:
            http_ok = _check_http(store, api, keys[0])
        _feast_values(store, keys, values_file)
        for i in range(repeat):
            ours.append(measure_freshloop(store, api, keys, reads, batch_reads, seed=i))
            if with_feast and feast_note is None:
                try:
                    peer = run_peer(
                        "feast_online.py",
                        [
                            "--values",
                            str(values_file),
                            "--redis-url",
                            settings.redis_url,
                            "--reads",
                            str(reads),
                            "--batch-reads",
                            str(batch_reads),
                            "--batch",
                            str(BATCH),
                            *([] if with_http else ["--no-http"]),
                        ],
                        timeout=900,
                        redis_url=settings.redis_conninfo(),
                    )
                    feast.append(peer)
                    feast_meta = {
                        k: peer.get(k)
                        for k in ("feast", "http_note", "values_checked", "mismatches")
                    }
                except PeerMissing as exc:
                    feast_note = str(exc)
            print(
                f"[bench] reads run {i + 1}: freshloop {ours[-1]}"
                f"{'' if not feast else ', feast ' + json.dumps(feast[-1].get('python'))}",
                flush=True,
            )
    finally:
        if api is not None:
            api.stop()
        values_file.unlink(missing_ok=True)
        drop_keys(settings.redis_conninfo(), f"{ns}:*")
    table: dict[str, Any] = {}
    for side in ("python", "http"):
        for shape in ("one", f"batch{BATCH}"):
            row: dict[str, Any] = {}
            for q in ("p50", "p99"):
                mine = spread(_pick(ours, side, shape, q))
                theirs = spread(_pick(feast, side, shape, q))
                row[q] = {
                    "freshloop_ms": mine,
                    "feast_ms": theirs,
                    "ratio_freshloop_to_feast": ratio(mine["median"], theirs["median"]),
                }
            table[f"{side}_{shape}"] = row
    return {
        "entities": len(keys),
        "features_per_entity": len(SCORING_FEATURES.for_entity("customer")),
        "reads": reads,
        "batch_reads": batch_reads,
        "batch": BATCH,
        "latency": table,
        "redis_ping_ms": {
            q: spread([run["redis_ping"][q] for run in ours]) for q in ("p50", "p99")
        },
        "feast_write_rows_per_s": spread([f["write"]["rows_per_s"] for f in feast]),
        "feast": feast_meta,
        "freshloop_http_same_values": http_ok,
        "peer_note": feast_note,
        "runs": {"freshloop": ours, "feast": feast},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--batch-reads", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--payments", type=int, default=20_000, help="payments behind the features")
    parser.add_argument("--no-feast", action="store_true")
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    result = run(
        args.reads,
        args.batch_reads,
        args.repeat,
        not args.no_feast,
        not args.no_http,
        args.payments,
    )
    print(f"[bench] saved {save('reads', result)}")
    for name, row in result["latency"].items():
        p99 = row["p99"]
        print(
            f"[bench] {name}: p99 freshloop {p99['freshloop_ms']['median']} ms, "
            f"feast {p99['feast_ms']['median']} ms, ratio {p99['ratio_freshloop_to_feast']}"
        )


if __name__ == "__main__":
    main()
