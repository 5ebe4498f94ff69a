"""Merge one run's JSON results into ``docs/performance.md``: the machine, the versions of
everything, and per scenario the median with its spread (min-max over the repeats) and each
ratio Freshloop / peer, next to the aims of the benchmark issue.

Versions are asked of what ran: Kafka Connect's REST API (Kafka and the Debezium plugin), Redis
``INFO``, Postgres ``server_version``, the installed Python packages, and the peers' virtualenv.
Usage: python -m bench.report [--results DIR] [--out docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from bench.common import RESULTS, machine
from bench.peers import PeerMissing, peer_python
from freshloop.core.settings import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _peer_versions() -> dict[str, str]:
    try:
        python = peer_python()
    except PeerMissing:
        return {"quixstreams": "peers' virtualenv missing", "feast": "peers' virtualenv missing"}
    code = (
        "import json\nfrom importlib.metadata import version as v\n"
        "print(json.dumps({n: v(n) for n in ('quixstreams', 'feast', 'confluent-kafka', "
        "'redis', 'pandas', 'pyarrow')}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    try:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"quixstreams": "unknown", "feast": "unknown"}


def versions(settings: Settings) -> dict[str, Any]:
    import confluent_kafka

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "confluent-kafka": f"{_pkg('confluent-kafka')} (librdkafka "
        f"{confluent_kafka.libversion()[0]})",
        "river": _pkg("river"),
        "redis-py": _pkg("redis"),
        "psycopg": _pkg("psycopg"),
        "fastapi": _pkg("fastapi"),
        "uvicorn": _pkg("uvicorn"),
    }
    try:
        root = httpx.get(settings.connect_url, timeout=5).json()
        out["kafka (Connect worker)"] = root.get("version")
        plugins = httpx.get(f"{settings.connect_url}/connector-plugins", timeout=5).json()
        for plugin in plugins:
            if "postgresql" in plugin.get("class", "").lower():
                out["debezium postgres connector"] = plugin.get("version")
    except (httpx.HTTPError, ValueError) as exc:
        out["kafka (Connect worker)"] = f"unreachable: {exc}"
    try:
        out["redis server"] = redis.Redis.from_url(settings.redis_conninfo()).info("server")[
            "redis_version"
        ]
    except redis.RedisError as exc:
        out["redis server"] = f"unreachable: {exc}"
    try:
        with psycopg.connect(settings.postgres_conninfo(), connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            out["postgres"] = row[0] if row else "unknown"
    except psycopg.Error as exc:
        out["postgres"] = f"unreachable: {exc}"
    for name, value in _peer_versions().items():
        out[f"{name} (peers' venv)"] = value
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---- formatting -------------------------------------------------------------------------------
def _n(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _s(stat: dict[str, Any] | None, digits: int = 1) -> str:
    """``median (min-max)``; a single run shows just its value."""
    if not stat or stat.get("median") is None:
        return "n/a"
    runs = [r for r in stat.get("runs", []) if r is not None]
    if len(runs) <= 1:
        return f"{_n(stat['median'], digits)} (1 run)"
    low, high = stat.get("min", min(runs)), stat.get("max", max(runs))
    return f"{_n(stat['median'], digits)} ({_n(low, digits)}–{_n(high, digits)})"


def _r(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _aim(ok: bool | None) -> str:
    return "not measured" if ok is None else ("met" if ok else "MISSED")


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _freshness(d: dict[str, Any], aims: list[tuple[str, str, bool | None]]) -> list[str]:
    out = [
        "## 1. Freshness: commit → feature readable, whole stack",
        "",
        f"{d.get('seconds')} s of the sample workload per run (payments with their status "
        "changes, corrections, deletes and outcomes), "
        f"{d.get('repeat', 1)} runs per rate; writer processes with four connections each. "
        "Lag = when the batch holding the change was written to Redis minus the change's commit "
        "time (`source.ts_ms`), for every change committed during the run.",
        "",
        "| target payments/s | achieved payments/s | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in d.get("results", []):
        lag = row["lag_ms"]
        out.append(
            f"| {row['rate']:.0f} | {_s(row['achieved_payments_per_s'], 0)} | {_s(lag['p50'])} "
            f"| {_s(lag['p95'])} | {_s(lag['p99'])} |"
        )
        if row["rate"] == 1000:
            ach = row["achieved_payments_per_s"]["median"] or 0
            p50, p99 = lag["p50"]["median"], lag["p99"]["median"]
            aims.append(
                (
                    "commit → feature p50 ≤ 20 ms at 1,000/s",
                    f"{_n(p50)} ms at {ach:.0f}/s achieved",
                    None if p50 is None else p50 <= 20 and ach >= 900,
                )
            )
            aims.append(
                (
                    "commit → feature p99 ≤ 75 ms at 1,000/s",
                    f"{_n(p99)} ms at {ach:.0f}/s achieved",
                    None if p99 is None else p99 <= 75 and ach >= 900,
                )
            )
    preds = d.get("predictions")
    if preds is None and d.get("prediction"):  # results written before several rates
        preds = [d["prediction"]]
    if preds:
        out += [
            "",
            "**Commit → prediction** (`freshloop learn serve`: pipeline + scoring hook; the "
            "prediction's `predicted_at` minus the insert's commit time):",
            "",
            "| target payments/s | achieved payments/s | p50 ms | p95 ms | p99 ms |",
            "| --- | --- | --- | --- | --- |",
        ]
        for pred in preds:
            lag = pred["commit_to_prediction_ms"]
            out.append(
                f"| {pred['rate']:.0f} | {_s(pred['achieved_payments_per_s'], 0)} | "
                f"{_s(lag['p50'])} | {_s(lag['p95'])} | {_s(lag['p99'])} |"
            )
        aimed = [p for p in preds if p["rate"] == 500] or preds[-1:]
        for pred in aimed:
            p99 = pred["commit_to_prediction_ms"]["p99"]["median"]
            ach = pred["achieved_payments_per_s"]["median"] or 0
            aims.append(
                (
                    f"commit → prediction p99 ≤ 100 ms at {pred['rate']:.0f}/s",
                    f"{_n(p99)} ms at {ach:.0f}/s achieved",
                    None if p99 is None else p99 <= 100 and ach >= 0.9 * pred["rate"],
                )
            )
    batch = d.get("batch")
    if batch:
        lag = batch["lag_ms"]
        ratios = batch.get("ratio_freshloop_to_batch") or {}
        run0 = batch["runs"][0] if batch.get("runs") else {}
        out += [
            "",
            f"**Peer: batch recompute by SQL** every {batch['interval_s']:.0f} s (the oracle "
            "statements over the whole tables, values written to Redis), same workload at "
            f"{batch['rate']:.0f} payments/s: commit → visible p50 {_s(lag['p50'], 0)} ms, p95 "
            f"{_s(lag['p95'], 0)} ms, p99 {_s(lag['p99'], 0)} ms; one recompute took "
            f"{_n((run0.get('recompute_ms') or {}).get('p50'), 0)} ms for "
            f"{run0.get('entities_per_recompute', 'n/a')} entities. Ratio Freshloop / batch: "
            f"p50 {_r(ratios.get('p50'))}, p99 {_r(ratios.get('p99'))}.",
        ]
    mx = d.get("max_rate")
    if mx:
        lag = mx.get("lag_ms_at_max") or {}
        out += [
            "",
            f"**Highest sustained rate**: {_n(mx.get('max_sustained_payments_per_s'), 0)} "
            f"payments/s achieved (rule: {mx['rule']}), with p50 {_n(lag.get('p50'))} ms and "
            f"p99 {_n(lag.get('p99'))} ms there. Probes above it: "
            + (
                ", ".join(
                    f"{p['target_payments_per_s']:.0f}/s target → "
                    f"{p['achieved_payments_per_s']:.0f}/s achieved, p99 "
                    f"{_n(p['lag_ms']['p99'])} ms"
                    for p in mx.get("probes", [])
                )
                or "none"
            )
            + ".",
        ]
    if d.get("highest_load"):
        from bench.load_shares import pipeline_rank
        from bench.load_shares import render as load_lines

        hl = d["highest_load"]
        rate = hl.get("highest_rate")
        aims.append(
            (
                "highest load with commit → feature p99 ≤ 75 ms and → prediction p99 ≤ 100 ms",
                "none of the rates tried" if rate is None else f"{rate:,.0f} payments/s",
                rate is not None,
            )
        )
        rank = pipeline_rank(hl)
        if rank is not None:
            aims.append(
                (
                    "the pipeline's CPU share the smallest of the moving parts at that load",
                    f"rank {rank[0]} of {rank[1]} (smallest: {rank[2]})",
                    rank[0] == 1,
                )
            )
        out += ["", *load_lines(hl)]
    return [*out, ""]


def _replay(
    mixed: dict[str, Any] | None, peers: dict[str, Any] | None, aims: list[Any]
) -> list[str]:
    out = ["## 2. Replay: the sample feature set over a pre-filled topic", ""]
    if mixed:
        raw = mixed["raw_consume_decode_per_s"]
        ours = mixed["freshloop_pipeline_per_s"]
        r = mixed.get("ratio_freshloop_to_raw")
        out += [
            f"{mixed['events']:,} Debezium-shaped change events (inserts, updates, outcomes) "
            "produced directly to a bench-only topic (not through Postgres: a million changes "
            "through Debezium would take most of the run), one process:",
            "",
            "| | events/s |",
            "| --- | --- |",
            f"| raw consume + decode (ceiling) | {_s(raw, 0)} |",
            f"| Freshloop pipeline, all 13 sample features | {_s(ours, 0)} |",
            f"| ratio Freshloop / raw | {_r(r)} |",
            "",
        ]
        aims.append(
            (
                "replay ≥ 50 % of raw consume+decode",
                f"{_r(r)} × raw",
                None if r is None else r >= 0.5,
            )
        )
    if peers:
        same = peers.get("same_values") or {}
        rq = peers.get("ratio_freshloop_to_quix")
        out += [
            f"**Peer: Quix Streams {peers.get('quixstreams') or ''}** on {peers['events']:,} "
            f"insert-only payment events ({peers['workload']}); both compute the same "
            f"{len(peers['features'])} per-customer features ({', '.join(peers['features'])}), "
            "one process each. Quix: `group_by` customer, tumbling windows of W/60 with "
            "`Count`/`Sum` (`.current()`), key-value state for lifetime values, a batching sink "
            "writing Redis hashes; its defaults otherwise (RocksDB state with changelog topics, "
            "at-least-once). Rates count from the first event processed to the last written.",
            "",
            "| | events/s |",
            "| --- | --- |",
            f"| raw consume + decode | {_s(peers['raw_consume_decode_per_s'], 0)} |",
            f"| Freshloop | {_s(peers['freshloop_per_s'], 0)} |",
            f"| Quix Streams | {_s(peers['quix_per_s'], 0)} |",
            f"| ratio Freshloop / Quix | {_r(rq)} |",
            f"| ratio Freshloop / raw | {_r(peers.get('ratio_freshloop_to_raw'))} |",
            "",
            f"Same values: {same.get('values_checked', 'n/a')} values of a sample of customers "
            f"compared (Quix's buckets folded by Freshloop's read rule), "
            f"{same.get('mismatches', 'n/a')} differ."
            + (f" Peer not run: {peers['peer_note']}" if peers.get("peer_note") else ""),
            "",
        ]
        aims.append(("replay ≥ 2 × Quix Streams", f"{_r(rq)} ×", None if rq is None else rq >= 2))
    return out


def _under_floor(row: dict[str, Any], ping: dict[str, Any] | None) -> str:
    """A note when the aim asks for less than a bare Redis round trip takes at p99 here: no
    read that goes to Redis can meet it on this machine, whatever it does."""
    feast_p99 = (row["p99"]["feast_ms"] or {}).get("median")
    floor = ((ping or {}).get("p99") or {}).get("median")
    if feast_p99 is None or floor is None or feast_p99 / 2 >= floor:
        return ""
    return (
        f" (½ Feast's p99 is {_n(feast_p99 / 2, 2)} ms, below a bare Redis PING's p99 of "
        f"{_n(floor, 2)} ms in the same runs)"
    )


def _reads(d: dict[str, Any], aims: list[Any]) -> list[str]:
    feast = d.get("feast") or {}
    out = [
        "## 3. Online reads",
        "",
        f"{d['entities']:,} customers, {d['features_per_entity']} features each (windowed "
        f"values are folded from their buckets at read time; bucket fields past every window swept "
        f"as the running pipeline does); {d['reads']:,} single reads and "
        f"{d['batch_reads']:,} batches of {d['batch']} per run, random keys, one client. "
        f"HTTP: `freshloop api serve` in its own process vs `feast serve` (Feast "
        f"{feast.get('feast', '')}, Python feature server, one worker), one keep-alive "
        "connection each. Feast holds the values Freshloop served (written with "
        "`write_to_online_store`); "
        f"{feast.get('values_checked', 'n/a')} values read back from Feast, "
        f"{feast.get('mismatches', 'n/a')} differ.",
        "",
        "| read | Freshloop p50 ms | Feast p50 ms | Freshloop p99 ms | Feast p99 ms | "
        "p99 ratio Freshloop / Feast |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in d["latency"].items():
        out.append(
            f"| {name.replace('_', ', ')} | {_s(row['p50']['freshloop_ms'], 2)} | "
            f"{_s(row['p50']['feast_ms'], 2)} | {_s(row['p99']['freshloop_ms'], 2)} | "
            f"{_s(row['p99']['feast_ms'], 2)} | {_r(row['p99']['ratio_freshloop_to_feast'])} |"
        )
        r = row["p99"]["ratio_freshloop_to_feast"]
        aims.append(
            (
                f"read p99 ≤ ½ Feast's ({name})",
                f"{_r(r)} ×{_under_floor(row, d.get('redis_ping_ms'))}",
                None if r is None else r <= 0.5,
            )
        )
    ping = d.get("redis_ping_ms")
    if ping:
        out += [
            "",
            f"Floor, same runs: a Redis PING from the same client took p50 "
            f"{_s(ping['p50'], 3)} ms and p99 {_s(ping['p99'], 3)} ms. A single read's p99 sits on "
            "this scheduling noise of the shared cores (Feast's as much as Freshloop's), so the "
            "one-entity ratios move from run to run more than the batch ones.",
        ]
    out += [
        "",
        f"Feast write path: `write_to_online_store` of the {d['entities']:,} entity rows: "
        f"{_s(d.get('feast_write_rows_per_s'), 0)} rows/s (it stores finished values; "
        "Freshloop's write path is the pipeline itself, section 2).",
    ]
    if feast.get("http_note"):
        out.append(f"Feast HTTP: {feast['http_note']}.")
    if d.get("peer_note"):
        out.append(f"Peer not run: {d['peer_note']}")
    return [*out, ""]


def _learning(d: dict[str, Any]) -> list[str]:
    return [
        "## 4. Learning",
        "",
        f"{d['payments']:,} payments, one process: score (with the batch's feature reads), "
        "record, join the label and learn, per payment.",
        "",
        "| | payments/s |",
        "| --- | --- |",
        f"| Freshloop scored + learned | {_s(d['freshloop_scored_learned_per_s'], 0)} |",
        f"| River alone (predict_proba_one + learn_one on ready vectors) | "
        f"{_s(d['river_alone_per_s'], 0)} |",
        f"| ratio Freshloop / River alone | {_r(d.get('ratio_freshloop_to_river'))} |",
        "",
        *_learning_phases(d),
    ]


_PHASE_NAMES = {
    "read": "feature reads (two `get_many` per 500 payments: HGETALL, fold, values)",
    "score": "`score`: the vector and River's `predict_proba_one`",
    "on_prediction": "`on_prediction`: the logged record into the label join",
    "on_outcome": "`on_outcome`: the join, River's `learn_one`, metrics, drift detector",
}


def _learning_phases(d: dict[str, Any]) -> list[str]:
    phases = d.get("phases_us")
    if not phases:
        return []
    rows = [f"| {_PHASE_NAMES.get(name, name)} | {_s(v, 1)} |" for name, v in phases.items()]
    total = sum(v["median"] for v in phases.values() if v.get("median") is not None)
    return [
        "Where a payment's time goes, in the same runs (a clock around each call), µs per payment:",
        "",
        "| part | µs per payment |",
        "| --- | --- |",
        *rows,
        f"| **sum of the medians** | {total:,.1f} |",
        f"| River alone, predict + learn, same vectors | {_s(d.get('river_alone_us'), 1)} |",
        "",
    ]


def render(results: Path, settings: Settings) -> str:
    m = machine()
    v = versions(settings)
    loaded = {
        n: _load(results, n)
        for n in (
            "freshness",
            "replay",
            "replay_peers",
            "replay_scaling_single",
            "replay_scaling_cluster",
            "batch_script",
            "reads",
            "learning",
        )
    }
    when = max((d["at"] for d in loaded.values() if d), default="n/a")
    aims: list[tuple[str, str, bool | None]] = []
    body: list[str] = []
    if loaded["freshness"]:
        body += _freshness(loaded["freshness"], aims)
    if loaded["replay"] or loaded["replay_peers"]:
        body += _replay(loaded["replay"], loaded["replay_peers"], aims)
    for layout in ("single", "cluster"):
        if loaded[f"replay_scaling_{layout}"]:
            from bench.scaling import render as scaling_lines

            body += scaling_lines(loaded[f"replay_scaling_{layout}"])
    if loaded["batch_script"]:
        from bench.batch_script import render as script_lines

        body += script_lines(loaded["batch_script"])
    if loaded["reads"]:
        body += _reads(loaded["reads"], aims)
    if loaded["learning"]:
        body += _learning(loaded["learning"])
    head = [
        "# Performance",
        "",
        "Generated by `make bench` (`python -m bench.report`) from the JSON results of its "
        f"scenarios (latest result {when}; each section of the many-consumer and batch-script "
        "figures names when it ran, as a scenario can be run again alone). Every comparison "
        "is measured in the same run as its peer; "
        "each figure is the median of the repeats with the spread (min–max) in brackets.",
        "",
        "**Machine**: "
        f"{m['cores']} cores ({_cpu_model()}), {m['memory_gib']} GiB memory, {m['platform']}. "
        "The whole stack (Postgres, Kafka, Kafka Connect with Debezium, Redis) runs on the same "
        "machine as the benchmark, which shared it with other work while this ran: absolute "
        "numbers are noisy, ratios less so.",
        "",
        "**Versions**: " + "; ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        "## Aims",
        "",
        "| aim | result | |",
        "| --- | --- | --- |",
        *[f"| {aim} | {result} | {_aim(ok)} |" for aim, result, ok in aims],
        "",
    ]
    tail = [
        "## How to run",
        "",
        "`make bench` (stack up, schema, connector, the peers' virtualenv `.venv-bench`, every "
        "scenario, then this report). Sizes: `BENCH_EVENTS` (replay, default 1,000,000), "
        "`BENCH_PEER_EVENTS` (replay next to Quix), `BENCH_REPEAT`, `BENCH_RATES`, "
        "`BENCH_SECONDS`, `BENCH_READS`, `BENCH_PAYMENTS`; many consumers: "
        "`BENCH_SCALING_EVENTS` (per process count, default 300,000), `BENCH_PROCESSES` "
        "(default 1,2,4), `BENCH_SCRIPT_EVENTS` (the batch script alone, default 100,000), "
        "`BENCH_REDIS_LAYOUTS` (default `single cluster`: the cluster is the "
        "stack's when it runs one, else three primaries the bench starts for the run); "
        "highest load: `BENCH_LOAD_RATES`. Results: "
        "`bench/results/*.json`. Sizing from these figures: docs/scaling.md.",
        "",
    ]
    return "\n".join(head + body + tail)


# Sections of the page measured by a command of their own, not by ``make bench`` (a month of
# training data takes a simulated month's writes first): kept as they are when it is rewritten.
BY_HAND = ("## 5. Point-in-time training sets",)


def keep_measured_by_hand(old: str, new: str) -> str:
    r"""``new`` with the ``BY_HAND`` sections of ``old`` put back before "How to run".

    >>> old = "# P\n## 1. A\nold a\n## 5. Point-in-time training sets\nkept\n## How to run\nx\n"
    >>> keep_measured_by_hand(old, "# P\n## 1. A\nnew a\n## How to run\ny\n")
    '# P\n## 1. A\nnew a\n## 5. Point-in-time training sets\nkept\n## How to run\ny\n'
    """
    tail = "## How to run"
    kept = []
    for heading in BY_HAND:
        if heading in old and heading not in new:
            start = old.index(heading)
            ends = [i for i in (old.find("\n## ", start + 1), old.find(tail, start)) if i >= 0]
            kept.append(old[start : min(ends) + 1 if ends else len(old)])
    if not kept or tail not in new:
        return new
    at = new.index(tail)
    return new[:at] + "".join(kept) + new[at:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args()
    text = render(args.results, Settings())
    if args.out.exists():
        text = keep_measured_by_hand(args.out.read_text(), text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
