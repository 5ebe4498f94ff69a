"""The HTTP API against the real stack: a payment written to Postgres is served as features and
as a prediction; reports, retrains, models, health and metrics; and every error answer (404, 422,
503 naming the dependency that is down)."""

from __future__ import annotations

import re
from decimal import Decimal
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from feature_pipelines.planner import entity_key
from freshloop.core.settings import Settings
from tests.freshloop.app.api.fixtures import (
    ApiHandle,
    api,
    api_ns,
    insert_report,
    insert_retrain,
    serve,
    unused_port,
    write_stats,
)
from tests.online_learning.stack import ScoringPipeline, wait_for

pytestmark = pytest.mark.integration

__all__ = ["api", "api_ns", "unused_port"]  # fixtures, re-exported for pytest


def _write_payment(settings: Settings, amount: str) -> tuple[int, int, int]:
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        customer = conn.execute(
            "INSERT INTO customers (email, country) VALUES ('api@example.com', 'DE')"
            " RETURNING customer_id"
        ).fetchone()
        merchant = conn.execute(
            "INSERT INTO merchants (name, category, country) VALUES ('api', 'books', 'DE')"
            " RETURNING merchant_id"
        ).fetchone()
        assert customer is not None and merchant is not None
        payment = conn.execute(
            "INSERT INTO payments (customer_id, merchant_id, amount, channel, status)"
            " VALUES (%s, %s, %s, 'web', 'approved') RETURNING payment_id",
            (customer[0], merchant[0], amount),
        ).fetchone()
        assert payment is not None
    return int(customer[0]), int(merchant[0]), int(payment[0])


def test_a_written_payment_is_served_as_features_and_prediction(api: ApiHandle) -> None:
    with ScoringPipeline(api.settings):
        customer, merchant, payment = _write_payment(api.settings, "12.34")
        wait_for(
            lambda: api.http.get(f"/predictions/{payment}").status_code == 200,
            60,
            "the payment's prediction",
        )

    prediction = api.http.get(f"/predictions/{payment}").json()
    assert prediction["payment_id"] == payment and 0.0 <= prediction["score"] <= 1.0

    body = api.http.get(f"/features/customer/{customer}").json()
    assert body["found"] is True and body["key"] == str(customer)
    assert body["values"]["payment_count_lifetime"] == 1
    assert Decimal(body["values"]["amount_sum_lifetime"]) == Decimal("12.34")
    assert body["commit_at"] is not None and body["age_ms"] >= 0

    batch = api.http.post("/features/merchant/batch", json={"keys": [merchant, 0]}).json()
    assert [r["found"] for r in batch["results"]] == [True, False]
    assert batch["results"][0]["values"]["merchant_payment_count_1h"] == 1
    assert batch["results"][1]["commit_at"] is None

    models = api.http.get("/models").json()
    assert models["namespace"] == api.settings.namespace
    assert models["champion"]["version"] == prediction["model_version"]
    assert [m["version"] for m in models["models"]] == [prediction["model_version"]]


def test_error_answers_say_what_was_wrong(api: ApiHandle) -> None:
    http = api.http
    unknown = http.get("/features/planet/1")
    assert unknown.status_code == 404
    assert "unknown entity 'planet'" in unknown.json()["detail"]
    assert "customer" in unknown.json()["detail"]
    assert http.post("/features/planet/batch", json={"keys": [1]}).status_code == 404
    for key in ("abc", "-1", str(2**63), "1.5"):
        answer = http.get(f"/features/customer/{key}")
        assert answer.status_code == 422, key
        assert answer.json()["detail"][0]["loc"] == ["path", "key"]
    for body in ({"keys": []}, {"keys": ["x"]}, {"keys": list(range(1001))}, {}, [1, 2]):
        assert http.post("/features/customer/batch", json=body).status_code == 422, body
    assert http.post("/features/customer/batch", content=b"{not json").status_code == 422
    missing = http.get("/predictions/987654321987")
    assert missing.status_code == 404 and "never scored" in missing.json()["detail"]
    assert http.get("/predictions/x").status_code == 422
    assert http.get("/drift/reports/999999999999").status_code == 404
    assert http.get("/drift/reports/0").status_code == 422
    assert http.get("/drift/reports", params={"limit": 0}).status_code == 422
    assert http.get("/retrains", params={"limit": "many"}).status_code == 422
    assert http.get("/no/such/path").status_code == 404


def test_drift_reports_retrains_and_the_summary(api: ApiHandle, api_ns: Settings) -> None:
    first = insert_report(api_ns, "ok", {"dataset_drift_share": 0.1})
    page = "<!doctype html><title>drift</title><h1>share 0.625</h1>"
    second = insert_report(
        api_ns,
        "drift",
        {
            "dataset_drift_share": 0.625,
            "roc_auc": 0.81,
            "skew_status": "warning",
            "skew_beyond_share": 0.25,
        },
        html=page,
        decision={"action": "retrain"},
    )
    retrain = insert_retrain(api_ns, "promoted", "drift share 0.625", second)
    other = insert_report(api_ns.model_copy(update={"redis_namespace": "elsewhere"}), "ok", {})
    try:
        reports = api.http.get("/drift/reports").json()
        assert [r["report_id"] for r in reports] == [second, first]  # newest first, ours only
        assert reports[0]["html_url"] == f"/drift/reports/{second}"
        assert reports[0]["decision"] == {"action": "retrain"}
        html = api.http.get(f"/drift/reports/{second}")
        assert html.status_code == 200 and html.text == page
        assert html.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in html.headers["content-security-policy"]
        assert api.http.get(f"/drift/reports/{other}").status_code == 404  # not our namespace
        assert "no page stored" in api.http.get(f"/drift/reports/{first}").text

        retrains = api.http.get("/retrains").json()
        assert [(r["retrain_id"], r["status"], r["report_id"]) for r in retrains] == [
            (retrain, "promoted", second)
        ]

        write_stats(
            api_ns,
            "c1",
            applied=250,
            lags_ms=[4.5] * 90 + [12.5] * 10,
            applied_total=1000,
            dead_lettered_total=2,
        )
        write_stats(api_ns, "c2", applied=100, lags_ms=[3.0] * 60 + [30.0] * 40, applied_total=500)
        summary = api.http.get("/api/summary").json()
        assert summary["errors"] == {}
        pipe = summary["pipeline"]
        assert (pipe["live"], pipe["events_per_s"], pipe["applied_total"]) == (2, 350.0, 1500)
        assert (pipe["dead_lettered_total"], pipe["lag_p50_ms"], pipe["lag_p99_ms"]) == (
            2,
            4.5,
            30.0,
        )
        assert [p["drift_share"] for p in summary["drift"]["series"]] == [0.1, 0.625]
        assert summary["drift"]["latest"][0]["action"] == "retrain"
        assert (
            summary["drift"]["latest"][0]["skew_status"],
            summary["drift"]["latest"][0]["skew_beyond_share"],
        ) == ("warning", 0.25)
        assert summary["drift"]["latest"][1]["skew_status"] is None  # a report without the audit
        assert summary["retrains"][0]["retrain_id"] == retrain
        assert summary["history"][-1]["events_per_s"] == 350.0
    finally:
        with psycopg.connect(api_ns.postgres_conninfo(), autocommit=True) as conn:
            conn.execute("DELETE FROM drift_reports WHERE report_id = %s", (other,))


def test_healthz_metrics_and_openapi(api: ApiHandle) -> None:
    health = api.http.get("/healthz")
    assert health.status_code == 200, health.text
    deps = health.json()["dependencies"]
    assert set(deps) == {"postgres", "redis", "kafka", "connect"}
    assert all(d["ok"] for d in deps.values())
    slot = health.json()["replication_slot"]
    assert slot["slot_name"] == api.settings.slot_name
    assert (slot["alarm"] is not None) == (health.json()["alarms"] != [])

    write_stats(api.settings, "m1", applied=42, lags_ms=[8.0], applied_total=7)
    api.http.get("/features/customer/1")
    families = {f.name: f for f in text_string_to_metric_families(api.http.get("/metrics").text)}
    requests = families["freshloop_api_requests"].samples
    assert any(
        s.labels.get("route") == "/features/{entity}/{key}" and s.value >= 1 for s in requests
    )
    rates = {
        s.labels["consumer"]: s.value
        for s in families["freshloop_pipeline_events_per_second"].samples
    }
    assert rates == {"m1": 42.0}
    retained = families["freshloop_replication_slot_retained_wal_bytes"].samples
    assert [s.labels["slot"] for s in retained] == [api.settings.slot_name]

    spec = api.http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert {
        "/features/{entity}/{key}",
        "/features/{entity}/batch",
        "/predictions/{payment_id}",
        "/models",
        "/drift/reports",
        "/drift/reports/{report_id}",
        "/healthz",
        "/metrics",
    } <= set(spec["paths"])
    assert api.http.get("/docs").status_code == 200
    page = api.http.get("/")
    assert page.status_code == 200 and "/api/summary" in page.text
    assert not re.search(r"(src|href)=\"https?://", page.text)  # self-contained: no CDN


def test_a_dependency_down_is_a_503_naming_it(api_ns: Settings, unused_port: int) -> None:
    no_redis = api_ns.model_copy(update={"redis_url": f"redis://127.0.0.1:{unused_port}/0"})
    for handle in serve(no_redis):
        answer = handle.http.get("/features/customer/1")
        assert answer.status_code == 503
        assert answer.json()["dependency"] == "redis"
        assert f"redis is unavailable at 127.0.0.1:{unused_port}" in answer.json()["detail"]
        assert handle.http.get("/predictions/1").json()["dependency"] == "redis"
        assert handle.http.get("/models").status_code == 200  # Postgres is still there
        health = handle.http.get("/healthz")
        assert health.status_code == 503
        states = {k: v["ok"] for k, v in health.json()["dependencies"].items()}
        assert states == {"postgres": True, "redis": False, "kafka": True, "connect": True}
        summary = handle.http.get("/api/summary").json()
        assert set(summary["errors"]) == {"redis"} and summary["pipeline"] is None
        assert handle.http.get("/metrics").status_code == 200

    no_pg = api_ns.model_copy(
        update={
            "postgres_dsn": f"postgresql://freshloop@127.0.0.1:{unused_port}/freshloop",
            "postgres_password": SecretStr("never-shown-4242"),
        }
    )
    for handle in serve(no_pg, tokens_from=api_ns):
        for path in (
            "/models",
            "/drift/reports",
            "/drift/reports/1",
            "/retrains",
            "/features/customer/1",
            "/api/summary",
        ):
            answer = handle.http.get(path)
            assert answer.status_code == 503, path
            assert answer.json()["dependency"] == "postgres"
            assert str(unused_port) in answer.json()["detail"]
            assert "never-shown-4242" not in answer.text
        # Its tokens are in Postgres too: a token never checked cannot be trusted. Feature reads
        # with a token checked before Postgres went away: test_auth's outage test.


def test_a_feature_read_survives_redis_dropping_its_connections(api: ApiHandle) -> None:
    """Redis drops the API's connections (a restart, an idle timeout): the next feature reads,
    one key and a batch, are sent again on new connections and answer as before."""
    client = redis.Redis.from_url(api.settings.redis_conninfo("admin"))  # CLIENT KILL: admin
    try:
        for key in range(1, 21):
            client.hset(
                entity_key(api.settings.namespace, "customer", key),
                mapping={"payment_count_lifetime": key, "_commit_ms": 1, "_written_ms": 2},
            )
        body = {"keys": list(range(1, 21))}
        before = api.http.post("/features/customer/batch", json=body).json()
        one = api.http.get("/features/customer/7").json()
        assert [r["values"]["payment_count_lifetime"] for r in before["results"]] == list(
            range(1, 21)
        )
        mine = client.client_id()
        db = urlsplit(api.settings.redis_url).path.strip("/") or "0"
        theirs = [c["id"] for c in client.client_list() if c["db"] == db and c["id"] != mine]
        assert theirs  # the API's own connections, in its database
        for client_id in theirs:
            client.client_kill_filter(_id=client_id)
        again = api.http.post("/features/customer/batch", json=body)
        assert again.status_code == 200, again.text
        assert [r["values"] for r in again.json()["results"]] == [
            r["values"] for r in before["results"]
        ]
        # the single-key read too, on connections dropped afresh
        for client_id in [c["id"] for c in client.client_list() if c["db"] == db]:
            if client_id != mine:
                client.client_kill_filter(_id=client_id)
        single = api.http.get("/features/customer/7")
        assert single.status_code == 200, single.text
        assert single.json()["values"] == one["values"]
    finally:
        client.close()
